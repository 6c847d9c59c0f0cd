"""Dataset preparation, the papers' h5 layout and in-memory loading, on the embedded real sample.

Real data: the four Sunnybrook subjects embedded in the package (``SCD*.npz``, uint16
``(slices, 4 phases, 150, 150)``) and the papers' own cardiac/brain masks from ``../shared``.
Expected values are computed here with NumPy from the raw ``.npz`` arrays (per-slice max
scaling, ``np.fft.fft2(x, norm="ortho")`` with no shift), never by calling the module twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from kdrecon.cli import main
from kdrecon.data import layout
from kdrecon.data.dataset import count_slices, dataset_identity, load_sample, load_split, same_data, sample_directory
from kdrecon.data.prepare import (MASK_SEED, PrepareOptions, make_mask, prepare_dataset, register_papers_h5,
                                  split_subjects)
from kdrecon.data.sources import sunnybrook
from kdrecon.data.volume import Volume
from kdrecon.mri import masks as mask_generators

SUBJECTS = ("SCD0000101", "SCD0000201", "SCD0000301", "SCD0000401")
TRAIN, VALIDATION = SUBJECTS[:3], SUBJECTS[3:]
PHASES = (0, 5, 10, 15)


# --- independent NumPy reference -------------------------------------------------------------


def raw_volume(subject: str, phase: int) -> np.ndarray:
    """``(S, 150, 150)`` float64 target straight from the ``.npz``: centre 150 crop, each slice max 1."""
    with np.load(sample_directory() / f"{subject}.npz") as archive:
        images = archive["images"][:, list(archive["phase_index"]).index(phase)].astype(np.float64)
    top, left = (images.shape[1] - 150) // 2, (images.shape[2] - 150) // 2
    images = images[:, top : top + 150, left : left + 150]
    return images / images.max(axis=(1, 2), keepdims=True)


def slice_count(subject: str) -> int:
    with np.load(sample_directory() / f"{subject}.npz") as archive:
        return archive["images"].shape[0]


def shared_mask(shared_dir: Path, anatomy: str, acceleration: str) -> np.ndarray:
    return np.load(shared_dir / f"masks/{anatomy}/mask_{acceleration}.npy")


def check_papers_file(path: Path, target: np.ndarray, masks: dict[str, np.ndarray]) -> None:
    """One h5 file against the reference: layout (H, W, S), target, k = M·fft2(x), zf = |ifft2(k)|."""
    expected_keys = {"volfs"} | {f"{p}_{a}" for a in masks for p in ("img_volus", "kspace_volus")}
    with h5py.File(path, "r") as file:
        assert set(file.keys()) == expected_keys
        volfs = file["volfs"][()]
        hws = target.shape[1:] + target.shape[:1]
        assert volfs.shape == hws and volfs.dtype == np.float32
        np.testing.assert_allclose(volfs, np.moveaxis(target, 0, -1), rtol=0, atol=1e-6)
        np.testing.assert_allclose(volfs.max(axis=(0, 1)), 1.0, rtol=0, atol=1e-6)
        for acceleration, mask in masks.items():
            kspace = file[f"kspace_volus_{acceleration}"][()]
            zero_filled = file[f"img_volus_{acceleration}"][()]
            assert kspace.shape == zero_filled.shape == hws
            assert np.iscomplexobj(kspace) and zero_filled.dtype == np.float32
            expected = mask[:, :, None] * np.fft.fft2(volfs.astype(np.float64), axes=(0, 1), norm="ortho")
            scale = np.abs(expected).max()
            np.testing.assert_allclose(kspace, expected, rtol=0, atol=1e-5 * scale)
            assert np.all(kspace[mask == 0] == 0)
            expected_zf = np.abs(np.fft.ifft2(kspace.astype(np.complex128), axes=(0, 1), norm="ortho"))
            np.testing.assert_allclose(zero_filled, expected_zf, rtol=0, atol=1e-5)


def leftovers(parent: Path) -> list[str]:
    """Names of everything under ``parent`` (hidden staging directories included)."""
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The whole sample (4 subjects x 4 phases) prepared at 4x and 5x with the papers' masks."""
    destination = tmp_path_factory.mktemp("prepared") / "dataset"
    options = PrepareOptions(accelerations=("4x", "5x"), validation_subjects=("SCD0000401",))
    return prepare_dataset(sunnybrook.read_volumes(sample_directory()), destination, options)


@pytest.fixture(scope="module")
def phase0_volumes() -> list[Volume]:
    return list(sunnybrook.read_volumes(sample_directory(), phases=[0]))


# --- 1. prepare_dataset ----------------------------------------------------------------------


def test_prepare_writes_dataset_directory(prepared, shared_dir):
    assert leftovers(prepared) == ["dataset.json", "masks", "train", "validation"]
    assert leftovers(prepared / "masks") == ["mask_4x.npy", "mask_5x.npy"]
    assert leftovers(prepared.parent) == ["dataset"]  # no staging directory left beside it
    for acceleration in ("4x", "5x"):
        np.testing.assert_array_equal(
            np.load(prepared / f"masks/mask_{acceleration}.npy"), shared_mask(shared_dir, "cardiac", acceleration)
        )
    manifest = json.loads((prepared / "dataset.json").read_text())
    assert manifest["format"] == "kdrecon-dataset"
    assert manifest["accelerations"] == ["4x", "5x"]
    assert manifest["masks"] == {"4x": "masks/mask_4x.npy", "5x": "masks/mask_5x.npy"}
    assert manifest["splits"]["train"] == {"directory": "train", "subjects": list(TRAIN)}
    assert manifest["splits"]["validation"] == {"directory": "validation", "subjects": list(VALIDATION)}
    assert manifest["skipped_empty_slices"] == 0


def test_prepared_files_get_ordinary_permissions(prepared):
    umask = layout.current_umask()
    assert prepared.stat().st_mode & 0o777 == 0o777 & ~umask
    for path in (prepared / "train").glob("*.h5"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_prepare_splits_by_subject(prepared):
    names = {split: sorted(p.stem for p in (prepared / split).glob("*.h5")) for split in ("train", "validation")}
    assert names["train"] == [f"{s}_phase{p:02d}" for s in TRAIN for p in PHASES]
    assert names["validation"] == [f"SCD0000401_phase{p:02d}" for p in PHASES]
    subjects = {split: {n.split("_")[0] for n in names[split]} for split in names}
    assert subjects["validation"] == {"SCD0000401"}
    assert not subjects["train"] & subjects["validation"]


@pytest.mark.parametrize("fraction, validation", [(0.25, ["SCD0000401"]), (0.5, ["SCD0000301", "SCD0000401"])])
def test_prepare_validation_fraction(tmp_path, phase0_volumes, fraction, validation):
    options = PrepareOptions(validation_fraction=fraction)
    dataset = prepare_dataset(phase0_volumes, tmp_path / "ds", options)
    found = {s: sorted(p.stem.split("_")[0] for p in (dataset / s).glob("*.h5")) for s in ("train", "validation")}
    assert found["validation"] == validation
    assert found["train"] == sorted(set(SUBJECTS) - set(validation))


def test_split_fraction_is_not_off_by_one_in_floating_point():
    subjects = [f"s{i:03d}" for i in range(100)]
    assert 0.07 * 100 > 7  # 7.000000000000001
    assert len(split_subjects(subjects, PrepareOptions(validation_fraction=0.07))["validation"]) == 7
    assert len(split_subjects(subjects, PrepareOptions(validation_fraction=0.075))["validation"]) == 8


def test_split_accepts_one_subject_as_a_string():
    assert split_subjects(SUBJECTS, PrepareOptions(validation_subjects="SCD0000401"))["validation"] == ["SCD0000401"]


def test_prepared_h5_files_match_numpy_reference(prepared, shared_dir):
    masks = {a: shared_mask(shared_dir, "cardiac", a) for a in ("4x", "5x")}
    for subject in SUBJECTS:
        split = "validation" if subject in VALIDATION else "train"
        for phase in PHASES:
            path = prepared / split / f"{subject}_phase{phase:02d}.h5"
            check_papers_file(path, raw_volume(subject, phase), masks)
            assert layout.volume_accelerations(path) == ["4x", "5x"]


@pytest.mark.parametrize("kind, low, high", [("recipe", 18, 18), ("random", 12, 30), ("equispaced", 17, 21)])
def test_mask_kinds_at_8x(tmp_path, phase0_volumes, kind, low, high):
    options = PrepareOptions(accelerations=("8",), mask=kind, validation_subjects=("SCD0000401",))
    dataset = prepare_dataset(phase0_volumes, tmp_path / "ds", options)
    mask = np.load(dataset / "masks/mask_8x.npy")
    rows = mask[:, 0]
    assert mask.shape == (150, 150) and set(np.unique(mask)) == {0.0, 1.0}
    assert np.all(mask == rows[:, None])  # whole phase-encode lines
    assert low <= rows.sum() <= high  # int(150 / 8) = 18 for the recipe, ~150/8 for fastMRI's
    centre = [0, 1, 2, 3, 4, 145, 146, 147, 148, 149]  # un-centred: DC at row 0, wrapping to the end
    assert rows[centre].all()
    if kind != "recipe":  # fastMRI's centre block: round(0.08 * 150) = 12 lines
        assert rows[[5, 144]].all()
    check_papers_file(dataset / "train/SCD0000101_phase00.h5", raw_volume("SCD0000101", 0), {"8x": mask})


def expected_mask(recorded: dict, shared_dir: Path, size: int) -> np.ndarray:
    """The 4x mask the manifest's record describes, made by the generator itself (or the papers' file)."""
    kind, seed, fraction = recorded["kind"], recorded.get("seed"), recorded.get("center_fraction")
    if kind == "papers":
        return shared_mask(shared_dir, "cardiac", "4x")
    if kind == "recipe":
        return mask_generators.papers_mask(size, 4, seed=seed).uncentred().values
    generator = {"random": mask_generators.random_mask, "equispaced": mask_generators.equispaced_mask}[kind]
    return generator((size, size), fraction, 4, seed=seed).uncentred().values


@pytest.mark.parametrize("options, recorded", [
    (["--mask", "papers", "--crop", "150"], {"kind": "papers"}),
    (["--mask", "recipe", "--mask-seed", "7"], {"kind": "recipe", "seed": 7}),
    (["--mask", "recipe"], {"kind": "recipe", "seed": MASK_SEED}),
    (["--mask", "random", "--mask-seed", "0", "--center-fraction", "0.1"],
     {"kind": "random", "seed": 0, "center_fraction": 0.1}),
    (["--mask", "equispaced", "--center-fraction", "0.15"],
     {"kind": "equispaced", "seed": MASK_SEED, "center_fraction": 0.15}),
])
def test_prepare_records_only_the_mask_options_used(tmp_path, shared_dir, options, recorded):
    crop = [] if "--crop" in options else ["--crop", "48"]
    arguments = ["prepare", "sunnybrook", sample_directory(), tmp_path / "ds", "--phases", "0", *crop, *options]
    assert main([str(a) for a in arguments]) == 0
    manifest = json.loads((tmp_path / "ds/dataset.json").read_text())
    assert manifest["mask"] == recorded
    mask = np.load(tmp_path / "ds/masks/mask_4x.npy")
    np.testing.assert_array_equal(mask, expected_mask(recorded, shared_dir, mask.shape[0]))


def test_make_mask_refuses_a_parameter_its_kind_does_not_use():
    """``make_mask`` is called without ``PrepareOptions`` too (``kdrecon reconstruct --mask``)."""
    with pytest.raises(ValueError, match="--mask-seed: the papers mask is fixed, not drawn; leave it out"):
        make_mask("papers", "4x", (150, 150), seed=7)
    with pytest.raises(ValueError, match="--center-fraction: the recipe mask has its own centre; leave it out"):
        make_mask("recipe", "4x", (150, 150), center_fraction=0.08)


# --- 2. load_split / load_sample / SliceData -------------------------------------------------


@pytest.mark.parametrize("split, acceleration", [("train", "4x"), ("validation", "4x"), ("validation", "5x")])
def test_load_split_equals_load_sample(prepared, shared_dir, split, acceleration):
    data = load_split(prepared, split, acceleration)
    sample = load_sample(split, acceleration)
    subjects = TRAIN if split == "train" else VALIDATION
    count = sum(slice_count(s) for s in subjects) * len(PHASES)
    assert len(data) == len(sample) == count
    assert count_slices(prepared, split) == count_slices("sample", split) == count  # counted without loading
    assert data.target.shape == data.zero_filled.shape == (count, 1, 150, 150)
    assert data.kspace.shape == (count, 150, 150) and data.kspace.dtype == torch.complex64
    assert data.target.dtype == data.zero_filled.dtype == data.mask.dtype == torch.float32
    assert data.volumes == sample.volumes
    for name in ("target", "zero_filled", "kspace", "mask"):
        assert torch.equal(getattr(data, name), getattr(sample, name)), name
    np.testing.assert_array_equal(data.mask.numpy(), shared_mask(shared_dir, "cardiac", acceleration))
    first = data.volumes[0]
    expected = raw_volume(*first.name.split("_phase")[:1], int(first.name.split("_phase")[1]))
    np.testing.assert_allclose(data.target[first.start : first.stop, 0].numpy(), expected, rtol=0, atol=1e-6)


def test_dataset_identity_follows_the_contents_not_the_location(prepared, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(prepared, moved)
    assert dataset_identity(moved) == dataset_identity(prepared) != dataset_identity("sample")
    mask_file = moved / "masks" / "mask_4x.npy"
    mask = np.load(mask_file)
    np.save(mask_file, np.roll(mask, 1, axis=0))  # another mask of the same size
    assert dataset_identity(moved) != dataset_identity(prepared)


def _digest_of_files(dataset: Path) -> str:
    """The manifest's content digest recomputed from the targets stored in the h5 files (hashlib on the arrays read back)."""
    digests = {}
    for path in sorted(dataset.glob("*/*.h5")):
        with h5py.File(path) as file:
            target = np.ascontiguousarray(np.moveaxis(file["volfs"][()], -1, 0))
        digests[path.stem] = hashlib.sha256(str(target.shape).encode() + target.tobytes()).hexdigest()
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()


def test_dataset_identity_tells_apart_preparations_of_equal_sizes(phase0_volumes, tmp_path):
    options = PrepareOptions(validation_subjects=("SCD0000401",))
    first = prepare_dataset(phase0_volumes, tmp_path / "phase0", options)
    other = prepare_dataset(sunnybrook.read_volumes(sample_directory(), phases=[5]), tmp_path / "phase5", options)
    for dataset in (first, other):
        assert json.loads((dataset / "dataset.json").read_text())["content"] == _digest_of_files(dataset)
    for dataset in (first, other):  # the volumes are renamed to the same names: only their arrays differ
        for path in sorted(dataset.glob("*/*.h5")):
            path.rename(path.with_name(path.name.replace("_phase05", "_phase00")))
    before, after = dataset_identity(first).split("+"), dataset_identity(other).split("+")
    assert before[0] == after[0] and before[1] != after[1]  # names and sizes alone agree: the content tells
    assert not same_data(dataset_identity(first), dataset_identity(other))
    # An identity recorded before kdrecon digested content (no "+" part) still names this preparation.
    assert same_data(before[0], dataset_identity(first)) and same_data(dataset_identity(first), before[0])


def test_volume_index_covers_every_slice_once(prepared):
    data = load_split(prepared, "train")
    assert [v.name for v in data.volumes] == [f"{s}_phase{p:02d}" for s in TRAIN for p in PHASES]
    covered = np.zeros(len(data), dtype=int)
    for volume in data.volumes:
        assert volume.stop - volume.start == slice_count(volume.name.split("_")[0])
        covered[volume.start : volume.stop] += 1
    assert np.all(covered == 1)
    assert [data.volumes[0].start] + [v.start for v in data.volumes[1:]] == [0] + [v.stop for v in data.volumes[:-1]]


def visited(data, batch_size: int, seed: int | None) -> list[list[int]]:
    """Slice indices of each batch, found by matching the batch's target slices to the data's."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    index_of = {t.numpy().tobytes(): i for i, t in enumerate(data.target)}
    assert len(index_of) == len(data)  # real slices are all distinct
    batches = []
    for batch in data.batches(batch_size, generator):
        indices = [index_of[t.numpy().tobytes()] for t in batch.target]
        assert torch.equal(batch.zero_filled, data.zero_filled[indices])
        assert torch.equal(batch.kspace, data.kspace[indices])
        assert batch.mask is data.mask
        batches.append(indices)
    return batches


def test_batches_visit_every_slice_once(prepared):
    data = load_split(prepared, "validation")
    batches = visited(data, 5, seed=3)
    assert [len(b) for b in batches] == [5] * (len(data) // 5) + ([len(data) % 5] if len(data) % 5 else [])
    order = [i for b in batches for i in b]
    assert sorted(order) == list(range(len(data)))
    assert order != list(range(len(data)))  # shuffled
    assert visited(data, 5, seed=3) == batches  # reproducible
    assert [i for b in visited(data, 16, seed=None) for i in b] == list(range(len(data)))
    with pytest.raises(ValueError, match="batch size 0"):
        next(data.batches(0))


# --- 3. register_papers_h5 -------------------------------------------------------------------


def test_register_papers_h5_reads_in_place(prepared, shared_dir, tmp_path):
    masks = {"4x": shared_dir / "masks/cardiac/mask_4x.npy", "5": shared_dir / "masks/cardiac/mask_5x.npy"}
    registered = register_papers_h5(prepared / "train", prepared / "validation", masks, tmp_path / "registered")
    assert not list(registered.rglob("*.h5"))
    assert leftovers(tmp_path) == ["registered"]
    manifest = json.loads((registered / "dataset.json").read_text())
    assert manifest["accelerations"] == ["4x", "5x"]
    assert manifest["splits"]["train"]["directory"] == str((prepared / "train").resolve())
    assert manifest["splits"]["validation"]["directory"] == str((prepared / "validation").resolve())
    assert manifest["splits"]["validation"]["subjects"] == [f"SCD0000401_phase{p:02d}" for p in PHASES]
    for split, acceleration in (("train", "4x"), ("validation", "5x")):
        ours, theirs = load_split(registered, split, acceleration), load_split(prepared, split, acceleration)
        assert ours.volumes == theirs.volumes
        for name in ("target", "zero_filled", "kspace", "mask"):
            assert torch.equal(getattr(ours, name), getattr(theirs, name)), name


# --- 4. bad input ----------------------------------------------------------------------------


def copy_volume(prepared: Path, directory: Path, name: str = "SCD0000101_phase00") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    split = "validation" if name.startswith("SCD0000401") else "train"
    return Path(shutil.copy(prepared / split / f"{name}.h5", directory / f"{name}.h5"))


def test_missing_h5_key_is_named(prepared, cardiac_mask_4x, tmp_path):
    path = copy_volume(prepared, tmp_path / "train")
    copy_volume(prepared, tmp_path / "validation", "SCD0000401_phase00")
    with h5py.File(path, "a") as file:
        del file["kspace_volus_4x"]
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5: missing dataset 'kspace_volus_4x'"):
        layout.read_volume(path, "4x")
    np.save(tmp_path / "mask.npy", cardiac_mask_4x)
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5: missing dataset 'kspace_volus_4x'"):
        register_papers_h5(tmp_path / "train", tmp_path / "validation", {"4x": tmp_path / "mask.npy"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_h5_with_nan_or_real_kspace_is_named(prepared, tmp_path):
    path = copy_volume(prepared, tmp_path)
    with h5py.File(path, "a") as file:
        file["img_volus_4x"][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"phase00\.h5: 'img_volus_4x' contains NaN"):
        layout.read_volume(path, "4x")
    with h5py.File(path, "a") as file:
        kspace = file["kspace_volus_5x"][()]
        del file["kspace_volus_5x"]
        file["kspace_volus_5x"] = np.abs(kspace).astype(np.float32)
    with pytest.raises(ValueError, match=r"phase00\.h5: 'kspace_volus_5x' must be complex"):
        layout.read_volume(path, "5x")


def test_brain_mask_for_cardiac_slices(phase0_volumes, shared_dir, prepared, tmp_path):
    brain = shared_dir / "masks/brain/mask_4x.npy"
    options = PrepareOptions(mask=str(brain), validation_subjects=("SCD0000401",))
    with pytest.raises(ValueError, match=r"brain/mask_4x\.npy.*\(240, 240\).*\(150, 150\)"):
        prepare_dataset(phase0_volumes, tmp_path / "ds", options)
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5: slices are \(150, 150\), mask .*brain/mask_4x\.npy"):
        register_papers_h5(prepared / "train", prepared / "validation", {"4x": brain}, tmp_path / "reg")
    assert leftovers(tmp_path) == []


def test_centred_mask_for_uncentred_kspace(prepared, cardiac_mask_4x, tmp_path):
    centred = tmp_path / "centred_4x.npy"
    np.save(centred, np.fft.fftshift(cardiac_mask_4x, axes=0))
    with pytest.raises(ValueError, match=r"centred_4x\.npy: the mask does not sample the k-space centre .*centred mask"):
        register_papers_h5(prepared / "train", prepared / "validation", {"4x": centred}, tmp_path / "reg")
    assert leftovers(tmp_path) == ["centred_4x.npy"]


def test_nan_volume_is_refused_and_prepare_leaves_nothing(phase0_volumes, tmp_path):
    images = phase0_volumes[0].images.copy()
    images[3, 70, 70] = np.nan
    with pytest.raises(ValueError, match="volume 'SCD0000101_phase00': images contain NaN"):
        Volume("SCD0000101_phase00", "SCD0000101", images)

    def reader():
        yield from phase0_volumes[1:3]
        yield Volume("SCD0000101_phase00", "SCD0000101", images)

    with pytest.raises(ValueError, match="SCD0000101_phase00"):
        prepare_dataset(reader(), tmp_path / "ds", PrepareOptions())
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [OSError("disk read failed"), KeyboardInterrupt()])
def test_reader_failing_midway_leaves_nothing(phase0_volumes, tmp_path, error):
    def reader():
        yield from phase0_volumes[:2]
        raise error

    with pytest.raises(type(error)):
        prepare_dataset(reader(), tmp_path / "ds", PrepareOptions(accelerations=("4x", "5x")))
    assert leftovers(tmp_path) == []  # neither ds nor .ds.*.partial


def test_empty_split_directory(prepared, cardiac_mask_4x, tmp_path):
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "mask.npy", cardiac_mask_4x)
    with pytest.raises(ValueError, match=r"empty: no \.h5 files for the validation split"):
        register_papers_h5(prepared / "train", tmp_path / "empty", {"4x": tmp_path / "mask.npy"}, tmp_path / "reg")
    assert not (tmp_path / "reg").exists()
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy, ignore=shutil.ignore_patterns("SCD0000401*"))
    with pytest.raises(ValueError, match=r"copy/validation: the validation split is empty"):
        load_split(copy, "validation")


def test_same_directory_for_both_splits_is_refused(prepared, shared_dir, tmp_path):
    mask = {"4x": shared_dir / "masks/cardiac/mask_4x.npy"}
    with pytest.raises(ValueError, match="both train and validation"):
        register_papers_h5(prepared / "train", prepared / "train/../train", mask, tmp_path / "reg")
    copy_volume(prepared, tmp_path / "other")
    with pytest.raises(ValueError, match=r"SCD0000101_phase00'\] are in both"):
        register_papers_h5(prepared / "train", tmp_path / "other", mask, tmp_path / "reg")
    assert not (tmp_path / "reg").exists()


def test_destination_already_exists(phase0_volumes, prepared, shared_dir, tmp_path):
    destination = tmp_path / "ds"
    destination.mkdir()
    (destination / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"ds: already exists"):
        prepare_dataset(phase0_volumes, destination, PrepareOptions())
    with pytest.raises(ValueError, match=r"ds: already exists"):
        register_papers_h5(
            prepared / "train", prepared / "validation", {"4x": shared_dir / "masks/cardiac/mask_4x.npy"}, destination
        )
    assert leftovers(tmp_path) == ["ds"] and leftovers(destination) == ["keep.txt"]


def test_unknown_mask_kind(phase0_volumes, tmp_path):
    with pytest.raises(ValueError, match="mask kind 'gaussian'"):
        make_mask("gaussian", "4x", (150, 150))
    with pytest.raises(ValueError, match="mask kind 'gaussian'"):
        prepare_dataset(phase0_volumes, tmp_path / "ds", PrepareOptions(mask="gaussian"))
    with pytest.raises(ValueError, match="no papers' mask for 8x at 150"):
        prepare_dataset(phase0_volumes, tmp_path / "ds", PrepareOptions(accelerations=("8x",)))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("text", ["fast", "", "x", "0.5x", "nan", "inf"])
def test_unknown_acceleration(phase0_volumes, prepared, tmp_path, text):
    with pytest.raises(ValueError, match=rf"acceleration {text!r}"):
        layout.parse_acceleration(text)
    with pytest.raises(ValueError, match=rf"acceleration {text!r}"):
        make_mask("recipe", text, (150, 150))
    with pytest.raises(ValueError, match=rf"acceleration {text!r}"):
        prepare_dataset(phase0_volumes, tmp_path / "ds", PrepareOptions(accelerations=("4x", text)))
    with pytest.raises(ValueError, match=rf"acceleration {text!r}"):
        load_split(prepared, "train", text)
    assert leftovers(tmp_path) == []


def test_acceleration_spellings_agree():
    assert [layout.parse_acceleration(a) for a in ("4", "4x", " 4X ", 4, "4.0")] == ["4x"] * 5
    np.testing.assert_array_equal(make_mask("papers", "4", (150, 150)), make_mask("papers", "4x", (150, 150)))


def test_no_acceleration(phase0_volumes, tmp_path):
    with pytest.raises(ValueError, match="no acceleration"):
        prepare_dataset(phase0_volumes, tmp_path / "ds", PrepareOptions(accelerations=()))
    assert leftovers(tmp_path) == []


def test_crop_larger_than_slices_names_volume(phase0_volumes, tmp_path):
    with pytest.raises(ValueError, match=r"volume 'SCD0000101_phase00': cannot crop 150×150 slices to 160×160"):
        prepare_dataset(phase0_volumes, tmp_path / "ds", PrepareOptions(crop=160, mask="recipe"))
    assert leftovers(tmp_path) == []


def test_load_split_without_manifest(prepared, tmp_path):
    with pytest.raises(ValueError, match=rf"{tmp_path}: not a kdrecon dataset \(no dataset.json"):
        load_split(tmp_path, "train")
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"dataset\.json: not valid JSON"):
        load_split(tmp_path, "train")
    (tmp_path / "dataset.json").write_text("[]")
    with pytest.raises(ValueError, match=r"dataset\.json: not a kdrecon dataset manifest"):
        load_split(tmp_path, "train")
    with pytest.raises(ValueError, match=r"no split 'test'"):
        load_split(prepared, "test")
    with pytest.raises(ValueError, match=r"no 8x data"):
        load_split(prepared, "train", "8x")


def test_load_split_with_missing_mask_file(prepared, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy, ignore=shutil.ignore_patterns("SCD00001*", "SCD00002*", "SCD00003*"))
    os.remove(copy / "masks/mask_5x.npy")
    with pytest.raises(ValueError, match=r"masks/mask_5x\.npy: the 5x mask named in dataset\.json is missing"):
        load_split(copy, "validation", "5x")
    assert len(load_split(copy, "validation", "4x")) == 4 * slice_count("SCD0000401")


def test_debris_of_a_killed_write_is_removed_and_nothing_else(tmp_path):
    from kdrecon.data.layout import atomic_path, remove_debris

    kept = [tmp_path / "best.pt", tmp_path / "notes.partial", tmp_path / "sub" / ".hidden"]
    debris = [tmp_path / ".best.pt.k2j4.partial", tmp_path / ".volume.nii.gz.x9.partial.nii.gz",
              tmp_path / "sub" / ".metrics.csv.a1.partial", tmp_path / ".data.q7.partial" / "train" / "v.h5"]
    for path in kept + debris:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    with atomic_path(tmp_path / "report.md") as temporary:  # the debris pattern is how atomic writes name temporaries
        assert remove_debris(tmp_path, "report.md", recursive=False) == [temporary]
        temporary.write_text("y")
    assert remove_debris(tmp_path, "best.pt", recursive=False) == [debris[0]]  # only that file's
    removed = remove_debris(tmp_path)
    assert sorted(removed) == sorted([debris[1], debris[2], tmp_path / ".data.q7.partial"])
    assert all(path.exists() for path in kept) and not any(path.exists() for path in debris)
