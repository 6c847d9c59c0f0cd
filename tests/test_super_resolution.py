"""Super-resolution (issue 12): the low-resolution degradation, bicubic baseline, VDSR and its SFT
grouping, the feature losses on VDSR features, and `demo-sr` end to end on real data."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from test_feature_losses import ref_ft, ref_nst, ref_pkt, _conv_params

from kdrecon.cli import main
from kdrecon.data.dataset import load_split, sample_directory
from kdrecon.data.prepare import PrepareOptions, prepare_dataset
from kdrecon.data.sources import sunnybrook
from kdrecon.distillation.layer_pairs import default_layer_pairs
from kdrecon.distillation.losses import build_feature_loss
from kdrecon.experiment.config import load_experiment
from kdrecon.experiment.runner import run_experiment
from kdrecon.models import build_model
from kdrecon.models.registry import count_parameters
from kdrecon.mri.resolution import bicubic_upsampling, low_pass_mask


def numpy_low_resolution(image: np.ndarray, kept: int) -> np.ndarray:
    """|ifft2(central kept×kept block of the centred spectrum, zero-padded)|, written out in NumPy."""
    size = image.shape[0]
    spectrum = np.fft.fftshift(np.fft.fft2(image, norm="ortho"))
    start = size // 2 - kept // 2
    block = np.zeros_like(spectrum)
    block[start : start + kept, start : start + kept] = spectrum[start : start + kept, start : start + kept]
    return np.abs(np.fft.ifft2(np.fft.ifftshift(block), norm="ortho"))


@pytest.fixture(scope="module")
def prepared(shared_dir, tmp_path_factory):
    """Two real Sunnybrook subjects at their original 256×256, one phase, prepared for 4x super-resolution."""
    files = [shared_dir / "data/sunnybrook/SCD0000101.npz", shared_dir / "data/sunnybrook/SCD0000201.npz"]
    volumes = [v for f in files for v in sunnybrook.read_volumes(f, phases=[0])]
    options = PrepareOptions(crop=None, validation_subjects=["SCD0000201"], task="super-resolution")
    return prepare_dataset(volumes, tmp_path_factory.mktemp("sr") / "data", options), volumes


def test_prepared_input_is_the_central_64x64_of_the_spectrum_on_real_256_slices(prepared):
    dataset, volumes = prepared
    manifest = json.loads((dataset / "dataset.json").read_text())
    assert manifest["task"] == "super-resolution" and manifest["mask"] == {"kind": "low-pass"} and manifest["crop"] is None
    data = load_split(dataset, "validation", "4x", task="super-resolution")
    assert data.image_shape == (256, 256) and data.task == "super-resolution"
    images = volumes[1].images.astype(np.float64)
    kept = [i for i in range(len(images)) if images[i].max() > 0]
    for position, index in enumerate(kept[:4]):
        target = images[index] / images[index].max()
        np.testing.assert_allclose(data.target[position, 0].numpy(), target, atol=1e-6)
        np.testing.assert_allclose(data.zero_filled[position, 0].numpy(), numpy_low_resolution(target, 64), atol=1e-5)
    assert data.mask.sum().item() == 64 * 64


def test_a_dataset_is_refused_for_another_task(prepared, tiny_dataset):
    dataset, _ = prepared
    with pytest.raises(ValueError, match="prepared for super-resolution, but the configuration's data.task is reconstruction"):
        load_split(dataset, "train", "4x")
    with pytest.raises(ValueError, match="prepared for reconstruction"):
        load_split(tiny_dataset, "train", "4x", task="super-resolution")
    with pytest.raises(ValueError, match="takes no mask"):
        PrepareOptions(mask="random", task="super-resolution")
    with pytest.raises(ValueError, match="must be a whole number of pixels"):
        low_pass_mask((150, 150), 4)
    with pytest.raises(ValueError, match="factor 1: the low-resolution image would be the target itself"):
        low_pass_mask((150, 150), 1)  # an identity task
    with pytest.raises(ValueError, match=r"factor 150 on 150-pixel images keeps only the mean intensity \(1 pixel\)"):
        low_pass_mask((150, 150), 150)  # a flat input
    with pytest.raises(ValueError, match=r"factor 512 on 256-pixel images keeps less than one pixel \(256/512\); "
                                         r"use a factor of at most 128$"):
        low_pass_mask((256, 256), 512)  # no crop would help
    assert low_pass_mask((150, 150), 75).sum() == 4  # 2×2 around DC: the coarsest input with any structure


def test_bicubic_passes_through_the_low_resolution_pixels_and_follows_a_smooth_image():
    size, factor = 64, 4
    rows = np.arange(size)[:, None] * np.ones(size)[None]
    smooth = 1 + 0.5 * np.cos(2 * np.pi * 2 * rows / size) + 0.25 * np.sin(2 * np.pi * 3 * rows.T / size)
    kspace = np.fft.fft2(smooth, norm="ortho") * low_pass_mask((size, size), factor)
    upsampled = bicubic_upsampling(kspace, factor)
    # At full-grid positions r·i the low-resolution pixel is the zero-padded image's (interpolation).
    np.testing.assert_allclose(upsampled[::factor, ::factor], numpy_low_resolution(smooth, size // factor)[::factor, ::factor], atol=1e-5)
    # Between them a cubic spline of a slow cosine is close to the cosine itself.
    assert np.abs(upsampled - smooth).max() < 0.02


def test_vdsr_parameter_counts():
    # 1→64 (640), (n−2) × 64→64 (36,928 each), 64→1 (577): the KD-MRI code's 11 and 7 layers and the paper's 12 and 4.
    assert count_parameters(build_model("VDSR11B4")) == 333_569
    assert count_parameters(build_model("VDSR7B4")) == 185_857
    assert count_parameters(build_model("VDSR12B4")) == 640 + 10 * 36_928 + 577
    assert count_parameters(build_model("VDSR4B4")) == 640 + 2 * 36_928 + 577
    assert [len(b.layers) for b in build_model("VDSR11B4").blocks] == [3, 3, 3, 2]


def test_sft_teacher_of_vdsr_runs_the_student_layers_after_each_teacher_block():
    torch.manual_seed(0)
    sft = build_model("sft-teacher", teacher="VDSR12B4", student="VDSR4B4", channels=8).double()
    teacher, student = sft.teacher, sft.student
    assert [len(b.layers) for b in teacher.blocks] == [3, 3, 3, 3] and [len(b.layers) for b in student.blocks] == [1] * 4
    calls = [0] * 4
    for index, block in enumerate(student.blocks):
        block.register_forward_hook(lambda m, i, o, index=index: calls.__setitem__(index, calls[index] + 1))
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    kspace, mask = torch.zeros(2, 16, 16, dtype=torch.complex128), torch.zeros(16, 16)
    output, branches = sft.forward_with_branches(x, kspace, mask)
    assert calls == [0, 1, 2, 3]  # S1 in no branch, S4 shared by all three
    assert not any(p.requires_grad for p in student.blocks[0].parameters())
    with torch.no_grad():
        torch.testing.assert_close(output, teacher(x, kspace, mask))
        for j, branch in enumerate(branches, start=1):  # branch j: teacher layers 1..3j, then student layers j+1..4
            features = x
            for block in teacher.blocks[:j]:
                features = block(features)
            for block in student.blocks[j:]:
                features = block(features)
            torch.testing.assert_close(branch, features + x)


@pytest.fixture(scope="module")
def vdsr_features(real_slices):
    """Default-pair features of a VDSR12B4 teacher and VDSR4B4 student (64 channels) on real 4x LR inputs."""
    image = real_slices[:4, 11:43, 11:43]
    kspace = np.fft.fft2(image, norm="ortho") * low_pass_mask((32, 32), 4)
    low_resolution = torch.from_numpy(np.abs(np.fft.ifft2(kspace, norm="ortho")))[:, None]
    torch.manual_seed(0)
    teacher, student = build_model("VDSR12B4").double(), build_model("VDSR4B4").double()
    pairs = default_layer_pairs("at", teacher, student)
    features = []
    for model, paths in zip((teacher, student), (pairs.teacher, pairs.student)):
        modules, taken = dict(model.named_modules()), {}
        for path in paths:
            modules[path].register_forward_hook(lambda m, i, o, path=path: taken.__setitem__(path, o.detach()))
        with torch.no_grad():
            model(low_resolution, torch.zeros(4, 32, 32, dtype=torch.complex128), torch.zeros(32, 32))
        features.append([taken[p] for p in paths])
    assert len(features[0]) == 3 and features[0][0].shape == features[1][0].shape == (4, 64, 32, 32)
    return features


@pytest.mark.parametrize("method", ["nst", "ft", "pkt"])
def test_sr_feature_losses_match_numpy_on_vdsr_features(vdsr_features, method):
    teacher, student = vdsr_features
    torch.manual_seed(3)
    loss = build_feature_loss(method, [64] * 3, [64] * 3).double()
    S, T = [f.numpy() for f in student], [f.numpy() for f in teacher]
    if method == "nst":
        expected = ref_nst(S, T)
    elif method == "pkt":
        expected = ref_pkt(S, T)
    else:
        expected = ref_ft(S, T, [_conv_params(t) for t in loss.translators], [_conv_params(p.encoder) for p in loss.paraphrasers])
    np.testing.assert_allclose(loss(student, teacher).item(), expected, rtol=1e-9)


def test_demo_sr_runs_end_to_end_with_the_table_9_layout(tmp_path, tiny_overrides, tiny_super_resolution_dataset):
    overrides = {**tiny_overrides, "name": "tiny-sr", "data.dataset": str(tiny_super_resolution_dataset),
                 "teacher": "VDSR6B3", "student": "VDSR3B3", "seeds": [1], "optimization.epochs": 1,
                 "epochs.distillation": 1}
    config = load_experiment("demo-sr", overrides)
    assert config.data.task == "super-resolution" and config.methods == ["at", "fitnets", "cc", "nst", "ft", "pkt"]
    run_experiment(config, tmp_path / "run", progress=False)
    report = (tmp_path / "run" / "report.md").read_text()
    assert ", 4x super-resolution, validation split" in report and "undersampling" not in report.split("\n\n")[1]
    table = report.split("papers' Table 9")[1].split("\n## ")[0]
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "method" not in line]
    assert rows == ["Teacher", "Student", "AT", "FitNets", "CC", "NST", "FT", "PKT"]
    # Table 9's numbers are of VDSR12B4 and VDSR4B4 at 64 channels, not of these networks.
    assert "30.02 / 0.8673" not in table and "the paper's networks are 64 channels wide, this experiment's 8." in report
    assert "| LR input |" in report and "| Cubic-spline upsampling |" in report
    summary = json.loads((tmp_path / "run/stages/seed-1/std-kd-ft/evaluation/summary.json").read_text())
    assert summary["task"] == "super-resolution" and {"model_metrics", "zero_filled_metrics", "bicubic_metrics"} <= set(summary)
    assert (tmp_path / "run/figures").is_dir() and any((tmp_path / "run/figures").glob("reconstruction-*.png"))
    output = io.StringIO()  # `kdrecon evaluate` names the baselines as the report does
    with contextlib.redirect_stdout(output):
        assert main(["evaluate", str(tmp_path / "run/stages/seed-1/student"), "--output", str(tmp_path / "evaluation")]) == 0
    labels = [line.split("  ")[0] for line in output.getvalue().splitlines()[2:4]]
    assert labels == ["LR input", "Cubic-spline upsampling"] and "zero" not in output.getvalue().lower()


def numpy_sinc_upsampling(small: np.ndarray, factor: int) -> np.ndarray:
    """A low-resolution image's centred spectrum zero-padded to ``factor``× its size, written out in NumPy
    (``factor`` per axis restores the orthonormal scale, so pixel ``i`` keeps its value at ``factor·i``)."""
    size = small.shape[-1]
    spectrum = np.fft.fftshift(np.fft.fft2(small, norm="ortho"))
    before = size * factor // 2 - size // 2
    padded = np.pad(spectrum, [(before, size * factor - size - before)] * 2)
    return np.fft.ifft2(np.fft.ifftshift(padded), norm="ortho") * factor


def test_a_genuine_low_resolution_image_gets_the_low_passed_kspace_of_training(real_slices):
    """The central 36×36 of a real 144×144 slice's spectrum, as its own image, embeds back into exactly that k-space."""
    from kdrecon.mri.resolution import embedded_kspace

    image = real_slices[0, :144, :144]
    spectrum = np.fft.fftshift(np.fft.fft2(image, norm="ortho"))
    block = spectrum[72 - 18 : 72 + 18, 72 - 18 : 72 + 18]
    small = np.fft.ifft2(np.fft.ifftshift(block), norm="ortho") * 36 / 144  # the orthonormal scale of 36 pixels
    low_passed = np.fft.fft2(image, norm="ortho") * low_pass_mask((144, 144), 4)
    np.testing.assert_allclose(embedded_kspace(small, 4), low_passed, atol=1e-6)
    np.testing.assert_allclose(np.fft.ifft2(low_passed, norm="ortho")[::4, ::4], small, atol=1e-7)  # pixel i at 4·i
    with pytest.raises(ValueError, match=r"a 37-pixel low-resolution image at super-resolution factor 2.5 has no whole"):
        embedded_kspace(np.ones((37, 37)), 2.5)


@pytest.fixture
def identity_vdsr(tmp_path):
    """A VDSR4B4 whose last convolution is zero: its output is its input, the low-resolution image on the full grid."""
    from kdrecon.deployment.package import NORMALISATION
    from kdrecon.mri.masks import describe_mask
    from kdrecon.models.weights import save_weights

    model = build_model("VDSR4B4", channels=8)
    with torch.no_grad():
        model.blocks[3].layers[0].weight.zero_()
        model.blocks[3].layers[0].bias.zero_()
    data = {"task": "super-resolution", "acceleration": "4x", "image_shape": [64, 64],
            "mask": describe_mask(low_pass_mask((64, 64), 4)), "normalisation": NORMALISATION}
    save_weights(tmp_path / "vdsr.safetensors", model, {"name": "VDSR4B4", "options": {"channels": 8}}, data)
    return tmp_path / "vdsr.safetensors"


def test_low_resolution_nifti_and_dicom_are_restored_at_four_times_their_size(tmp_path, real_slices, identity_vdsr, capsys):
    import nibabel as nib
    from pydicom import dcmread
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from kdrecon.cli import main

    small = (real_slices[:3, 50:98, 40:88] * 1000).astype(np.float32)  # three genuine 48×48 images
    expected = np.abs(np.stack([numpy_sinc_upsampling(image, 4) for image in small]))
    affine = np.array([[0, -2.5, 0, 90.0], [2.5, 0, 0, -80.0], [0, 0, 8.0, 12.5], [0, 0, 0, 1]])
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(np.moveaxis(small, 0, -1), affine), tmp_path / "in" / "lr.nii.gz")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "in" / "IM0"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = generate_uid(), generate_uid(), 3
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [10.0, -20.0, 8.0], [1.0, 0, 0, 0, 1.0, 0]
    ds.PixelSpacing, ds.SamplesPerPixel, ds.PhotometricInterpretation = [2.5, 3.0], 1, "MONOCHROME2"
    ds.Rows, ds.Columns = small[0].shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = small[0].round().astype(np.uint16).tobytes()
    ds.save_as(tmp_path / "in" / "IM0", enforce_file_format=True)

    assert main(["reconstruct", "--model", str(identity_vdsr), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out"), "--low-resolution-input"]) == 0
    assert "super-resolved 4x from the low-resolution image" in capsys.readouterr().out
    result = nib.load(tmp_path / "out" / "lr.nii.gz")
    assert result.shape == (192, 192, 3)
    np.testing.assert_allclose(np.moveaxis(result.get_fdata(), -1, 0), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(result.affine[:3, :2], affine[:3, :2] / 4, atol=1e-6)  # voxels 4× smaller in-plane
    np.testing.assert_allclose(result.affine[:, 2:], affine[:, 2:], atol=1e-5)  # voxel (0, 0, 0) where it was
    np.testing.assert_allclose(result.header.get_zooms(), (0.625, 0.625, 8.0), atol=1e-6)
    image = dcmread(tmp_path / "out" / "IM0")
    assert (image.Rows, image.Columns) == (192, 192) and [float(v) for v in image.PixelSpacing] == [0.625, 0.75]
    assert image.ImagePositionPatient == ds.ImagePositionPatient and "super-resolved 4x" in image.DerivationDescription
    stored = np.abs(numpy_sinc_upsampling(small[0].round(), 4))  # of the input's stored integers
    np.testing.assert_allclose(image.pixel_array, stored, atol=0.5 + 1e-3)  # rounded to integers


def test_sizes_the_factor_does_not_divide_get_advice_that_fits_the_command(tmp_path, real_slices, identity_vdsr):
    """Preparing can crop; reconstructing one's own images cannot, so its advice is to crop or pad them."""
    import nibabel as nib

    from kdrecon.deployment.reconstruct import reconstruct_files

    volumes = sunnybrook.read_volumes(sample_directory(), phases=[0])
    with pytest.raises(ValueError, match=r"factor 4 on 150-pixel images: the kept central block \(150/4\) must be a whole "
                                         r"number of pixels; choose a --crop that the factor divides$"):
        prepare_dataset(volumes, tmp_path / "data", PrepareOptions(crop=150, task="super-resolution"))
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(np.moveaxis(real_slices[:2, :150, :150], 0, -1).astype(np.float32), np.eye(4)),
             tmp_path / "in" / "odd.nii.gz")
    with pytest.raises(ValueError, match=r"odd.nii.gz.*\(150/4\) must be a whole number of pixels: this model super-resolves 4x; "
                                         r"crop or pad the images to a size that factor divides$"):
        reconstruct_files(identity_vdsr, tmp_path / "in", tmp_path / "out", progress=False)
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_low_resolution_input_is_refused_where_it_means_nothing(tmp_path, real_slices, identity_vdsr):
    from kdrecon.data import layout
    from kdrecon.deployment.reconstruct import reconstruct_files

    image = real_slices[:2, :64, :64].astype(np.float32)
    with pytest.raises(ValueError, match=r"^a low-resolution input needs a super-resolution model; this one was trained "
                                         r"for reconstruction"):
        reconstruct_files("sunnybrook-4x-student", tmp_path, tmp_path / "out", progress=False, low_resolution_input=True)
    kspace = np.fft.fft2(image, norm="ortho") * low_pass_mask((64, 64), 4)
    layout.write_volume(tmp_path / "h5" / "stored.h5", image, {"4x": (np.abs(np.fft.ifft2(kspace, norm="ortho")), kspace)})
    with pytest.raises(ValueError, match=r"stored.h5: 'kspace_volus_4x' is k-space on the full grid, not a low-resolution "
                                         r"image: reconstruct it without --low-resolution-input"):
        reconstruct_files(identity_vdsr, tmp_path / "h5", tmp_path / "out", progress=False, low_resolution_input=True)
    for mask_kind in ("equispaced", str(tmp_path / "nonexistent.npy")):  # a mask would be ignored: refused
        with pytest.raises(ValueError, match=r"--mask .*: a super-resolution model takes no mask"):
            reconstruct_files(identity_vdsr, tmp_path / "h5", tmp_path / "out", progress=False, mask_kind=mask_kind)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
