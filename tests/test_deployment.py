"""Deployment (issue 13): safetensors weights, shipped models and their cards, `kdrecon reconstruct`
round trips on real slices (NIfTI and papers' h5), the inputs it refuses, and export with data consistency."""

import contextlib
import csv
import io
import json
import pickle
import re
import shutil
import subprocess
import sys
import zipfile

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kdrecon.cli import main
from kdrecon.data import layout
from kdrecon.data.dataset import load_sample, sample_directory
from kdrecon.data.prepare import make_mask
from kdrecon.data import slicing
from kdrecon.data.sources import nifti, sunnybrook
from kdrecon.data.subjects import SplitSubjects
from kdrecon.deployment.export import BF16_TOLERANCE, export_and_check
from kdrecon.models.export import SUFFIXES, RealDataConsistency, load_ahead_of_time, run_exported
from kdrecon.deployment.package import NORMALISATION
from kdrecon.mri.masks import describe_mask, mask_from_description
from kdrecon.deployment.reconstruct import reconstruct_files, reconstruct_nifti
from kdrecon.models.shipped import model_card, shipped_models, shipped_weights
from kdrecon.evaluation.evaluate import data_differences, evaluate, reconstruct
from kdrecon.models import build_model, thin_kernels
from kdrecon.models.weights import load_weights, read_weights, save_weights
from kdrecon.mri.resolution import low_pass_mask
from kdrecon.mri.undersample import data_consistency, undersample
from kdrecon.training.fast_path import native_bf16

SHIPPED = [f"sunnybrook-{acceleration}-{role}" for acceleration in ("4x", "5x")
           for role in ("sft-kd-at", "std-kd-at", "student", "teacher")]


def psnr(target, prediction):
    """fastMRI's PSNR of one volume, written out: data range = the volume's maximum."""
    return 10 * np.log10(target.max() ** 2 / np.mean((target - prediction) ** 2))


@pytest.fixture(scope="module")
def validation_volume():
    """The embedded sample's validation subject, phase of its first volume, as stored (uint16 scale)."""
    return next(sunnybrook.read_volumes(sample_directory() / "SCD0000401.npz")).images


def test_the_models_of_both_accelerations_are_shipped_with_cards():
    assert shipped_models() == SHIPPED
    for name in SHIPPED:
        card = model_card(name).read_text()
        assert "CC0" in card and "seed" in card and f"--model {name}" in card


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_reproduces_the_psnr_its_card_states(name):
    model, info = load_weights(shipped_weights(name))
    acceleration = name.split("-")[1]
    assert info.data["acceleration"] == acceleration
    data = load_sample("validation", acceleration)
    prediction, target = reconstruct(model, data, torch.device("cpu")), data.target[:, 0].numpy()
    ours = np.mean([psnr(target[v.start : v.stop], prediction[v.start : v.stop]) for v in data.volumes])
    stated = info.provenance["sample_validation_psnr"]
    assert abs(ours - stated) < 0.01
    assert f"{stated:.4f} dB" in model_card(name).read_text()
    assert np.array_equal(mask_from_description(info.data["mask"]), make_mask("papers", acceleration, (150, 150)))


def test_a_shipped_model_is_evaluated_by_name_with_its_cards_psnr(tmp_path, capsys):
    name = "sunnybrook-4x-sft-kd-at"
    assert main(["evaluate", name, "--dataset", "sample", "--output", str(tmp_path / "scores")]) == 0
    assert f"note: {name} was trained on datasets/sunnybrook-4x, evaluated on sample" in capsys.readouterr().out
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    stated = load_weights(shipped_weights(name))[1].provenance["sample_validation_psnr"]
    assert summary["checkpoint"] == str(shipped_weights(name).resolve()) and summary["model"]["name"] == "D3C5"
    assert abs(summary["model_metrics"]["psnr"]["mean"] - stated) < 0.01 and summary["trained_on"]["same_mask"]
    # its PSNR per volume, as fastMRI defines it, from the reconstructions evaluate wrote
    data = load_sample("validation", "4x")
    with open(tmp_path / "scores" / "per_volume.csv", newline="") as table:
        stated_per_volume = {row["volume"]: float(row["psnr"]) for row in csv.DictReader(table)
                             if row["reconstruction"] == "model"}
    for volume in data.volumes:
        with h5py.File(tmp_path / "scores" / "reconstructions" / f"{volume.name}.h5") as stored:
            prediction = stored["reconstruction"][()]
        target = data.target[volume.start : volume.stop, 0].numpy()
        assert stated_per_volume[volume.name] == pytest.approx(psnr(target, prediction), abs=1e-4)


def test_a_weights_file_scored_under_another_mask_of_its_acceleration_says_so(tmp_path):
    """Its dataset path cannot tell (a weights file's is another machine's); the mask it records can."""
    recipe = load_sample("validation", "4x", mask_kind="recipe", mask_seed=3)
    assert not np.array_equal(recipe.mask.numpy(), make_mask("papers", "4x", (150, 150)))
    summary = evaluate("sunnybrook-4x-student", tmp_path / "scores", dataset="sample", data=recipe).summary
    assert summary["trained_on"]["same_mask"] is False
    assert "trained with another 4x sampling mask than the evaluated data's" in data_differences(summary)


def test_a_weights_file_scored_on_images_of_another_size_names_both_sizes(tmp_path, tiny_dataset):
    summary = evaluate("sunnybrook-4x-student", tmp_path / "scores", dataset=tiny_dataset).summary
    assert summary["trained_on"]["same_mask"] is False
    assert ("trained with a 150×150 4x sampling mask, evaluated on 48×48 images under their own mask"
            in data_differences(summary))


def test_a_shipped_model_is_not_scored_on_the_subjects_it_was_trained_on(tmp_path, capsys):
    """Its weights file names its Sunnybrook training subjects; SCD numbers are the same patients in
    any copy of the data, here the embedded sample prepared with SCD0000101 held out."""
    assert SplitSubjects.from_record(read_weights(shipped_weights("sunnybrook-4x-student"))[1]
                                     .provenance["training_subjects"]).subjects == ("SCD0000101", "SCD0000201", "SCD0000301")
    dataset = tmp_path / "again"
    assert main(["prepare", "sunnybrook", str(sample_directory()), str(dataset), "--phases", "0",
                 "--validation-subjects", "SCD0000101"]) == 0
    capsys.readouterr()
    output = tmp_path / "scores"
    assert main(["evaluate", "sunnybrook-4x-student", "--dataset", str(dataset), "--output", str(output)]) == 2
    assert (f"{dataset}: its validation split holds SCD0000101, on which sunnybrook-4x-student was trained (its weights "
            "file names its sunnybrook training subjects); evaluate on subjects it has not seen") in capsys.readouterr().err
    assert not output.exists()


def test_weights_files_are_evaluated_only_into_a_named_output_on_named_data(tmp_path):
    name, other = "sunnybrook-4x-student", "sunnybrook-4x-teacher"
    for arguments, problem in (([name, "--output", str(tmp_path / "a")], "name the dataset to evaluate on (--dataset"),
                               ([name, "--dataset", "sample"], "give --output"),
                               ([name, "--dataset", "sample", "--output", str(tmp_path / "a"), "--which", "last"],
                                "holds one network")):
        error = io.StringIO()
        with contextlib.redirect_stderr(error):
            assert main(["evaluate", *arguments]) != 0
        assert problem in error.getvalue()
    assert not (tmp_path / "a").exists()
    assert main(["evaluate", name, "--dataset", "sample", "--output", str(tmp_path / "a")]) == 0
    error = io.StringIO()
    with contextlib.redirect_stderr(error):  # another shipped model's evaluation is not replaced by this one's
        assert main(["evaluate", other, "--dataset", "sample", "--output", str(tmp_path / "a")]) != 0
    assert f"not of {shipped_weights(other)}" in error.getvalue()


def test_nifti_round_trip_keeps_geometry_and_reconstructs_in_the_input_scale(tmp_path, validation_volume, capsys):
    affine = np.array([[0, -1.37, 0, 90.0], [1.37, 0, 0, -80.0], [0, 0, 8.0, 12.5], [0, 0, 0, 1]])
    stored = np.moveaxis(validation_volume, 0, -1)  # (150, 150, S), the scanner's intensities
    source = nib.Nifti1Image(stored, affine)
    source.header["descrip"] = b"kdrecon test"
    nib.save(source, tmp_path / "volume.nii.gz")
    code = main(["reconstruct", "--model", "sunnybrook-4x-sft-kd-at", "--input", str(tmp_path / "volume.nii.gz"),
                 "--output", str(tmp_path / "out")])
    assert code == 0
    # the shipped models were trained in float32, and say so
    assert f"1 reconstruction(s) written to {tmp_path / 'out'} (fp32)" in capsys.readouterr().out
    result = nib.load(tmp_path / "out" / "volume.nii.gz")
    np.testing.assert_allclose(result.affine, affine, atol=1e-5)  # the header stores float32
    assert result.shape == stored.shape and result.header["descrip"] == b"kdrecon test"
    mask = torch.from_numpy(make_mask("papers", "4x", (150, 150)))
    output = result.get_fdata()
    for index in range(3, 6):  # each slice beats its own zero-filled input, in the input's scale
        target = stored[..., index]
        zero_filled = undersample(torch.from_numpy(target / target.max()), mask)[1].numpy() * target.max()
        assert psnr(target, output[..., index]) > psnr(target, zero_filled) + 3


def test_a_4d_cine_nifti_is_reconstructed_frame_by_frame_like_its_3d_volumes(tmp_path, validation_volume):
    frames = [np.moveaxis(validation_volume, 0, -1) * factor for factor in (1.0, 0.6)]  # two frames, other scales
    cine = np.stack(frames, axis=-1)  # (150, 150, S, 2)
    (tmp_path / "in").mkdir()
    (tmp_path / "frames").mkdir()
    nib.save(nib.Nifti1Image(cine, np.eye(4)), tmp_path / "in" / "cine.nii")
    for index, frame in enumerate(frames):
        nib.save(nib.Nifti1Image(frame, np.eye(4)), tmp_path / "frames" / f"frame{index}.nii")
    reconstruct_files("sunnybrook-4x-student", tmp_path / "in", tmp_path / "out", progress=False)
    reconstruct_files("sunnybrook-4x-student", tmp_path / "frames", tmp_path / "out-frames", progress=False)
    together = nib.load(tmp_path / "out" / "cine.nii").get_fdata()
    assert together.shape == cine.shape
    for index in range(2):
        alone = nib.load(tmp_path / "out-frames" / f"frame{index}.nii").get_fdata()
        np.testing.assert_allclose(together[..., index], alone, rtol=1e-5, atol=1e-3)


def test_a_nifti_sliced_along_another_axis_is_reconstructed_along_it(tmp_path, validation_volume, capsys):
    """The same slices stored as (S, H, W), as `prepare nifti --slice-axis 0` reads them: reconstructed
    along axis 0 they equal the (H, W, S) file's reconstruction, moved back to where they were stored."""
    (tmp_path / "z").mkdir()
    (tmp_path / "x").mkdir()
    affine = np.diag([8.0, 1.37, 1.37, 1.0])
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume, 0, -1), np.eye(4)), tmp_path / "z" / "volume.nii")
    nib.save(nib.Nifti1Image(validation_volume, affine), tmp_path / "x" / "volume.nii")
    reconstruct_files("sunnybrook-4x-student", tmp_path / "z", tmp_path / "out-z", progress=False)
    assert main(["reconstruct", "--model", "sunnybrook-4x-student", "--input", str(tmp_path / "x"),
                 "--output", str(tmp_path / "out-x"), "--slice-axis", "0"]) == 0
    along_z = nib.load(tmp_path / "out-z" / "volume.nii").get_fdata()
    along_x = nib.load(tmp_path / "out-x" / "volume.nii")
    assert along_x.shape == validation_volume.shape
    np.testing.assert_allclose(along_x.affine, affine)
    np.testing.assert_allclose(along_x.get_fdata(), np.moveaxis(along_z, -1, 0), rtol=1e-5, atol=1e-3)
    capsys.readouterr()
    assert main(["reconstruct", "--model", "sunnybrook-4x-student", "--input", str(tmp_path / "x"),
                 "--output", str(tmp_path / "bad"), "--slice-axis", "3"]) == 2
    assert "slice axis 3: must be a spatial axis in -3..2" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_model_trained_on_nifti_slices_along_x_reconstructs_new_volumes_along_x(tmp_path, validation_volume):
    """`prepare nifti --slice-axis 0` records the axis; the trained network's description carries it, and
    `reconstruct` slices a new NIfTI volume along it without being told."""
    source = tmp_path / "source"
    source.mkdir()
    for subject in ("sub-01", "sub-02"):  # stored (S, H, W): slices along X
        nib.save(nib.Nifti1Image(validation_volume.astype(np.float32), np.eye(4)), source / f"{subject}_cine.nii")
    dataset = tmp_path / "dataset"
    assert main(["prepare", "nifti", str(source), str(dataset), "--slice-axis", "0", "--crop", "0",
                 "--validation-subjects", "sub-02"]) == 0
    assert json.loads((dataset / "dataset.json").read_text())[slicing.SLICE_AXIS_KEY] == 0
    config = tmp_path / "student.yaml"
    config.write_text(f"data:\n  dataset: {dataset}\nmodel:\n  name: D2C2\n  channels: 8\n"
                      "optimization:\n  epochs: 1\n  batch_size: 8\n")
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(source / "sub-02_cine.nii", new / "volume.nii")
    assert main(["reconstruct", "--model", str(run_dir), "--input", str(new), "--output", str(tmp_path / "default")]) == 0
    assert main(["reconstruct", "--model", str(run_dir), "--input", str(new), "--output", str(tmp_path / "told"),
                 "--slice-axis", "0"]) == 0
    np.testing.assert_array_equal(nib.load(tmp_path / "default" / "volume.nii").get_fdata(),
                                  nib.load(tmp_path / "told" / "volume.nii").get_fdata())


def test_the_command_line_warns_on_one_line_when_told_another_axis_than_the_models(tmp_path, validation_volume):
    network, info = load_weights(shipped_weights("sunnybrook-4x-student"))
    along_x = tmp_path / "along-x.safetensors"
    save_weights(along_x, network, info.model, {**info.data, slicing.SLICE_AXIS_KEY: 0}, info.provenance)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume, 0, -1).astype(np.float32), np.eye(4)), tmp_path / "in" / "v.nii")
    process = subprocess.run([sys.executable, "-m", "kdrecon", "reconstruct", "--model", str(along_x), "--input",
                              str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--slice-axis", "2"],
                             capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    assert process.stderr.strip() == (f"kdrecon: warning: --slice-axis 2: {along_x} was trained on NIfTI slices along "
                                      "axis 0; slicing along the one given")


def test_a_slice_axis_other_than_the_models_is_used_with_a_warning(tmp_path):
    from kdrecon.deployment.reconstruct import _nifti_slice_axis
    from kdrecon.models.weights import WeightsInfo

    along_x = WeightsInfo(tmp_path / "model.safetensors", {}, {slicing.SLICE_AXIS_KEY: 0})
    assert _nifti_slice_axis(None, along_x, has_nifti=True) == 0
    assert _nifti_slice_axis(None, WeightsInfo(tmp_path / "old.safetensors", {}, {}), has_nifti=True) == nifti.SLICE_AXIS
    with pytest.warns(UserWarning, match="--slice-axis -1: .*model.safetensors was trained on NIfTI slices along axis 0"):
        assert _nifti_slice_axis(-1, along_x, has_nifti=True) == -1
    assert _nifti_slice_axis(-3, along_x, has_nifti=True) == -3  # axis 0 counted from the end: no warning
    with pytest.raises(ValueError, match="bad.safetensors: nifti_slice_axis True is not a spatial axis 0, 1 or 2"):
        _nifti_slice_axis(None, WeightsInfo(tmp_path / "bad.safetensors", {}, {slicing.SLICE_AXIS_KEY: True}), True)


class _Doubling:
    """A stand-in super-resolving reconstructor: each pixel repeated 2×2."""

    def images(self, slices):
        return np.repeat(np.repeat(slices, 2, axis=1), 2, axis=2)


def test_a_4d_nifti_super_resolved_along_its_first_axis_keeps_that_axis_and_halves_the_others_voxels(tmp_path):
    data = np.arange(6 * 8 * 10 * 2, dtype=np.float32).reshape(6, 8, 10, 2)  # (X, Y, Z, T), slices along X
    affine = np.array([[3.0, 0, 0, -9], [0, 1.5, 0.5, 4], [0, 0.25, 2.0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "cine.nii")
    reconstruct_nifti(_Doubling(), tmp_path / "cine.nii", tmp_path / "out.nii", slice_axis=-3)  # X
    result = nib.load(tmp_path / "out.nii")
    expected = np.repeat(np.repeat(data, 2, axis=1), 2, axis=2)  # Y and Z each pixel twice, X and T as stored
    np.testing.assert_array_equal(result.get_fdata(), expected)
    expected_affine = affine.copy()
    expected_affine[:3, 1:3] /= 2  # the in-plane voxels (Y, Z) half as large; X's column and the origin unchanged
    np.testing.assert_allclose(result.affine, expected_affine, atol=1e-6)


def test_a_slice_axis_for_inputs_without_nifti_is_refused(tmp_path, capsys):
    volume = tmp_path / "slices.h5"
    layout.write_volume(volume, load_sample("validation").target[:2, 0].numpy(), {})
    assert main(["reconstruct", "--model", "sunnybrook-4x-student", "--input", str(volume), "--output",
                 str(tmp_path / "out"), "--slice-axis", "0"]) == 2
    assert f"--slice-axis 0: applies to NIfTI volumes, and {volume} holds none" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_reconstruct_runs_a_float32_model_in_float32_unless_bf16_is_asked_for(tmp_path, validation_volume):
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume, 0, -1), np.eye(4)), tmp_path / "volume.nii")
    outputs = {}
    for precision in ("as-trained", "fp32", "bf16"):
        assert main(["reconstruct", "--model", "sunnybrook-4x-student", "--input", str(tmp_path / "volume.nii"),
                     "--output", str(tmp_path / precision), "--precision", precision]) == 0
        outputs[precision] = nib.load(tmp_path / precision / "volume.nii").get_fdata()
    # the shipped models were trained in float32 (their weights files record no bf16): as trained is float32
    np.testing.assert_array_equal(outputs["as-trained"], outputs["fp32"])
    target = np.moveaxis(validation_volume, 0, -1)
    assert not np.array_equal(outputs["bf16"], outputs["fp32"])
    # bf16 rounding costs far less than the spread between seeds (about 0.15 dB)
    assert abs(psnr(target, outputs["bf16"]) - psnr(target, outputs["fp32"])) < 0.05


def test_reconstruct_runs_a_weights_file_as_it_records_it_was_trained(tmp_path, validation_volume, monkeypatch):
    from kdrecon.training import fast_path

    monkeypatch.setattr(fast_path, "cpu_training_path", lambda: fast_path.CpuTrainingPath("bf16", True, {}))
    model, info = load_weights(shipped_weights("sunnybrook-4x-student"))
    save_weights(tmp_path / "bf16.safetensors", model, info.model, info.data, {**info.provenance, "precision": "bf16"})
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume[:2], 0, -1), np.eye(4)), tmp_path / "volume.nii")
    outputs = {}
    for label, model_path, precision in (("default", tmp_path / "bf16.safetensors", "as-trained"),
                                         ("bf16", tmp_path / "bf16.safetensors", "bf16"),
                                         ("fp32", tmp_path / "bf16.safetensors", "fp32")):
        ran = reconstruct_files(model_path, tmp_path / "volume.nii", tmp_path / label, progress=False, precision=precision)
        assert ran.precision == ("bf16" if label == "default" else label)
        outputs[label] = nib.load(tmp_path / label / "volume.nii").get_fdata()
    np.testing.assert_array_equal(outputs["default"], outputs["bf16"])
    assert not np.array_equal(outputs["default"], outputs["fp32"])


def test_papers_h5_kspace_is_reconstructed_as_acquired(tmp_path):
    data = load_sample("validation", "4x")
    first = data.volumes[0]
    target, zero_filled, kspace = (t[first.start : first.stop] for t in (data.target[:, 0], data.zero_filled[:, 0], data.kspace))
    layout.write_volume(tmp_path / "in" / f"{first.name}.h5", target.numpy(), {"4x": (zero_filled.numpy(), kspace.numpy())})
    reconstruct_files("sunnybrook-4x-teacher", tmp_path / "in", tmp_path / "out", progress=False)
    with h5py.File(tmp_path / "out" / f"{first.name}.h5") as file:
        ours = file["reconstruction"][()]
    model, _ = load_weights(shipped_weights("sunnybrook-4x-teacher"))
    expected = reconstruct(model, data, torch.device("cpu"))[first.start : first.stop]
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_papers_h5_kspace_is_reconstructed_in_its_own_scale_and_refused_with_phase(tmp_path):
    data = load_sample("validation", "4x")
    first = data.volumes[0]
    target, kspace = data.target[first.start : first.stop, 0].numpy(), data.kspace[first.start : first.stop].numpy()
    mask = data.mask.numpy()
    for name, factor in (("scale-1.h5", 1.0), ("scale-1000.h5", 1000.0)):
        layout.write_volume(tmp_path / "in" / name, target * factor,
                            {"4x": (np.abs(np.fft.ifft2(kspace * factor, norm="ortho")), kspace * factor)})
    reconstruct_files("sunnybrook-4x-student", tmp_path / "in", tmp_path / "out", progress=False)
    with h5py.File(tmp_path / "out" / "scale-1.h5") as one, h5py.File(tmp_path / "out" / "scale-1000.h5") as thousand:
        np.testing.assert_allclose(thousand["reconstruction"][()], 1000 * one["reconstruction"][()], rtol=1e-4, atol=1e-3)
    # The same anatomy with a phase ramp: a magnitude model's data consistency would discard the phase.
    ramp = np.exp(1j * np.linspace(0, 3, target.shape[-1]))[None, None, :]
    with_phase = np.fft.fft2(target * ramp, norm="ortho") * mask
    with h5py.File(tmp_path / "phase.h5", "w") as file:
        file.create_dataset("kspace_volus_4x", data=np.moveaxis(with_phase, 0, -1).astype(np.complex64))
    with pytest.raises(ValueError, match=r"phase.h5: the k-space has phase .* use a complex model"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "phase.h5", tmp_path / "out-phase", progress=False)
    assert not (tmp_path / "out-phase").exists() or not any((tmp_path / "out-phase").iterdir())


def test_a_blank_slice_of_a_volume_stays_blank(tmp_path, validation_volume):
    stored = np.moveaxis(validation_volume, 0, -1).astype(np.float32)
    stored[..., 1] = 0  # padding, as some volumes carry
    nib.save(nib.Nifti1Image(stored, np.eye(4)), tmp_path / "padded.nii.gz")
    reconstruct_files("sunnybrook-4x-student", tmp_path / "padded.nii.gz", tmp_path / "out", progress=False)
    result = np.asarray(nib.load(tmp_path / "out" / "padded.nii.gz").dataobj)
    assert (result[..., 1] == 0).all() and (result[..., 0] > 0).any()
    # The same in stored k-space (papers' h5 registered as it is, padding kept): not a missing measurement.
    data = load_sample("validation", "4x")
    first = data.volumes[0]
    target, kspace = data.target[first.start : first.stop, 0].numpy().copy(), data.kspace[first.start : first.stop].numpy().copy()
    target[1], kspace[1] = 0, 0
    layout.write_volume(tmp_path / "h5" / "padded.h5", target, {"4x": (np.abs(np.fft.ifft2(kspace, norm="ortho")), kspace)})
    reconstruct_files("sunnybrook-4x-student", tmp_path / "h5", tmp_path / "out-h5", progress=False)
    with h5py.File(tmp_path / "out-h5" / "padded.h5") as file:
        result = file["reconstruction"][()]
    assert (result[1] == 0).all() and (result[0] > 0).any()


class _RunsCodeWhenLoaded:
    """Unpickling it would create ``marker`` (a harmless stand-in for any code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    torch.save({"format": "kdrecon-checkpoint", "modules": _RunsCodeWhenLoaded(marker)}, tmp_path / "evil.pt")
    assert main(["reconstruct", "--model", str(tmp_path / "evil.pt"), "--input", str(sample_directory()),
                 "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "evil.pt: holds pickled objects other than tensors and plain data" in error
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_refused_inputs_name_the_problem_and_write_nothing(tmp_path, validation_volume):
    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps({"weights": torch.zeros(3)}))
    with pytest.raises(ValueError, match="not a safetensors weights file"):
        load_weights(pickled)
    tensors = load_file(shipped_weights("sunnybrook-4x-student"))
    _, info = read_weights(shipped_weights("sunnybrook-4x-student"))
    tensors.pop("blocks.2.layers.0.conv.weight")
    with safe_open(str(shipped_weights("sunnybrook-4x-student")), "pt") as handle:
        save_file(tensors, tmp_path / "partial.safetensors", metadata=handle.metadata())
    with pytest.raises(ValueError, match="blocks.2.layers.0.conv.weight is missing"):
        load_weights(tmp_path / "partial.safetensors")
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume[:, :128, :128], 0, -1), np.eye(4)), tmp_path / "small.nii")
    with pytest.raises(ValueError, match="give --mask"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "small.nii", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.nii*"))
    reconstruct_files("sunnybrook-4x-student", tmp_path / "small.nii", tmp_path / "out", mask_kind="recipe", progress=False)
    assert nib.load(tmp_path / "out" / "small.nii").shape == (128, 128, validation_volume.shape[0])
    data = load_sample("validation", "4x")
    wrong = torch.fft.fft2(data.target[:5, 0], norm="ortho").numpy()  # fully sampled: energy outside the mask
    layout.write_volume(tmp_path / "h5" / "wrong.h5", data.target[:5, 0].numpy(), {"4x": (data.zero_filled[:5, 0].numpy(), wrong)})
    with pytest.raises(ValueError, match="energy outside the model's 4x mask"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "h5", tmp_path / "out-h5", progress=False)
    assert not (tmp_path / "out-h5" / "wrong.h5").exists()
    assert info.model["name"] == "D3C5" and describe_mask(mask_from_description(info.data["mask"])) == info.data["mask"]


def test_inputs_that_would_give_meaningless_output_or_lose_a_file_are_refused(tmp_path, validation_volume):
    volume = tmp_path / "in" / "volume.nii"
    volume.parent.mkdir()
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume, 0, -1), np.eye(4)), volume)
    before = volume.read_bytes()
    # Writing into the input's own folder would replace the input with its reconstruction.
    with pytest.raises(ValueError, match="would replace an input file"):
        reconstruct_files("sunnybrook-4x-student", volume, volume.parent, progress=False)
    assert volume.read_bytes() == before
    # A truncated download: named, not an internal error.
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume, 0, -1), np.eye(4)), tmp_path / "whole.nii.gz")
    truncated = tmp_path / "truncated" / "volume.nii.gz"
    truncated.parent.mkdir()
    truncated.write_bytes((tmp_path / "whole.nii.gz").read_bytes()[: (tmp_path / "whole.nii.gz").stat().st_size // 2])
    with pytest.raises(ValueError, match=f"^{truncated}: cannot read NIfTI data"):
        reconstruct_files("sunnybrook-4x-student", truncated, tmp_path / "out", progress=False)
    # A diverged run's weights: refused on loading, not reconstructed as a volume of NaNs.
    tensors = load_file(shipped_weights("sunnybrook-4x-student"))
    tensors["blocks.1.layers.0.conv.bias"][3] = float("nan")
    with safe_open(str(shipped_weights("sunnybrook-4x-student")), "pt") as handle:
        save_file(tensors, tmp_path / "diverged.safetensors", metadata=handle.metadata())
    with pytest.raises(ValueError, match="blocks.1.layers.0.conv.bias has NaN or infinite values"):
        reconstruct_files(tmp_path / "diverged.safetensors", volume, tmp_path / "out", progress=False)
    # An empty image, and k-space whose sampled lines are missing, hold nothing to reconstruct.
    nib.save(nib.Nifti1Image(np.zeros((150, 150, 2), np.float32), np.eye(4)), tmp_path / "in" / "empty.nii")
    with pytest.raises(ValueError, match="empty.nii: the images are all zeros"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "in" / "empty.nii", tmp_path / "out", progress=False)
    data = load_sample("validation", "4x")
    kspace = data.kspace[:3].numpy().copy()
    sampled_row = int(np.flatnonzero(data.mask.numpy().all(axis=1))[1])
    kspace[2, sampled_row] = 0
    layout.write_volume(tmp_path / "h5" / "gap.h5", data.target[:3, 0].numpy(), {"4x": (data.zero_filled[:3, 0].numpy(), kspace)})
    with pytest.raises(ValueError, match=f"gap.h5: slice 2: sampled row {sampled_row} is all zeros"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "h5", tmp_path / "out", progress=False)
    layout.write_volume(tmp_path / "zero" / "zero.h5", data.target[:3, 0].numpy(), {"4x": (data.zero_filled[:3, 0].numpy(), 0 * kspace)})
    with pytest.raises(ValueError, match="zero.h5: the k-space is all zeros"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "zero", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.*"))


def test_earlier_reconstructions_are_not_replaced_without_overwrite(tmp_path, validation_volume):
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume[:2], 0, -1), np.eye(4)), inputs / "a.nii")
    nib.save(nib.Nifti1Image(np.zeros((150, 150, 2), np.float32), np.eye(4)), inputs / "b.nii")
    # b.nii fails after a.nii was written: a.nii's reconstruction is kept, and the error says so.
    with pytest.raises(ValueError, match=r"b.nii: the images are all zeros \(1 reconstruction\(s\) written before it are kept"):
        reconstruct_files("sunnybrook-4x-student", inputs, tmp_path / "out", progress=False)
    first = (tmp_path / "out" / "a.nii").read_bytes()
    (inputs / "b.nii").unlink()
    with pytest.raises(ValueError, match=r"a.nii exists already; .* pass --overwrite"):
        reconstruct_files("sunnybrook-4x-teacher", inputs, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "a.nii").read_bytes() == first
    assert main(["reconstruct", "--model", "sunnybrook-4x-teacher", "--input", str(inputs), "--output", str(tmp_path / "out"),
                 "--overwrite"]) == 0
    assert (tmp_path / "out" / "a.nii").read_bytes() != first


def test_an_interrupted_folder_continues_with_skip_existing_and_only_its_own_debris_is_removed(tmp_path, validation_volume):
    inputs, output = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a.nii", "b.nii"):
        nib.save(nib.Nifti1Image(np.moveaxis(validation_volume[:2], 0, -1), np.eye(4)), inputs / name)
    reconstruct_files("sunnybrook-4x-student", inputs / "a.nii", output, progress=False)  # a run stopped after a.nii
    first = (output / "a.nii").read_bytes()
    # b.nii's temporary from the killed run, and another process's temporary deeper down: only b.nii's goes.
    own, foreign = output / ".b.nii.k2j4.partial", output / "sub" / ".c.nii.x9.partial"
    foreign.parent.mkdir()
    own.write_bytes(b"half"), foreign.write_bytes(b"in progress")
    with pytest.raises(ValueError, match=r"a.nii exists already; .* pass --overwrite to replace, or --skip-existing to keep"):
        reconstruct_files("sunnybrook-4x-student", inputs, output, progress=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["reconstruct", "--model", "sunnybrook-4x-student", "--input", str(inputs), "--output", str(output),
                     "--skip-existing"]) == 0
    assert "1 reconstruction(s) written" in out.getvalue() and "1 already there kept" in out.getvalue()
    assert (output / "a.nii").read_bytes() == first and (output / "b.nii").exists()
    assert not own.exists() and foreign.read_bytes() == b"in progress"


def test_a_mask_option_is_used_or_refused_never_ignored(tmp_path, validation_volume):
    source = tmp_path / "in" / "a.nii"
    source.parent.mkdir()
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume[:2], 0, -1), np.eye(4)), source)
    own = reconstruct_files("sunnybrook-4x-student", source, tmp_path / "own", progress=False)
    np.save(tmp_path / "recipe.npy", make_mask("recipe", "4x", (150, 150), seed=7))
    other = reconstruct_files("sunnybrook-4x-student", source, tmp_path / "other", mask_kind=str(tmp_path / "recipe.npy"),
                              progress=False)
    assert "recipe.npy mask" in other.derivation and "mask" not in own.derivation
    assert not np.array_equal(np.asarray(nib.load(tmp_path / "own" / "a.nii").dataobj),
                              np.asarray(nib.load(tmp_path / "other" / "a.nii").dataobj))
    with pytest.raises(ValueError, match="--mask nowhere.npy: no such file"):
        reconstruct_files("sunnybrook-4x-student", source, tmp_path / "x", mask_kind="nowhere.npy", progress=False)
    with pytest.raises(ValueError, match="mask kind 'lines': expected one of"):
        reconstruct_files("sunnybrook-4x-student", source, tmp_path / "x", mask_kind="lines", progress=False)
    # Stored k-space is used as acquired: a mask given for it would go unused.
    data = load_sample("validation", "4x")
    layout.write_volume(tmp_path / "h5" / "v.h5", data.target[:2, 0].numpy(),
                        {"4x": (data.zero_filled[:2, 0].numpy(), data.kspace[:2].numpy())})
    with pytest.raises(ValueError, match="v.h5: its k-space is used as acquired.*--mask recipe applies only to images"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "h5", tmp_path / "x", mask_kind="recipe", progress=False)
    acquired = reconstruct_files("sunnybrook-4x-student", tmp_path / "h5", tmp_path / "x", progress=False)
    assert acquired.derivation == "reconstructed from k-space acquired 4x"


def test_stored_kspace_that_is_not_the_spectrum_of_its_target_is_refused(tmp_path):
    data = load_sample("validation", "4x")
    target, kspace = data.target[:2, 0].numpy(), data.kspace[:2].numpy()
    cases = {"rescaled.h5": (target, 1000 * kspace, "its k-space and 'volfs': the k-space is not the masked spectrum"),
             "real.h5": (target, kspace.real.copy(), "the k-space must be complex, got float32"),
             "short.h5": (target, kspace[:1], r"its k-space and 'volfs': the k-space is 150×150×1 slices, the target 150×150×2")}
    for name, (images, stored, message) in cases.items():
        folder = tmp_path / name.removesuffix(".h5")
        folder.mkdir()
        with h5py.File(folder / name, "w") as file:
            file.create_dataset(layout.TARGET_KEY, data=np.moveaxis(images, 0, -1))
            file.create_dataset(layout.kspace_key("4x"), data=np.moveaxis(stored, 0, -1))
        with pytest.raises(ValueError, match=f"{name}: {message}"):
            reconstruct_files("sunnybrook-4x-student", folder, tmp_path / "out", progress=False)
    with h5py.File(tmp_path / "group.h5", "w") as file:
        file.create_group(layout.TARGET_KEY)
    with pytest.raises(ValueError, match="group.h5: 'volfs' is a group; the papers' layout stores"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "group.h5", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.*"))


@pytest.mark.parametrize("name,export_format", [("sunnybrook-4x-teacher", "onnx"), ("sunnybrook-4x-student", "onnx"),
                                                ("sunnybrook-4x-sft-kd-at", "torch-export"),
                                                ("sunnybrook-4x-student", "aot-inductor")])
def test_exported_network_with_data_consistency_equals_pytorch_on_real_slices(tmp_path, name, export_format):
    output = tmp_path / f"model{SUFFIXES[export_format]}"
    check = export_and_check(name, output, export_format, precision="fp32")
    assert output.is_file() and check.slices == 8 and check.max_abs_difference < 1e-5
    # Independently of the check: the exported graph on the k-space of the embedded sample's slices
    # equals the network evaluated by kdrecon's own evaluation path.
    data = load_sample("validation", "4x")
    batch = data.batch(torch.arange(20, 23))
    exported = run_exported(output, export_format, (batch.zero_filled, batch.kspace.real.contiguous(), batch.kspace.imag.contiguous()))
    model, info = load_weights(shipped_weights(name))
    np.testing.assert_allclose(exported[:, 0], reconstruct(model, data, torch.device("cpu"))[20:23], atol=1e-5)
    if export_format == "onnx":  # the weights file's description travels with the graph
        import onnx

        exported = onnx.load(str(output))
        assert [i.name for i in exported.graph.input] == ["zero_filled", "kspace_real", "kspace_imag"]
        properties = {p.key: p.value for p in exported.metadata_props}
        assert json.loads(properties["data"]) == info.data and json.loads(properties["model"]) == info.model
        assert json.loads(properties["provenance"])["seed"] == info.provenance["seed"]


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="this CPU only emulates bf16")
def test_bf16_aot_inductor_package_agrees_with_pytorchs_bf16_network(tmp_path, monkeypatch):
    output = tmp_path / "student.pt2"
    check = export_and_check("sunnybrook-4x-student", output, "aot-inductor", precision="bf16")
    assert check.precision == "bf16" and output.is_file()
    # bf16 rounding after five cascades, well below the float32 network's distance from the target.
    assert 1e-5 < check.max_abs_difference < BF16_TOLERANCE * check.max_reference
    # Where this CPU runs kdrecon's thin-convolution kernels, the package calls them (its graph's extern nodes),
    # unless asked for oneDNN's convolutions only.
    assert check.thin_kernels == thin_kernels.fast_kernels_available()
    assert _extern_operators(output) == ({"kdrecon::image_convolution_relu", "kdrecon::feature_to_image_convolution"}
                                         if check.thin_kernels else set())
    portable = tmp_path / "portable.pt2"
    assert main(["export", "--model", "sunnybrook-4x-student", "--output", str(portable), "--format", "aot-inductor",
                 "--precision", "bf16", "--no-thin-kernels"]) == 0
    assert _extern_operators(portable) == set() and not thin_kernels.package_calls_kernels(portable)
    assert thin_kernels.package_calls_kernels(output) == check.thin_kernels
    if check.thin_kernels:  # where the kernels' library cannot be built, such a package is refused, by name
        monkeypatch.setattr(thin_kernels, "load", lambda: False)
        with pytest.raises(ValueError, match="student.pt2: the package calls kdrecon's thin-convolution kernels, which "
                                             "cannot be built here .* --no-thin-kernels"):
            load_ahead_of_time(output)
        load_ahead_of_time(portable)
    with pytest.raises(ValueError, match="precision bf16: a onnx export is float32"):
        export_and_check("sunnybrook-4x-student", tmp_path / "student.onnx", "onnx", precision="bf16")
    assert not (tmp_path / "student.onnx").exists()


def _extern_operators(package_path) -> set[str]:
    """kdrecon's operators an AOTInductor package calls, from its graphs' descriptions."""
    with zipfile.ZipFile(package_path) as package:
        graphs = b"".join(package.read(name) for name in package.namelist() if name.endswith(".json"))
    return {name.decode() for name in re.findall(rb"kdrecon::[a-z_]+", graphs)}


def test_export_keeps_an_existing_file_unless_overwrite_and_a_good_export(tmp_path, monkeypatch):
    output = tmp_path / "student.onnx"
    output.write_bytes(b"an earlier export")
    with pytest.raises(ValueError, match="student.onnx: exists already; .* pass --overwrite"):
        export_and_check("sunnybrook-4x-student", output, "onnx")
    assert output.read_bytes() == b"an earlier export"
    # An export that fails its check leaves the earlier file as it was, and no temporary.
    from kdrecon.deployment import export as export_module
    monkeypatch.setattr(export_module, "FLOAT32_TOLERANCE", -1.0)  # no export passes
    with pytest.raises(ValueError, match="differs from PyTorch's"):
        export_and_check("sunnybrook-4x-student", output, "onnx", overwrite=True)
    assert output.read_bytes() == b"an earlier export" and sorted(tmp_path.iterdir()) == [output]
    monkeypatch.undo()
    assert main(["export", "--model", "sunnybrook-4x-student", "--output", str(output), "--overwrite"]) == 0
    assert output.read_bytes() != b"an earlier export" and sorted(tmp_path.iterdir()) == [output]


def test_a_student_friendly_teacher_exports_its_teacher_network(tmp_path, monkeypatch):
    from kdrecon.deployment import export as export_module
    from kdrecon.models.sft import StudentFriendlyTeacher

    teacher, info = load_weights(shipped_weights("sunnybrook-4x-teacher"))
    trained = StudentFriendlyTeacher(teacher, build_model("D3C5"))  # as an SFT teacher run's checkpoint loads
    monkeypatch.setattr(export_module, "load_deployable", lambda model: (trained, info))
    check = export_and_check("an SFT teacher run", tmp_path / "sft-teacher.onnx", "onnx")
    assert check.max_abs_difference < 1e-5 * check.max_reference and check.max_reference > 0


def test_exported_network_without_data_consistency(tmp_path):
    torch.manual_seed(0)
    model = build_model("VDSR4B4", channels=8)
    mask = low_pass_mask((64, 64), 4)
    data = {"task": "super-resolution", "acceleration": "4x", "image_shape": [64, 64], "mask": describe_mask(mask),
            "normalisation": NORMALISATION}
    save_weights(tmp_path / "vdsr.safetensors", model, {"name": "VDSR4B4", "options": {"channels": 8}}, data)
    check = export_and_check(tmp_path / "vdsr.safetensors", tmp_path / "vdsr.onnx", "onnx")
    assert check.max_abs_difference < 1e-5 and check.max_reference > 0
    import onnx  # what a user of the file sees, without kdrecon

    exported = onnx.load(str(tmp_path / "vdsr.onnx"))
    assert [i.name for i in exported.graph.input] == ["low_resolution"]  # no k-space: VDSR has no data consistency
    properties = {p.key: p.value for p in exported.metadata_props}
    assert json.loads(properties["data"])["acceleration"] == "4x" and json.loads(properties["data"])["task"] == "super-resolution"
    assert json.loads(properties["model"]) == {"name": "VDSR4B4", "options": {"channels": 8}}
    assert properties["inputs"].startswith("low_resolution (B, 1, H, W): the low-resolution image on the full H x W grid")


def test_real_arithmetic_data_consistency_equals_the_fft_one_on_real_slices(real_slices, cardiac_mask_4x):
    image = torch.from_numpy(real_slices[:3]).float()
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, zero_filled = undersample(image, mask)
    layer = RealDataConsistency(cardiac_mask_4x)
    ours = layer(zero_filled[:, None] * 0.9, layer.measured(kspace.real, kspace.imag))
    torch.testing.assert_close(ours, data_consistency(zero_filled[:, None] * 0.9, kspace, mask), atol=2e-6, rtol=0)
    # Super-resolution's box: sampled rows and columns both restricted.
    from kdrecon.mri.resolution import low_pass_mask

    box = torch.from_numpy(low_pass_mask((150, 150), 3.0)).float()
    kspace, low_resolution = undersample(image, box)
    layer = RealDataConsistency(box.numpy())
    ours = layer(low_resolution[:, None], layer.measured(kspace.real, kspace.imag))
    torch.testing.assert_close(ours, data_consistency(low_resolution[:, None], kspace, box), atol=2e-6, rtol=0)


def test_data_consistency_of_a_bf16_package_multiplies_in_bf16_and_adds_the_measurements_in_float32(real_slices, cardiac_mask_4x):
    image = torch.from_numpy(real_slices[:3]).float()
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, zero_filled = undersample(image, mask)
    layer = RealDataConsistency(cardiac_mask_4x, product_dtype=torch.bfloat16)
    measured = layer.measured(kspace.real, kspace.imag)
    block_output = (zero_filled[:, None] * 0.9).to(torch.bfloat16)  # what a bf16 block hands over
    ours = layer(block_output, measured)
    reference = data_consistency(block_output.float(), kspace, mask)
    assert ours.dtype == torch.float32
    # The product with I - Re A_H is rounded to bf16 (8 significant bits): far more than float32's
    # rounding (about 5e-7 here), within bf16's.
    assert 1e-4 < (ours - reference).abs().max() < 2**-8 * reference.abs().max()
    # The measurements themselves are added in float32: where the block output is 0, the result is F^-1 k0.
    zeros = torch.zeros_like(block_output)
    torch.testing.assert_close(layer(zeros, measured), data_consistency(zeros.float(), kspace, mask), atol=2e-6, rtol=0)


def test_fastmri_file_is_written_for_fastmris_evaluation_and_beats_zero_filled(tmp_path, shared_dir):
    from skimage.metrics import structural_similarity

    images = np.load(shared_dir / "data/sunnybrook/SCD0000201.npz")["images"][2:8, 0].astype(np.float32)  # (6, 256, 256)
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(images, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    with h5py.File(tmp_path / "file1000.h5", "w") as file:
        file.create_dataset("kspace", data=kspace.astype(np.complex64))
        file.create_dataset("reconstruction_esc", data=images)
        file.attrs.update({"max": float(images.max()), "acquisition": "CINE"})
    reconstruct_files("sunnybrook-4x-student", tmp_path / "file1000.h5", tmp_path / "out", mask_kind="recipe", progress=False)
    with h5py.File(tmp_path / "out" / "file1000.h5") as file:
        output, attributes = file["reconstruction"][()], dict(file.attrs)
    assert output.shape == images.shape and attributes["acquisition"] == "CINE"

    def fastmri_scores(prediction):  # fastMRI's evaluate.py: per volume, data range = the target volume's max
        data_range = images.max()
        ssim = np.mean([structural_similarity(t, p, data_range=data_range) for t, p in zip(images, prediction)])
        return psnr(images, prediction), ssim

    mask = torch.from_numpy(make_mask("recipe", "4x", (256, 256)))
    scale = images.max(axis=(1, 2), keepdims=True)
    zero_filled = undersample(torch.from_numpy(images / scale), mask)[1].numpy() * scale
    ours, baseline = fastmri_scores(output), fastmri_scores(zero_filled)
    assert ours[0] > baseline[0] + 2 and ours[1] > baseline[1]


def test_a_dicom_image_phase_encoded_along_its_rows_is_reconstructed_transposed(tmp_path, validation_volume):
    """The same anatomy stored both ways gives the same reconstruction: the mask skips phase-encoding lines in both."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid
    from test_sources import write_dicom

    image = validation_volume[4]
    stored = {"row": (image, "ROW"), "col": (image.T, "COL"), "as-stored": (image, None)}
    for name, (pixels, direction) in stored.items():
        write_dicom(tmp_path / "in" / name, (pixels + 5) / 2, patient="P", series_uid=generate_uid(), series_number=1,
                    instance=1, slice_location=0.0, phase_encoding=direction)
    reconstruct_files("sunnybrook-4x-student", tmp_path / "in", tmp_path / "out", progress=False)
    row, col, as_stored = (dcmread(tmp_path / "out" / name).pixel_array.astype(float) for name in stored)
    np.testing.assert_array_equal(row, col.T)
    assert np.abs(row - as_stored).mean() > 1  # read as stored, its reconstruction differs


def test_a_refused_dicom_image_read_transposed_is_named_with_its_own_size(tmp_path, validation_volume):
    """Rows × Columns as the file has them (48×64), not the transposed 64×48 the network was given."""
    from pydicom.uid import generate_uid
    from test_sources import write_dicom

    write_dicom(tmp_path / "in" / "row", validation_volume[4, :48, :64] + 5, patient="P", series_uid=generate_uid(),
                series_number=1, instance=1, slice_location=0.0, phase_encoding="ROW")
    with pytest.raises(ValueError, match=r"in/row \(48×64, phase-encoded along its rows: read transposed\): images are "
                                         r"64×48, the model's 4x mask is 150×150"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "in", tmp_path / "out", progress=False)


def test_a_truncated_dicom_image_in_a_folder_is_named(tmp_path, validation_volume):
    from pydicom.uid import generate_uid
    from test_sources import write_dicom

    series = generate_uid()
    for index in range(2):
        write_dicom(tmp_path / "in" / f"IM{index}", validation_volume[index] + 5, patient="P", series_uid=series,
                    series_number=1, instance=index + 1, slice_location=float(index))
    damaged = tmp_path / "in" / "IM1"
    damaged.write_bytes(damaged.read_bytes()[:-20000])  # a download cut short inside the pixel data
    with pytest.raises(ValueError, match=f"^{damaged}: "):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "in", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dicom_round_trip_makes_a_new_series_with_the_inputs_geometry(tmp_path, validation_volume):
    from pydicom import dcmread
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    series, study = generate_uid(), generate_uid()
    slices = validation_volume[3:6]  # the scanner's integers
    for index, image in enumerate(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(tmp_path / f"IM{index}"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR", "SCD0000401"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = study, series, 7, index + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [10.0, -20.0, 8.0 * index], [1.0, 0, 0, 0, 1.0, 0]
        ds.PixelSpacing, ds.SamplesPerPixel, ds.PhotometricInterpretation = [1.37, 1.37], 1, "MONOCHROME2"
        ds.Rows, ds.Columns = image.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -5
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"] if index else "ORIGINAL"  # one value, as some files have it
        ds.LargestImagePixelValue = int(((image + 5) / 2).round().max())
        ds.PixelData = ((image + 5) / 2).round().astype(np.uint16).tobytes()
        (tmp_path / "in").mkdir(exist_ok=True)
        ds.save_as(tmp_path / "in" / f"IM{index}", enforce_file_format=True)
    directory = FileDataset(str(tmp_path / "in" / "DICOMDIR"), {}, file_meta=FileMetaDataset(), preamble=b"\0" * 128)
    directory.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: no image
    directory.file_meta.MediaStorageSOPInstanceUID, directory.file_meta.TransferSyntaxUID = generate_uid(), ExplicitVRLittleEndian
    directory.PatientID = "SCD0000401"
    directory.save_as(tmp_path / "in" / "DICOMDIR", enforce_file_format=True)
    reconstruct_files("sunnybrook-4x-student", tmp_path / "in", tmp_path / "out", progress=False)
    inputs = [dcmread(tmp_path / "in" / f"IM{i}") for i in range(3)]
    outputs = [dcmread(tmp_path / "out" / f"IM{i}") for i in range(3)]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["IM0", "IM1", "IM2"]  # the DICOMDIR skipped
    assert len({o.SeriesInstanceUID for o in outputs}) == 1 and outputs[0].SeriesInstanceUID != series
    assert len({o.SOPInstanceUID for o in outputs} | {i.SOPInstanceUID for i in inputs}) == 6
    assert {o.SeriesNumber for o in outputs} == {1007}
    assert [tuple(o.ImageType) for o in outputs] == [("DERIVED", "SECONDARY")] + [("DERIVED", "SECONDARY", "M")] * 2
    assert not any("LargestImagePixelValue" in o for o in outputs)  # the input's maximum, not the output's
    for source, result in zip(inputs, outputs):
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "PatientID", "StudyInstanceUID"):
            assert result[tag].value == source[tag].value
        assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    # The decoded pixels are the network's reconstruction of the decoded input (up to the encoding step of 2).
    model, _ = load_weights(shipped_weights("sunnybrook-4x-student"))
    decoded = np.stack([i.pixel_array * 2.0 - 5 for i in inputs]).astype(np.float32)
    scale = decoded.max(axis=(1, 2), keepdims=True)
    mask = torch.from_numpy(make_mask("papers", "4x", (150, 150)))
    kspace, zero_filled = undersample(torch.from_numpy(decoded / scale), mask)
    with torch.no_grad():
        expected = model(zero_filled[:, None], kspace, mask)[:, 0].numpy() * scale
    ours = np.stack([o.pixel_array * 2.0 - 5 for o in outputs])
    assert np.abs(ours - np.clip(expected, -5, None)).max() <= 1.0 + 1e-3
    # A folder whose images of another size cannot be reconstructed (no --mask for them) gets nothing written.
    (tmp_path / "mixed").mkdir()
    shutil.copy(tmp_path / "in" / "IM0", tmp_path / "mixed" / "IM0")
    small = dcmread(tmp_path / "in" / "IM1")
    small.PixelData = small.pixel_array[:128, :128].copy().tobytes()
    small.Rows = small.Columns = 128
    small.save_as(tmp_path / "mixed" / "IM1")
    with pytest.raises(ValueError, match=r"mixed/IM1 \(128×128\): images are 128×128, .* give --mask"):
        reconstruct_files("sunnybrook-4x-student", tmp_path / "mixed", tmp_path / "out-mixed", progress=False)
    assert not (tmp_path / "out-mixed").exists() or not any((tmp_path / "out-mixed").iterdir())


def test_an_interrupted_reconstruct_says_how_to_continue(tmp_path, monkeypatch, validation_volume):
    import kdrecon.deployment.reconstruct as reconstruct_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(reconstruct_module, "reconstruct_files", interrupted)
    source = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(np.moveaxis(validation_volume[:1], 0, -1), np.eye(4)), source)
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        assert main(["reconstruct", "--model", "sunnybrook-4x-student", "--input", str(source),
                     "--output", str(tmp_path / "out")]) == 130
    assert errors.getvalue() == ("kdrecon: interrupted; the reconstructions written are kept: add --skip-existing "
                                 "to the same command to do the rest\n")


def test_a_run_whose_training_stopped_is_not_evaluated_exported_or_deployed_as_trained(tmp_path, small_train,
                                                                                     small_validation):
    from kdrecon.training.config import TrainConfig, validate
    from kdrecon.training.supervised import train_model

    def stop_after_the_first(epoch, row):
        raise KeyboardInterrupt

    config = validate(TrainConfig, {"model": {"name": "D3C3", "channels": 8}, "optimization": {"epochs": 2, "batch_size": 8}})
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_model(config, run, False, small_train, small_validation, on_epoch_end=stop_after_the_first)
    source = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(np.ones((150, 150, 1), np.float32), np.eye(4)), source)
    commands = {"evaluate": ["evaluate", str(run)],
                "--model": ["export", "--model", str(run), "--output", str(tmp_path / "a.onnx")],
                "--model ": ["reconstruct", "--model", str(run), "--input", str(source), "--output", str(tmp_path / "out")]}
    for where, arguments in commands.items():
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            assert main(arguments) == 2
        assert errors.getvalue().startswith(f"kdrecon: error: {where.strip()}: {run}: its training stopped at epoch 1 of 2; "
                                             f"finish it"), errors.getvalue()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.nii", "run"]
    assert not (run / "evaluation").exists()


@pytest.mark.parametrize("signed, expected", [(0, [0, 100, 4095, 4095]), (1, [-2048, 100, 2047, 2047])])
def test_a_dicom_reconstruction_is_clipped_to_the_bits_the_series_stores(signed, expected):
    """A 12-bit series read as 16-bit integers: values past 4095 (or 2047) would wrap round to dark pixels."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    from kdrecon.deployment.reconstruct import _encode

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = MRImageStorage, ExplicitVRLittleEndian
    ds = FileDataset("IM0", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, 4, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, signed
    ds.PixelData = np.zeros(4, np.int16 if signed else np.uint16).tobytes()
    _encode(ds, np.array([[-3000.0, 100.0, 4100.0, 5000.0]]))
    assert ds.pixel_array.tolist() == [expected]
