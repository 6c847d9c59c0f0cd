"""Acquired (already undersampled) k-space in `kdrecon reconstruct` (issue 13): a fastMRI test-split
file and a scanner's raw `.npy` k-space, reconstructed with their own masks, checked against
fastMRI's and the scanner's transforms written out in NumPy."""

import h5py
import numpy as np
import pytest
import torch

from kdrecon.cli import main
from kdrecon.deployment.acquired import from_centred
from kdrecon.deployment.package import NORMALISATION
from kdrecon.mri.masks import describe_mask
from kdrecon.deployment.reconstruct import Reconstructor, reconstruct_files
from kdrecon.models import build_model
from kdrecon.models.weights import save_weights

AXES = (-2, -1)


def centred_fft(image):
    """fastMRI's ``fft2c``: the centred orthonormal FFT."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=AXES), norm="ortho"), axes=AXES)


def centred_ifft(kspace):
    """fastMRI's ``ifft2c``."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=AXES), norm="ortho"), axes=AXES)


def crop(images, height, width):
    top, left = (images.shape[-2] - height) // 2, (images.shape[-1] - width) // 2
    return images[..., top : top + height, left : left + width]


def line_mask(count, acceleration, centre):
    """fastMRI's equispaced mask: ``centre`` lines in the middle and every ``acceleration``-th line."""
    lines = np.zeros(count, bool)
    lines[::acceleration] = True
    lines[(count - centre) // 2 : (count + centre) // 2] = True
    return lines


def zero_filled_model(path, acceleration="4x", image="complex"):
    """A complex D3C5 whose last convolution is zero: its last cascade outputs the data consistency of
    a zero image, the zero-filled image, so what it reconstructs shows exactly what it was given."""
    torch.manual_seed(0)
    channels = 2 if image == "complex" else 1
    model = build_model("D3C5", channels=8, image_channels=channels)
    torch.nn.init.zeros_(model.blocks[-1].layers[-1].weight)
    torch.nn.init.zeros_(model.blocks[-1].layers[-1].bias)
    mask = np.ones((64, 64), np.float32)
    data = {"task": "reconstruction", "image": image, "acceleration": acceleration, "image_shape": [64, 64],
            "mask": describe_mask(mask), "normalisation": NORMALISATION}
    save_weights(path, model, {"name": "D3C5", "options": {"channels": 8, "image_channels": channels}}, data)
    return path


@pytest.fixture(scope="module")
def complex_slices(shared_dir):
    """Three real cardiac frames (256×256) with a smooth phase, as a coil would see them."""
    images = np.load(shared_dir / "data/sunnybrook/SCD0000201.npz")["images"][2:5, 0].astype(np.float64)
    y, x = np.mgrid[:256, :256] / 256
    return images * np.exp(1j * (1.5 * x - 0.8 * y + 0.3))[None]


def test_acquired_kspace_is_the_masked_uncentred_transform_of_the_readout_cropped_image(complex_slices):
    # A readout 2× oversampled (the object in the middle half of the field of view along H).
    image = np.pad(complex_slices, ((0, 0), (128, 128), (0, 0)))
    lines = line_mask(256, 4, 20)
    acquired = centred_fft(image) * lines
    slices = from_centred(acquired, lines, line_axis=-1, readout_size=256)
    expected = np.fft.fft2(complex_slices, norm="ortho") * np.fft.ifftshift(lines)[None, None, :]
    np.testing.assert_allclose(slices.kspace, expected, atol=1e-4 * np.abs(expected).max())
    assert np.array_equal(slices.mask, np.broadcast_to(np.fft.ifftshift(lines), (256, 256)))
    assert slices.sampled_fraction == lines.mean() and not slices.fully_sampled


def fastmri_test_file(path, image, lines, acceleration):
    """A fastMRI test-split single-coil file: undersampled centred ``kspace``, its ``mask``, no target."""
    with h5py.File(path, "w") as file:
        file.create_dataset("kspace", data=(centred_fft(image) * lines).astype(np.complex64))
        file.create_dataset("mask", data=lines.astype(np.float32))
        file.attrs.update({"acceleration": acceleration, "num_low_frequency": 20, "acquisition": "CORPD_FBK"})


def test_fastmri_test_split_is_reconstructed_as_acquired_and_cropped_as_fastmri(tmp_path, complex_slices, monkeypatch):
    image = np.pad(complex_slices, ((0, 0), (192, 192), (56, 56)))  # (3, 640, 368) as a fastMRI knee grid
    lines = line_mask(368, 4, 30)
    (tmp_path / "in").mkdir()
    fastmri_test_file(tmp_path / "in" / "file1000001.h5", image, lines, 4)
    model = zero_filled_model(tmp_path / "complex.safetensors")
    masks = []
    original_run = Reconstructor.run
    monkeypatch.setattr(Reconstructor, "run", lambda self, kspace, mask: masks.append(mask) or original_run(self, kspace, mask))
    reconstruct_files(model, tmp_path / "in", tmp_path / "out", progress=False)
    # The network sees fastMRI's phase-encoding lines as rows, as kdrecon's masks (and its training) sample.
    (mask,) = masks
    assert mask.shape == (368, 320) and (mask == mask[:, :1]).all() and mask[:, 0].sum() == lines.sum()
    with h5py.File(tmp_path / "out" / "file1000001.h5") as file:
        ours, attributes = file["reconstruction"][()], dict(file.attrs)
    # fastMRI's zero-filled baseline: ifft2c of the stored k-space, magnitude, 320×320 centre crop.
    expected = crop(np.abs(centred_ifft(centred_fft(image) * lines)), 320, 320)
    assert ours.shape == (3, 320, 320) and attributes["acquisition"] == "CORPD_FBK"
    np.testing.assert_allclose(ours, expected, atol=1e-4 * expected.max())


def test_raw_kspace_with_skipped_lines_is_reconstructed_per_coil_and_combined(tmp_path, shared_dir):
    kspace = np.load(shared_dir / "data/twix-gre-phantom/gre_kspace.npy")  # (160 lines, 2 coils, 320 readout)
    lines = line_mask(160, 4, 12)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "gre.npy", kspace * lines[:, None, None])
    model = zero_filled_model(tmp_path / "complex.safetensors")
    reconstruct_files(model, tmp_path / "in", tmp_path / "out", progress=False)
    ours = np.load(tmp_path / "out" / "gre.npy")
    coils = crop(centred_ifft(np.moveaxis(kspace * lines[:, None, None], 1, 0)), 160, 160)  # readout 2× oversampled
    expected = np.sqrt((np.abs(coils) ** 2).sum(axis=0))
    assert ours.shape == (160, 160) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-4 * expected.max())


def test_fully_sampled_raw_kspace_is_undersampled_like_an_image(tmp_path, shared_dir):
    np.save(tmp_path / "gre.npy", np.load(shared_dir / "data/twix-gre-phantom/gre_kspace.npy"))
    code = main(["reconstruct", "--model", "sunnybrook-4x-student", "--input", str(tmp_path / "gre.npy"),
                 "--output", str(tmp_path / "out"), "--mask", "equispaced"])
    ours = np.load(tmp_path / "out" / "gre.npy")
    assert code == 0 and ours.shape == (160, 160) and np.isfinite(ours).all()
    # The phantom, fully sampled and coil-combined, as the model's output should approach it.
    kspace = np.load(tmp_path / "gre.npy")
    full = np.sqrt((np.abs(crop(centred_ifft(np.moveaxis(kspace, 1, 0)), 160, 160)) ** 2).sum(axis=0))
    similarity = np.corrcoef(ours.ravel(), full.ravel())[0, 1]
    # Close to the phantom, yet not the fully sampled image itself: the lines were dropped first.
    assert similarity > 0.9 and np.abs(ours / ours.max() - full / full.max()).max() > 0.05


def refused(tmp_path, capsys, model, source, message):
    code = main(["reconstruct", "--model", str(model), "--input", str(source), "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and str(source.name) in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_acquired_kspace_that_no_model_or_mask_explains_is_refused(tmp_path, capsys, shared_dir, complex_slices):
    model = zero_filled_model(tmp_path / "complex.safetensors")
    kspace = np.load(shared_dir / "data/twix-gre-phantom/gre_kspace.npy")
    lines = line_mask(160, 4, 12)
    cases = tmp_path / "cases"
    cases.mkdir()
    empty = kspace * lines[:, None, None]
    empty[80, 1] = 0  # a sampled line missing in one coil
    np.save(cases / "empty-line.npy", empty)
    refused(tmp_path, capsys, model, cases / "empty-line.npy", "slice 1: sampled line 80 is all zeros")
    nan = kspace * lines[:, None, None]
    nan[4, 0, 7] = np.nan
    np.save(cases / "nan.npy", nan)
    refused(tmp_path, capsys, model, cases / "nan.npy", "NaN")
    np.save(cases / "eight.npy", kspace * line_mask(160, 8, 4)[:, None, None])
    # every 8th of 160 lines (20) and 4 central ones (78-81, 80 already counted): 160 / 23 lines
    refused(tmp_path, capsys, model, cases / "eight.npy", "acquired at 6.96x, the model is for 4x")
    np.save(cases / "gre.npy", kspace * lines[:, None, None])
    refused(tmp_path, capsys, zero_filled_model(tmp_path / "magnitude.safetensors", image="magnitude"), cases / "gre.npy",
            "use a complex model")
    image = np.pad(complex_slices, ((0, 0), (192, 192), (56, 56)))
    fastmri_lines = line_mask(368, 4, 30)
    fastmri_test_file(cases / "file1000002.h5", image, fastmri_lines, 8)
    refused(tmp_path, capsys, model, cases / "file1000002.h5", "acquired at 8x, the model is for 4x")
    fastmri_test_file(cases / "file1000004.h5", image, fastmri_lines, 5)  # stated 5x: 25 % off, yet not 4x
    refused(tmp_path, capsys, model, cases / "file1000004.h5", "acquired at 5x, the model is for 4x")
    with h5py.File(cases / "file1000003.h5", "w") as file:  # k-space on a line its mask skips
        file.create_dataset("kspace", data=centred_fft(image).astype(np.complex64) * line_mask(368, 2, 30))
        file.create_dataset("mask", data=fastmri_lines.astype(np.float32))
    refused(tmp_path, capsys, model, cases / "file1000003.h5", "samples on lines its mask marks as skipped")
