"""Turn magnitude volumes into a training-ready dataset directory in the papers' h5 layout.

A dataset directory holds ``train/*.h5`` and ``validation/*.h5`` (one file per volume, see
:mod:`kdrecon.data.layout`), the un-centred masks ``masks/mask_{acc}.npy`` and a manifest
``dataset.json``. It is built in a staging directory and renamed into place at the end, so an
interrupted preparation leaves nothing half written.

Preparation of one volume follows the papers: centre crop, scale each slice to max 1, simulate
single-coil k-space ``k = M ⊙ fft2(x)`` (orthonormal, un-centred) and the zero-filled
magnitude ``|ifft2(k)|``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kdrecon.data import layout
from kdrecon.data.volume import Volume
from kdrecon.mri import masks as mask_generators
from kdrecon.mri.undersample import undersample

MANIFEST = "dataset.json"
SPLITS = ("train", "validation")
MASK_KINDS = ("papers", "recipe", "random", "equispaced")


def papers_mask_file(size: int, acceleration: str) -> Path:
    """Path of the papers' fixed mask embedded in the package (cardiac 150², brain 240²)."""
    anatomy = {150: "cardiac", 240: "brain"}.get(size)
    path = resources.files("kdrecon") / "resources" / "masks" / str(anatomy) / f"mask_{acceleration}.npy"
    if anatomy is None or not path.is_file():
        raise ValueError(
            f"no papers' mask for {acceleration} at {size}×{size} (they exist for 150 and 240, 4x and 5x): "
            "use mask kind 'recipe', 'random' or 'equispaced'"
        )
    return Path(str(path))


def make_mask(
    kind: str,
    acceleration: str,
    shape: tuple[int, int],
    seed: int = 42,
    center_fraction: float = 0.08,
) -> np.ndarray:
    """Build an un-centred ``(H, W)`` float32 mask of the given kind for one acceleration.

    ``papers`` loads the papers' fixed masks, ``recipe`` generates one with the papers' recipe,
    ``random`` and ``equispaced`` use fastMRI's generators; a path to a ``.npy`` file loads it
    (un-centred layout expected).
    """
    factor = float(acceleration.removesuffix("x"))
    if kind == "papers":
        if shape[0] != shape[1]:
            raise ValueError(f"the papers' masks are square; images are {shape}")
        mask = mask_generators.load_mask(papers_mask_file(shape[0], acceleration))
    elif kind == "recipe":
        if shape[0] != shape[1]:
            raise ValueError(f"the papers' recipe makes square masks; images are {shape}")
        mask = mask_generators.papers_mask(shape[0], factor, seed=seed)
    elif kind == "random":
        mask = mask_generators.random_mask(shape, center_fraction, factor, seed=seed)
    elif kind == "equispaced":
        mask = mask_generators.equispaced_mask(shape, center_fraction, factor, seed=seed)
    elif kind.endswith(".npy"):
        mask = mask_generators.load_mask(Path(kind))
    else:
        raise ValueError(f"mask kind {kind!r}: expected one of {', '.join(MASK_KINDS)} or a path to a .npy file")
    values = mask.uncentred().values.astype(np.float32)
    if values.shape != tuple(shape):
        raise ValueError(f"mask {kind!r} for {acceleration} has shape {values.shape}, images are {tuple(shape)}")
    return values


def centre_crop(images: np.ndarray, size: int | None) -> np.ndarray:
    """Centre crop ``(S, H, W)`` to ``(S, size, size)``; ``None`` keeps the full slices."""
    if size is None:
        return images
    height, width = images.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"cannot crop {height}×{width} slices to {size}×{size}")
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size]


def scale_slices(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale each slice to max 1 (the papers' recipe); return the scaled non-empty slices and a keep flag."""
    maxima = images.max(axis=(1, 2))
    keep = maxima > 0
    return (images[keep] / maxima[keep, None, None]).astype(np.float32), keep


def simulate(target: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-filled magnitude and masked un-centred k-space for ``(S, H, W)`` targets."""
    kspace, zero_filled = undersample(torch.from_numpy(target), torch.from_numpy(mask))
    return zero_filled.numpy(), kspace.numpy()


def prepare_volume(
    volume: Volume, crop: int | None, masks: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Crop, scale and undersample one volume for every mask.

    Returns ``(target, {acceleration: (zero_filled, kspace)}, skipped)``, arrays ``(S, H, W)``;
    ``skipped`` counts all-zero slices dropped (they have no max to scale by).
    """
    target, keep = scale_slices(centre_crop(volume.images, crop))
    if len(target) == 0:
        raise ValueError(f"volume {volume.name!r}: every slice is empty")
    undersampled = {}
    for acceleration, mask in masks.items():
        if mask.shape != target.shape[1:]:
            raise ValueError(
                f"volume {volume.name!r}: slices are {target.shape[1:]}, the {acceleration} mask is {mask.shape}; "
                "choose a crop size so all volumes match the mask"
            )
        undersampled[acceleration] = simulate(target, mask)
    return target, undersampled, int((~keep).sum())


@dataclass
class PrepareOptions:
    """How volumes become a dataset. ``validation_subjects`` wins over ``validation_fraction``."""

    accelerations: Sequence[str] = ("4x",)
    crop: int | None = 150
    mask: str = "papers"
    mask_seed: int = 42
    center_fraction: float = 0.08
    validation_subjects: Sequence[str] = ()
    validation_fraction: float = 0.25
    source: str = "unknown"
    extra: dict = field(default_factory=dict)


def split_subjects(subjects: Iterable[str], options: PrepareOptions) -> dict[str, list[str]]:
    """Assign subjects (never slices) to train and validation."""
    subjects = sorted(set(subjects))
    if options.validation_subjects:
        unknown = sorted(set(options.validation_subjects) - set(subjects))
        if unknown:
            raise ValueError(f"validation subjects {unknown} not found among {subjects}")
        validation = sorted(options.validation_subjects)
    else:
        count = max(1, math.ceil(options.validation_fraction * len(subjects)))
        validation = subjects[-count:]
    train = [s for s in subjects if s not in validation]
    if not train or not validation:
        raise ValueError(f"split of subjects {subjects} leaves an empty split (train {train}, validation {validation})")
    return {"train": train, "validation": validation}


def prepare_dataset(volumes: Iterable[Volume], destination: Path, options: PrepareOptions) -> Path:
    """Crop, scale, undersample and write ``volumes`` as a dataset directory at ``destination``.

    Returns the dataset directory. ``destination`` must not exist yet; it appears only once
    everything has been written.
    """
    destination = Path(destination)
    if destination.exists():
        raise ValueError(f"{destination}: already exists; choose a new dataset directory")
    accelerations = [layout.parse_acceleration(a) for a in options.accelerations]
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    try:
        masks: dict[str, np.ndarray] = {}
        subject_of: dict[str, str] = {}
        skipped_slices = 0
        (staging / "volumes").mkdir()
        for volume in tqdm(volumes, desc="prepare", unit="volume"):
            if volume.name in subject_of:
                raise ValueError(f"volume name {volume.name!r} appears twice")
            if not masks:
                shape = centre_crop(volume.images, options.crop).shape[1:]
                masks = {
                    a: make_mask(options.mask, a, shape, options.mask_seed, options.center_fraction) for a in accelerations
                }
            target, undersampled, skipped = prepare_volume(volume, options.crop, masks)
            skipped_slices += skipped
            layout.write_volume(staging / "volumes" / f"{volume.name}.h5", target, undersampled)
            subject_of[volume.name] = volume.subject
        if not subject_of:
            raise ValueError("no volumes to prepare")
        splits = split_subjects(subject_of.values(), options)
        for split, subjects in splits.items():
            (staging / split).mkdir()
            for name, subject in subject_of.items():
                if subject in subjects:
                    os.replace(staging / "volumes" / f"{name}.h5", staging / split / f"{name}.h5")
        (staging / "volumes").rmdir()
        (staging / "masks").mkdir()
        for acceleration, mask in masks.items():
            np.save(staging / "masks" / f"mask_{acceleration}.npy", mask)
        manifest = {
            "format": "kdrecon-dataset",
            "version": 1,
            "source": options.source,
            "accelerations": accelerations,
            "crop": options.crop,
            "mask": {"kind": options.mask, "seed": options.mask_seed, "center_fraction": options.center_fraction},
            "masks": {a: f"masks/mask_{a}.npy" for a in accelerations},
            "splits": {split: {"directory": split, "subjects": subjects} for split, subjects in splits.items()},
            "skipped_empty_slices": skipped_slices,
            **options.extra,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def register_papers_h5(
    train_directory: Path,
    validation_directory: Path,
    mask_files: dict[str, Path],
    destination: Path,
) -> Path:
    """Describe existing papers'-layout files as a dataset without copying them.

    Every file is opened and checked (keys, shapes, finite values, complex k-space, and that the
    k-space holds no energy in rows the mask does not sample). The manifest points at the
    directories in place.
    """
    destination = Path(destination)
    if destination.exists():
        raise ValueError(f"{destination}: already exists; choose a new dataset directory")
    if not mask_files:
        raise ValueError("papers-h5 needs at least one mask file (acceleration=path)")
    accelerations = {layout.parse_acceleration(a): Path(p) for a, p in mask_files.items()}
    masks = {}
    for acceleration, path in accelerations.items():
        if path.suffix != ".npy":
            raise ValueError(f"mask file {path}: expected a .npy file")
        masks[acceleration] = mask_generators.load_mask(path).uncentred().values.astype(np.float32)
    splits = {}
    for split, directory in zip(SPLITS, (train_directory, validation_directory)):
        directory = Path(directory).resolve()
        files = sorted(directory.glob("*.h5"))
        if not files:
            raise ValueError(f"{directory}: no .h5 files for the {split} split")
        for file in tqdm(files, desc=f"check {split}", unit="volume"):
            for acceleration, mask in masks.items():
                arrays = layout.read_volume(file, acceleration)
                if arrays.target.shape[1:] != mask.shape:
                    raise ValueError(f"{file}: slices are {arrays.target.shape[1:]}, mask for {acceleration} is {mask.shape}")
                outside = np.abs(arrays.kspace * (1 - mask)).max()
                if outside > 1e-6 * max(np.abs(arrays.kspace).max(), 1e-12):
                    raise ValueError(
                        f"{file}: {layout.kspace_key(acceleration)!r} has energy in rows the {acceleration} mask does not "
                        "sample (wrong mask, or a centred mask where the un-centred layout is expected)"
                    )
        splits[split] = {"directory": str(directory), "subjects": [f.stem for f in files]}
    destination.mkdir(parents=True)
    try:
        (destination / "masks").mkdir()
        for acceleration, mask in masks.items():
            np.save(destination / "masks" / f"mask_{acceleration}.npy", mask)
        manifest = {
            "format": "kdrecon-dataset",
            "version": 1,
            "source": "papers-h5",
            "accelerations": sorted(masks),
            "crop": None,
            "mask": {"kind": "files", "files": {a: str(p.resolve()) for a, p in accelerations.items()}},
            "masks": {a: f"masks/mask_{a}.npy" for a in masks},
            "splits": splits,
            "skipped_empty_slices": 0,
        }
        with layout.atomic_path(destination / MANIFEST) as temporary:
            temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    return destination
