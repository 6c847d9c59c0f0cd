"""Shared fixtures: real Sunnybrook slices and the papers' masks from ``../shared``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests need ../shared beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def real_slices(shared_dir: Path) -> np.ndarray:
    """Eight real cardiac frames, 150×150 centre crops, float64, each scaled to max 1."""
    images = np.load(shared_dir / "data/sunnybrook/fixture_8slices.npz")["images"]
    crops = images[:, 53:203, 53:203].astype(np.float64)
    return crops / crops.max(axis=(1, 2), keepdims=True)


@pytest.fixture(scope="session")
def cardiac_mask_4x(shared_dir: Path) -> np.ndarray:
    """The papers' 150×150 4x cardiac mask, un-centred layout, float64 0/1."""
    return np.load(shared_dir / "masks/cardiac/mask_4x.npy")


def small_split(split: str, size: int = 64, phases: tuple[int, ...] = (0, 10)):
    """Real Sunnybrook slices of the embedded sample, centre-cropped to ``size`` and 4x undersampled.

    Small enough to train a tiny network for hundreds of steps in seconds; train subjects 101,
    201, 301 and validation subject 401 as in the papers' split.
    """
    import torch

    from kdrecon.data.dataset import SAMPLE_VALIDATION_SUBJECTS, SliceData, VolumeIndex, sample_directory
    from kdrecon.data.prepare import make_mask, prepare_volume
    from kdrecon.data.sources import sunnybrook

    mask = make_mask("recipe", "4x", (size, size), seed=42)
    targets, zero_filled, kspace, index = [], [], [], []
    for volume in sunnybrook.read_volumes(sample_directory(), phases=phases):
        if (volume.subject in SAMPLE_VALIDATION_SUBJECTS) != (split == "validation"):
            continue
        target, undersampled, _ = prepare_volume(volume, size, {"4x": mask})
        start = sum(len(t) for t in targets)
        index.append(VolumeIndex(volume.name, start, start + len(target)))
        targets.append(target)
        zero_filled.append(undersampled["4x"][0])
        kspace.append(undersampled["4x"][1])
    return SliceData(
        zero_filled=torch.from_numpy(np.concatenate(zero_filled)).unsqueeze(1),
        kspace=torch.from_numpy(np.concatenate(kspace)),
        mask=torch.from_numpy(mask),
        target=torch.from_numpy(np.concatenate(targets)).unsqueeze(1),
        volumes=tuple(index),
        acceleration="4x",
    )


@pytest.fixture(scope="session")
def small_train():
    return small_split("train")


@pytest.fixture(scope="session")
def small_validation():
    return small_split("validation")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Real Sunnybrook slices (end-diastole), cropped to 48×48, in a prepared dataset directory."""
    from kdrecon.data.dataset import sample_directory
    from kdrecon.data.prepare import PrepareOptions, prepare_dataset
    from kdrecon.data.sources import sunnybrook

    volumes = sunnybrook.read_volumes(sample_directory(), phases=[0])
    options = PrepareOptions(crop=48, mask="recipe", validation_subjects=["SCD0000401"])
    return prepare_dataset(volumes, tmp_path_factory.mktemp("data") / "tiny", options)


#: The feature stage of the tiny experiments' two-stage distillations (their other epoch follows).
TWO_STAGE = {"epochs.feature_stage": 1}


@pytest.fixture(scope="session")
def tiny_overrides(tiny_dataset) -> dict:
    """Settings that shrink the demo preset to seconds on ``tiny_dataset``: small networks, 2
    epochs per stage, float32. A test with two-stage distillations adds :data:`TWO_STAGE`."""
    return {
        "name": "tiny", "data.dataset": str(tiny_dataset), "teacher": "D3C3", "student": "D2C3", "channels": 8,
        "optimization.epochs": 2, "optimization.batch_size": 8,
        "epochs.distillation": 2, "report.figure_slices": 1, "precision": "fp32", "report.timing_rounds": 5,
        "report.bootstrap_resamples": 1000,
    }


#: The seeds of ``tiny_run``.
TINY_RUN_SEEDS = [1, 2]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_overrides) -> Path:
    """The tiny demo experiment run end to end for :data:`TINY_RUN_SEEDS`; copy it before changing it."""
    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.runner import run_experiment

    run_dir = tmp_path_factory.mktemp("experiment") / "run"
    run_experiment(load_experiment("demo", {"seeds": TINY_RUN_SEEDS, **tiny_overrides}), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def tiny_super_resolution_dataset(tmp_path_factory):
    """The same real slices as ``tiny_dataset`` (48×48) prepared for 4x super-resolution (12×12 kept)."""
    from kdrecon.data.dataset import sample_directory
    from kdrecon.data.prepare import PrepareOptions, prepare_dataset
    from kdrecon.data.sources import sunnybrook

    volumes = sunnybrook.read_volumes(sample_directory(), phases=[0])
    options = PrepareOptions(crop=48, validation_subjects=["SCD0000401"], task="super-resolution")
    return prepare_dataset(volumes, tmp_path_factory.mktemp("data") / "tiny-sr", options)


PHANTOM_KSPACE = "data/twix-gre-phantom/gre_kspace.npy"
#: Sub-crops of the phantom's 160×160 coil images that make the tiny complex dataset: 48×48 at 9 places.
PHANTOM_CROP, PHANTOM_OFFSETS = 48, (16, 56, 96)


@pytest.fixture(scope="session")
def phantom_coil_images(shared_dir: Path) -> np.ndarray:
    """The real phantom acquisition's two coil images, ``(2, 160, 160)`` complex, by the recipe of its
    README in NumPy (centred inverse FFT over lines and readout, central half of the readout)."""
    kspace = np.load(shared_dir / PHANTOM_KSPACE)
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(0, 2)), axes=(0, 2)), axes=(0, 2))
    return np.moveaxis(images[:, :, 80:240], 1, 0)


@pytest.fixture(scope="session")
def complex_dataset(tmp_path_factory, shared_dir: Path):
    """A tiny complex dataset from the real phantom k-space: each coil a volume of 9 sub-crops
    (48×48, scaled to max 1), 4x equispaced lines; coil 0 trains, coil 1 validates."""
    from kdrecon.data.prepare import PrepareOptions, prepare_dataset
    from kdrecon.data.sources import raw_kspace
    from kdrecon.data.volume import Volume

    volumes = []
    for coil in raw_kspace.read_volumes(shared_dir / PHANTOM_KSPACE):
        image = coil.images[0]
        crops = [image[top : top + PHANTOM_CROP, left : left + PHANTOM_CROP] for top in PHANTOM_OFFSETS for left in PHANTOM_OFFSETS]
        volumes.append(Volume(coil.name, coil.subject, np.stack(crops)))
    options = PrepareOptions(crop=None, mask="equispaced", validation_subjects=[volumes[1].subject])
    return prepare_dataset(volumes, tmp_path_factory.mktemp("data") / "complex", options)
