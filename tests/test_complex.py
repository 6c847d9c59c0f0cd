"""Complex (two-channel) mode on real phase-carrying k-space: maths, data, configuration, every
distillation path and evaluation on the magnitude."""

from __future__ import annotations

import csv
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from conftest import PHANTOM_CROP, PHANTOM_KSPACE, PHANTOM_OFFSETS
from kdrecon.data.dataset import load_split, read_manifest
from kdrecon.data.prepare import make_mask
from kdrecon.data.sources import fastmri, raw_kspace
from kdrecon.distillation.losses import FEATURE_LOSSES, METHOD_NAMES
from kdrecon.evaluation.evaluate import evaluate
from kdrecon.mri.channels import magnitude, to_channels, to_complex
from kdrecon.mri.undersample import data_consistency, undersample
from kdrecon.training.config import ConfigError, DistillConfig, TrainConfig, config_data, validate
from kdrecon.training.distill import distill_student
from kdrecon.training.supervised import train_model
from kdrecon.training.trainer import HISTORY

COMPLEX_DATA = {"acceleration": "4x", "image": "complex"}


def test_raw_kspace_reader_follows_the_fixture_readme(phantom_coil_images, shared_dir):
    volumes = list(raw_kspace.read_volumes(shared_dir / PHANTOM_KSPACE))
    assert [v.name for v in volumes] == ["gre_kspace-coil0", "gre_kspace-coil1"]
    # The README's recipe uses NumPy's default inverse FFT (1/N); ours is orthonormal (1/√N).
    orthonormal = np.sqrt(160 * 320)
    for volume, expected in zip(volumes, phantom_coil_images):
        assert volume.images.shape == (1, 160, 160) and volume.images.dtype == np.complex64
        np.testing.assert_allclose(volume.images[0], expected * orthonormal, rtol=0,
                                   atol=1e-5 * np.abs(expected).max() * orthonormal)


def test_prepare_kspace_help_states_its_own_defaults_and_super_resolution_needs_no_mask(shared_dir, tmp_path, capsys):
    from kdrecon.cli import main

    with pytest.raises(SystemExit):
        main(["prepare", "kspace", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default none; super-resolution: none)" in help_text and "(default equispaced; not for super-resolution)" in help_text
    assert main(["prepare", "kspace", str(shared_dir / PHANTOM_KSPACE), str(tmp_path / "sr"), "--task", "super-resolution"]) == 0
    assert json.loads((tmp_path / "sr" / "dataset.json").read_text())["task"] == "super-resolution"
    assert main(["prepare", "kspace", str(shared_dir / PHANTOM_KSPACE), str(tmp_path / "both"), "--validation-subjects",
                 "gre_kspace", "--validation-fraction", "0.5"]) == 2
    assert "--validation-fraction: the split is given by --validation-subjects" in capsys.readouterr().err


def test_raw_kspace_bad_input(tmp_path):
    np.save(tmp_path / "real.npy", np.ones((4, 8), np.float32))
    with pytest.raises(ValueError, match=r"real\.npy: k-space must be complex"):
        list(raw_kspace.read_volumes(tmp_path / "real.npy"))
    kspace = np.ones((4, 2, 8), np.complex64)
    kspace[1] = 0
    np.save(tmp_path / "gap.npy", kspace)
    with pytest.raises(ValueError, match=r"gap\.npy: k-space has all-zero lines"):
        list(raw_kspace.read_volumes(tmp_path / "gap.npy"))
    kspace[1, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", kspace)
    with pytest.raises(ValueError, match=r"nan\.npy: k-space contains NaN"):
        list(raw_kspace.read_volumes(tmp_path / "nan.npy"))


def test_channels_against_numpy():
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((3, 5, 7)) + 1j * rng.standard_normal((3, 5, 7))).astype(np.complex64)
    channels = to_channels(torch.from_numpy(z))
    assert channels.shape == (3, 2, 5, 7)
    np.testing.assert_array_equal(channels[:, 0].numpy(), z.real)
    np.testing.assert_array_equal(channels[:, 1].numpy(), z.imag)
    np.testing.assert_allclose(magnitude(channels).numpy(), np.abs(z), rtol=1e-6)
    assert torch.equal(to_complex(channels), torch.from_numpy(z))
    real = torch.tensor([[[[-1.0, 2.0]]]])
    assert torch.equal(magnitude(real), real[:, 0])  # a real network's output is scored as it is


def test_complex_data_consistency_keeps_the_acquired_samples(phantom_coil_images):
    mask = make_mask("equispaced", "4x", (160, 160))
    target = torch.from_numpy(phantom_coil_images.astype(np.complex64))  # the two coils as a batch
    kspace, _ = undersample(target, torch.from_numpy(mask))
    output = torch.randn(2, 2, 160, 160) * target.abs().max()
    result = data_consistency(output, kspace, torch.from_numpy(mask))
    assert result.shape == (2, 2, 160, 160) and result.dtype == torch.float32
    z = output[:, 0].double().numpy() + 1j * output[:, 1].double().numpy()
    merged = np.where(mask > 0, kspace.numpy(), np.fft.fft2(z, norm="ortho"))
    expected = np.fft.ifft2(merged, norm="ortho")
    scale = np.abs(expected).max()
    np.testing.assert_allclose(result[:, 0].numpy(), expected.real, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(result[:, 1].numpy(), expected.imag, rtol=0, atol=1e-5 * scale)
    sampled, acquired = mask > 0, kspace.numpy()
    resampled = np.fft.fft2(result[:, 0].double().numpy() + 1j * result[:, 1].double().numpy(), norm="ortho")
    assert np.abs(resampled[:, sampled] - acquired[:, sampled]).max() <= 1e-5 * np.abs(acquired).max()
    # The real-part step of the magnitude networks cannot keep them: the phantom has phase.
    real = np.fft.fft2(data_consistency(output[:, :1], kspace, torch.from_numpy(mask))[:, 0].double().numpy(), norm="ortho")
    assert np.abs(real[:, sampled] - acquired[:, sampled]).max() > 0.1 * np.abs(acquired).max()


def test_complex_dataset_keeps_phase_and_magnitude(complex_dataset, phantom_coil_images, tmp_path):
    assert read_manifest(complex_dataset)["image"] == "complex"
    data = load_split(complex_dataset, "validation", "4x", image="complex")
    assert data.target.shape == data.zero_filled.shape == (9, 2, PHANTOM_CROP, PHANTOM_CROP)
    crop = phantom_coil_images[1, PHANTOM_OFFSETS[0] : PHANTOM_OFFSETS[0] + PHANTOM_CROP,
                               PHANTOM_OFFSETS[0] : PHANTOM_OFFSETS[0] + PHANTOM_CROP]
    expected = crop / np.abs(crop).max()  # scaled to maximum magnitude 1, phase kept
    np.testing.assert_allclose(to_complex(data.target[:1])[0].numpy(), expected, rtol=0, atol=1e-5)
    zero_filled = np.fft.ifft2(data.kspace.numpy().astype(np.complex128), norm="ortho")
    np.testing.assert_allclose(to_complex(data.zero_filled).numpy(), zero_filled, rtol=0, atol=1e-5)
    with h5py.File(next((complex_dataset / "validation").glob("*.h5"))) as file:
        np.testing.assert_allclose(magnitude(data.target).numpy(), np.moveaxis(file["volfs"][()], -1, 0), atol=1e-6)
    with pytest.raises(ValueError, match="holds complex images, but the configuration's data.image is magnitude"):
        load_split(complex_dataset, "train", "4x")
    with pytest.raises(ValueError, match="holds magnitude images"):
        load_split("sample", "train", "4x", image="complex")
    edited = shutil.copytree(complex_dataset, tmp_path / "edited")
    file = next((edited / "train").glob("*.h5"))
    with h5py.File(file, "r+") as h5:
        h5["volfs"][...] *= 2
    with pytest.raises(ValueError, match=r"'volfs' is not the magnitude of 'volfs_complex'"):
        load_split(edited, "train", "4x", image="complex")


def test_fastmri_kspace_as_complex_images(tmp_path):
    rows, columns = np.mgrid[:160, :320]
    image = (np.hypot(rows - 80, columns - 160) < 60) * np.exp(1j * (rows / 30 + columns / 50))
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image[None]), norm="ortho"))
    with h5py.File(tmp_path / "file1.h5", "w") as file:
        file.create_dataset("kspace", data=kspace.astype(np.complex64))
        file.create_dataset("reconstruction_esc", data=np.abs(image[None, :, 80:240]).astype(np.float32))
    (volume,) = fastmri.read_volumes(tmp_path, image_source="kspace", complex_images=True)
    assert volume.is_complex
    np.testing.assert_allclose(volume.images[0], image[:, 80:240].T, rtol=0, atol=1e-5)  # phase encoding along rows
    with pytest.raises(ValueError, match="use --image-source kspace"):
        next(fastmri.read_volumes(tmp_path, complex_images=True))


def test_configuration_follows_the_data_image_kind():
    config = validate(TrainConfig, {"model": {"name": "U1C2"}, "data": COMPLEX_DATA})
    assert config.model.image_channels == 2 and config.model.options()["image_channels"] == 2
    student = validate(DistillConfig, {"teacher": "t", "data": COMPLEX_DATA}).student
    assert student.options()["image_channels"] == 2
    # Magnitude configs are written as before, so recorded runs keep their fingerprints.
    plain = config_data(validate(TrainConfig, {}))
    assert "image" not in plain["data"] and "image_channels" not in plain["model"]
    with pytest.raises(ConfigError, match=r"data.image: VDSR12B4 \(VDSR\) has no complex, two-channel form"):
        validate(TrainConfig, {"model": {"name": "VDSR12B4"}, "data": COMPLEX_DATA})
    with pytest.raises(ConfigError, match=r"model.image_channels: is 1, but data.image complex has 2"):
        validate(TrainConfig, {"model": {"name": "D3C5", "image_channels": 1}, "data": COMPLEX_DATA})


@pytest.fixture(scope="module")
def complex_teachers(complex_dataset, tmp_path_factory):
    """A tiny complex teacher and student-friendly teacher, trained on the phantom for 2 epochs."""
    root = tmp_path_factory.mktemp("complex-runs")
    common = {"data": {"dataset": str(complex_dataset), **COMPLEX_DATA}, "precision": "fp32",
              "optimization": {"epochs": 2, "batch_size": 3}}
    teacher = validate(TrainConfig, {**common, "model": {"name": "D4C3", "channels": 8}})
    train_model(teacher, root / "teacher", progress=False)
    sft = validate(TrainConfig, {**common, "model": {"name": "sft-teacher", "teacher": "D4C3", "student": "D3C3",
                                                     "channels": 8}})
    train_model(sft, root / "sft-teacher", progress=False)
    return root


def read_history(run) -> list[dict[str, float]]:
    with open(run / HISTORY, newline="") as handle:
        return [{name: float(value) for name, value in row.items()} for row in csv.DictReader(handle)]


@pytest.mark.parametrize("method", [*METHOD_NAMES, "imitation"])
def test_every_distillation_method_on_complex_images(method, complex_teachers):
    sft = method == "at"  # SFT-KD once, Std-KD for every method
    config = validate(DistillConfig, {
        "teacher": str(complex_teachers / ("sft-teacher" if sft else "teacher")), "method": method,
        "student": {"name": "D3C3", "channels": 8}, "procedure": "single-stage", "precision": "fp32",  # FSP: 2 hidden layers
        "optimization": {"epochs": 1, "batch_size": 3}, **({"init": "sft"} if sft else {}),
    })
    run = complex_teachers / f"student-{method}"
    result = distill_student(config, run, progress=False)
    assert np.isfinite(result.best_validation_loss)
    # Every term the method weighs was computed on the complex features and entered the objective:
    # the epoch's mean total is the weighted sum of the terms' means (the mean is linear).
    (epoch,) = read_history(run)
    weights = {"reconstruction": config.alpha, "imitation": 1 - config.alpha}
    if method != "imitation":
        weights["feature"] = FEATURE_LOSSES[method].default_weight
    assert {name for name in epoch if name.startswith("train_")} - {"train_total", "train_slices_per_second"} == {
        f"train_{name}" for name in weights}
    assert all(epoch[f"train_{name}"] > 0 for name in weights)
    assert epoch["train_total"] == pytest.approx(sum(w * epoch[f"train_{name}"] for name, w in weights.items()), rel=1e-5)
    evaluation = evaluate(run, complex_teachers / f"evaluation-{method}")
    psnr = evaluation.summary["model_metrics"]["psnr"]["mean"]
    assert evaluation.summary["image"] == "complex" and np.isfinite(psnr)


def test_complex_model_reconstructs_and_exports(complex_teachers, complex_dataset, tmp_path):
    from kdrecon.deployment.export import export_and_check
    from kdrecon.deployment.package import package_run
    from kdrecon.deployment.reconstruct import reconstruct_files
    from kdrecon.models.export import run_exported
    from kdrecon.models.weights import load_weights
    from kdrecon.training.checkpoint import load_model

    weights = tmp_path / "teacher.safetensors"
    package_run(complex_teachers / "teacher", weights)
    info = load_weights(weights)[1]
    assert info.model["options"]["image_channels"] == 2
    # the precision the run trained in travels with the weights, so reconstruct runs it as evaluate does
    assert info.provenance["precision"] == load_model(complex_teachers / "teacher")[1]["precision"]
    manifest = json.loads((complex_dataset / "dataset.json").read_text())  # and so do its training subjects
    assert info.provenance["training_subjects"] == {"source": manifest["source"],
                                                    "subjects": manifest["splits"]["train"]["subjects"]}
    evaluation = evaluate(complex_teachers / "teacher", tmp_path / "evaluation")
    validation = next((complex_dataset / "validation").glob("*.h5"))
    with h5py.File(evaluation.directory / "reconstructions" / validation.name) as file:
        expected = file["reconstruction"][()]
    # Papers' h5 with stored k-space: used as acquired, the same magnitude as evaluation's.
    (written,) = reconstruct_files(weights, validation, tmp_path / "out", progress=False).files
    with h5py.File(written) as file:
        np.testing.assert_allclose(file["reconstruction"][()], expected, rtol=0, atol=1e-5)
    # A fastMRI file of the same complex slice at another scale, in fastMRI's orientation (phase encoding
    # along the columns: the slice transposed): the image comes from its k-space, phase kept, reconstructed
    # in kdrecon's orientation, and the scale and the transposition are undone on the way out.
    data = load_split(complex_dataset, "validation", "4x", image="complex")
    image = np.swapaxes(to_complex(data.target[:1]).numpy(), -1, -2) * 3.0
    (tmp_path / "fastmri").mkdir()
    with h5py.File(tmp_path / "fastmri" / "file1.h5", "w") as file:
        shifted = np.fft.ifftshift(image, axes=(-2, -1))
        file.create_dataset("kspace", data=np.fft.fftshift(np.fft.fft2(shifted, norm="ortho"), axes=(-2, -1)).astype(np.complex64))
        file.create_dataset("reconstruction_esc", data=np.abs(image).astype(np.float32))
    (written,) = reconstruct_files(weights, tmp_path / "fastmri", tmp_path / "out-fastmri", progress=False).files
    with h5py.File(written) as file:
        np.testing.assert_allclose(file["reconstruction"][()], 3.0 * np.swapaxes(expected[:1], -1, -2), rtol=0, atol=1e-4)
    # Export with data consistency: ONNX Runtime agrees with PyTorch on the complex network.
    check = export_and_check(weights, tmp_path / "teacher.onnx", "onnx")
    assert check.max_abs_difference <= 1e-4 * check.max_reference
    inputs = (data.zero_filled[:2], data.kspace[:2].real.contiguous(), data.kspace[:2].imag.contiguous())
    exported = run_exported(tmp_path / "teacher.onnx", "onnx", inputs)
    assert exported.shape == (2, 2, PHANTOM_CROP, PHANTOM_CROP)
    np.testing.assert_allclose(np.hypot(exported[:, 0], exported[:, 1]), expected[:2], rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["lines", "box"])
def test_real_arithmetic_data_consistency_of_a_complex_image(phantom_coil_images, kind):
    from kdrecon.models.export import RealDataConsistency
    from kdrecon.mri.resolution import low_pass_mask

    mask = torch.from_numpy(make_mask("equispaced", "4x", (160, 160)) if kind == "lines" else low_pass_mask((160, 160), 2))
    image = torch.from_numpy(phantom_coil_images.astype(np.complex64))
    kspace, _ = undersample(image / image.abs().amax(), mask)
    network_output = to_channels(torch.rot90(image / image.abs().amax(), 1, (-2, -1)))  # far from consistent
    layer = RealDataConsistency(mask.numpy(), image_channels=2)
    ours = layer(network_output, layer.measured(kspace.real, kspace.imag))
    torch.testing.assert_close(ours, data_consistency(network_output, kspace, mask), atol=2e-6, rtol=0)
