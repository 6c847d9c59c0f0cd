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

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kdrecon.data import layout
from kdrecon.data import image as image_kinds
from kdrecon.data.integrity import FIXED_MASK_TOLERANCE, acceleration_tolerance, check_mask, check_volume
from kdrecon.data.package_files import package_resource
from kdrecon.data.task import MANIFEST_KEY, RECONSTRUCTION, SUPER_RESOLUTION, TASKS, factor_of
from kdrecon.data.volume import Volume
from kdrecon.mri import masks as mask_generators
from kdrecon.mri.resolution import IndivisibleSize, low_pass_mask
from kdrecon.mri.undersample import undersample

MANIFEST = "dataset.json"
#: The manifest key holding a digest of the volumes' targets as written (:func:`content_digest`).
CONTENT = "content"
SPLITS = ("train", "validation")
#: The manifest's ``source`` of a dataset prepared without naming one (through the API).
UNKNOWN_SOURCE = "unknown"
MASK_KINDS = ("papers", "recipe", "random", "equispaced")
#: The mask kind of a super-resolution dataset: the central block of k-space.
LOW_PASS = "low-pass"


def papers_mask_file(size: int, acceleration: str) -> Path:
    """Path of the papers' fixed mask embedded in the package (cardiac 150², brain 240²)."""
    anatomy = {150: "cardiac", 240: "brain"}.get(size)
    path = package_resource("masks", str(anatomy), f"mask_{acceleration}.npy")
    if anatomy is None or not path.is_file():
        raise ValueError(
            f"no papers' mask for {acceleration} at {size}×{size} (they exist for 150 and 240, 4x and 5x): "
            "use mask kind 'recipe', 'random' or 'equispaced'"
        )
    return path


#: The seed of generated masks and the fully sampled centre of fastMRI's random and equispaced ones,
#: when not given.
MASK_SEED, CENTER_FRACTION = 42, 0.08
#: The parameters each generated mask kind is made with: ``papers`` and ``.npy`` masks are fixed files,
#: and the recipe has its own centre block.
MASK_PARAMETERS = {"recipe": ("seed",), "random": ("seed", "center_fraction"), "equispaced": ("seed", "center_fraction")}
_PARAMETER_DEFAULTS = {"seed": MASK_SEED, "center_fraction": CENTER_FRACTION}
#: The ``kdrecon prepare`` option of each parameter, and why a mask that does not use it refuses it.
_PARAMETER_OPTIONS = {"seed": ("--mask-seed", "is fixed, not drawn"),
                      "center_fraction": ("--center-fraction", "has its own centre")}


def mask_parameters(kind: str, seed: int | None = None, center_fraction: float | None = None) -> dict:
    """The parameters the mask ``kind`` is made with, a default where one is not given (None).

    Raises ValueError for an unknown kind, or a parameter given that the kind does not use.
    """
    if kind not in MASK_KINDS and not kind.endswith(".npy"):
        raise ValueError(f"mask kind {kind!r}: expected one of {', '.join(MASK_KINDS)} or a path to a .npy file")
    given = {"seed": seed, "center_fraction": center_fraction}
    used = MASK_PARAMETERS.get(kind, ())
    for name, value in given.items():
        if value is not None and name not in used:
            option, reason = _PARAMETER_OPTIONS[name]
            mask = f"the mask file {kind}" if kind.endswith(".npy") else f"the {kind} mask"
            raise ValueError(f"{option}: {mask} {reason}; leave it out")
    return {name: _PARAMETER_DEFAULTS[name] if given[name] is None else given[name] for name in used}


def make_mask(
    kind: str,
    acceleration: str,
    shape: tuple[int, int],
    seed: int | None = None,
    center_fraction: float | None = None,
) -> np.ndarray:
    """Build an un-centred ``(H, W)`` float32 mask of the given kind for one acceleration.

    ``papers`` loads the papers' fixed masks, ``recipe`` generates one with the papers' recipe,
    ``random`` and ``equispaced`` use fastMRI's generators; a path to a ``.npy`` file loads it
    (un-centred layout expected). ``seed`` and ``center_fraction`` are as :func:`mask_parameters`.
    """
    acceleration = layout.parse_acceleration(acceleration)
    factor = float(acceleration.removesuffix("x"))
    parameters = mask_parameters(kind, seed, center_fraction)
    seed, center_fraction = parameters.get("seed"), parameters.get("center_fraction")
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
    else:  # a .npy file: mask_parameters refused anything else
        mask = mask_generators.load_mask(Path(kind))
    values = mask.uncentred().values.astype(np.float32)
    if values.shape != tuple(shape):
        raise ValueError(f"mask {kind!r} for {acceleration} has shape {values.shape}, images are {tuple(shape)}")
    check_mask(values, acceleration, RECONSTRUCTION, kind if kind.endswith(".npy") else f"the {kind} mask",
               acceleration_tolerance(kind))
    return values


def centre_crop(images: np.ndarray, size: int | None) -> np.ndarray:
    """Centre crop ``(S, H, W)`` to ``(S, size, size)``; ``None`` keeps the full slices."""
    if size is None:
        return images
    height, width = images.shape[-2:]
    if size < 1:
        raise ValueError(f"crop size {size}: must be positive (or None for no crop)")
    if height < size or width < size:
        raise ValueError(f"cannot crop {height}×{width} slices to {size}×{size}")
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size]


def crop_volume(volume: Volume, size: int | None) -> np.ndarray:
    """:func:`centre_crop` of a volume's images; an error names the volume."""
    try:
        return centre_crop(volume.images, size)
    except ValueError as error:
        raise ValueError(f"volume {volume.name!r}: {error}") from None


def scale_slices(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale each slice to maximum magnitude 1 (the papers' recipe); return the scaled non-empty slices
    (float32, or complex64 for complex images) and a keep flag."""
    maxima = np.abs(images).max(axis=(1, 2))
    keep = maxima > 0
    dtype = np.complex64 if np.iscomplexobj(images) else np.float32
    return (images[keep] / maxima[keep, None, None]).astype(dtype), keep


def simulate(target: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-filled magnitude and masked un-centred k-space for ``(S, H, W)`` targets."""
    kspace, zero_filled = undersample(torch.from_numpy(target), torch.from_numpy(mask))
    return zero_filled.numpy(), kspace.numpy()


def prepare_volume(
    volume: Volume, crop: int | None, masks: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Crop, scale and undersample one volume for every mask.

    Returns ``(target, {acceleration: (zero_filled, kspace)}, skipped)``, arrays ``(S, H, W)``; the
    target is complex for a complex volume (the zero-filled image is always the magnitude);
    ``skipped`` counts all-zero slices dropped (they have no max to scale by).
    """
    target, keep = scale_slices(crop_volume(volume, crop))
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
    mask_seed: int | None = None  # None: MASK_SEED where the mask kind is seeded
    center_fraction: float | None = None  # None: CENTER_FRACTION where the mask kind takes one
    validation_subjects: Sequence[str] = ()
    validation_fraction: float = 0.25
    source: str = UNKNOWN_SOURCE
    task: str = RECONSTRUCTION
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r}: expected one of {', '.join(TASKS)}")
        # Named as the command line names them: these come from `kdrecon prepare` options.
        if self.task == SUPER_RESOLUTION:
            given = {"--mask": self.mask != "papers", "--mask-seed": self.mask_seed is not None,
                     "--center-fraction": self.center_fraction is not None}
            refused = next((option for option, is_given in given.items() if is_given), None)
            if refused:
                raise ValueError(f"{refused}: super-resolution keeps the central block of k-space; it takes no mask")
        mask_parameters(self.mask, self.mask_seed, self.center_fraction)  # refuses what the mask kind does not use
        if self.mask_seed is not None and not 0 <= self.mask_seed < 2**32:
            raise ValueError(f"--mask-seed {self.mask_seed}: must be between 0 and 2**32 - 1")
        if self.center_fraction is not None and not 0 < self.center_fraction < 1:
            raise ValueError(f"--center-fraction {self.center_fraction}: must be between 0 and 1")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"--validation-fraction {self.validation_fraction}: must be between 0 and 1")
        if self.crop is not None and self.crop < 1:
            raise ValueError(f"--crop {self.crop}: must be positive (or 0 on the command line for no crop)")

    def make_mask(self, acceleration: str, shape: tuple[int, int]) -> np.ndarray:
        """The un-centred mask of one acceleration: a line mask, or the low-pass box of super-resolution."""
        if self.task == SUPER_RESOLUTION:
            try:
                return low_pass_mask(shape, factor_of(acceleration))
            except IndivisibleSize as error:
                raise ValueError(f"{error}; choose a --crop that the factor divides") from None
        return make_mask(self.mask, acceleration, shape, self.mask_seed, self.center_fraction)

    def mask_description(self) -> dict:
        """How the masks were made, for the manifest."""
        if self.task == SUPER_RESOLUTION:
            return {"kind": LOW_PASS}
        return {"kind": self.mask, **mask_parameters(self.mask, self.mask_seed, self.center_fraction)}


def split_subjects(subjects: Iterable[str], options: PrepareOptions) -> dict[str, list[str]]:
    """Assign subjects (never slices) to train and validation."""
    subjects = sorted(set(subjects))
    wanted = options.validation_subjects
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    if wanted:
        unknown = sorted(set(wanted) - set(subjects))
        if unknown:
            raise ValueError(f"validation subjects {unknown} not found among {subjects}")
        validation = sorted(set(wanted))
    else:
        if not 0 < options.validation_fraction < 1:
            raise ValueError(f"validation_fraction {options.validation_fraction}: must lie strictly between 0 and 1")
        # round first: 0.07 * 100 is 7.000000000000001 in floating point and must not become 8
        count = max(1, math.ceil(round(options.validation_fraction * len(subjects), 9)))
        validation = subjects[-count:]
    train = [s for s in subjects if s not in validation]
    if not train or not validation:
        raise ValueError(f"split of subjects {subjects} leaves an empty split (train {train}, validation {validation})")
    return {"train": train, "validation": validation}


@contextmanager
def staging_directory(destination: Path) -> Iterator[Path]:
    """Yield an empty ``.partial`` directory beside ``destination``; rename it into place on success.

    On any error the staging directory is removed, so ``destination`` either appears complete
    or not at all. The directory gets ordinary permissions (``0o777`` less the umask), not
    the owner-only ``0o700`` of :func:`tempfile.mkdtemp`.
    """
    destination = Path(destination)
    if destination.exists():
        raise ValueError(f"{destination}: already exists; choose a new dataset directory")
    destination.parent.mkdir(parents=True, exist_ok=True)
    layout.remove_debris(destination.parent, destination.name, recursive=False)  # of a killed earlier attempt
    staging = Path(tempfile.mkdtemp(prefix=layout.partial_name(destination), suffix=layout.PARTIAL_SUFFIX,
                                    dir=destination.parent))
    try:
        os.chmod(staging, 0o777 & ~layout.current_umask())
        yield staging
        if destination.exists():
            raise ValueError(f"{destination}: appeared while the dataset was being written; nothing was moved there")
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def parse_accelerations(accelerations: Iterable[str]) -> list[str]:
    """Normalised accelerations in the given order, each once; at least one."""
    parsed = list(dict.fromkeys(layout.parse_acceleration(a) for a in accelerations))
    if not parsed:
        raise ValueError("no acceleration given (e.g. 4x)")
    return parsed


@dataclass
class _WrittenVolumes:
    """What writing the volumes into a staging directory found out."""

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    subject_of: dict[str, str] = field(default_factory=dict)  # volume name → subject
    kinds: set[str] = field(default_factory=set)  # magnitude and/or complex
    skipped_slices: int = 0
    digests: dict[str, str] = field(default_factory=dict)  # volume name → digest of its arrays


def volume_digest(target: np.ndarray) -> str:
    """SHA-256 of one volume's target as written (float32, or complex64 for complex images). Only the
    target: read, cropped and scaled by exact operations, it is the same bits on every machine, where
    the zero-filled images and k-space pass through an FFT whose last bits depend on the library and
    CPU (and follow from the target and the masks, which the identity hashes already)."""
    array = np.ascontiguousarray(target.astype(np.complex64 if np.iscomplexobj(target) else np.float32))
    return hashlib.sha256(str(array.shape).encode() + array.tobytes()).hexdigest()


def content_digest(digests: dict[str, str]) -> str:
    """One digest of every volume's (``{name: volume_digest}``): what the dataset holds, whatever
    reader options, phases or files produced it."""
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()


def _write_volumes(volumes: Iterable[Volume], directory: Path, options: PrepareOptions,
                   accelerations: list[str]) -> _WrittenVolumes:
    """Prepare each volume and write it to ``directory``; the masks are made for the first one's size."""
    written = _WrittenVolumes()
    for volume in tqdm(volumes, desc="prepare", unit="volume", disable=None):
        if volume.name in written.subject_of:
            raise ValueError(f"volume name {volume.name!r} appears twice")
        if not written.masks:
            shape = crop_volume(volume, options.crop).shape[1:]
            written.masks = {a: options.make_mask(a, shape) for a in accelerations}
        target, undersampled, skipped = prepare_volume(volume, options.crop, written.masks)
        written.skipped_slices += skipped
        layout.write_volume(directory / f"{volume.name}.h5", target, undersampled)
        written.digests[volume.name] = volume_digest(target)
        written.subject_of[volume.name] = volume.subject
        written.kinds.add(image_kinds.COMPLEX if volume.is_complex else image_kinds.MAGNITUDE)
        if len(written.kinds) > 1:
            raise ValueError(f"volume {volume.name!r}: a dataset holds magnitude or complex images, not both")
    if not written.subject_of:
        raise ValueError("no volumes to prepare")
    return written


def _manifest(options: PrepareOptions, accelerations: list[str], written: _WrittenVolumes,
              splits: dict[str, list[str]]) -> dict:
    return {
        "format": "kdrecon-dataset",
        "version": 1,
        "source": options.source,
        MANIFEST_KEY: options.task,
        **({image_kinds.MANIFEST_KEY: image_kinds.COMPLEX} if image_kinds.COMPLEX in written.kinds else {}),
        "accelerations": accelerations,
        "crop": options.crop,
        "mask": options.mask_description(),
        "masks": {a: f"masks/mask_{a}.npy" for a in accelerations},
        "splits": {split: {"directory": split, "subjects": subjects} for split, subjects in splits.items()},
        "skipped_empty_slices": written.skipped_slices,
        CONTENT: content_digest(written.digests),
        **options.extra,
    }


def prepare_dataset(volumes: Iterable[Volume], destination: Path, options: PrepareOptions) -> Path:
    """Crop, scale, undersample and write ``volumes`` as a dataset directory at ``destination``.

    Returns the dataset directory. ``destination`` must not exist yet; it appears only once
    everything has been written.
    """
    destination = Path(destination)
    if destination.exists():
        raise ValueError(f"{destination}: already exists; choose a new dataset directory")
    accelerations = parse_accelerations(options.accelerations)
    with staging_directory(destination) as staging:
        (staging / "volumes").mkdir()
        written = _write_volumes(volumes, staging / "volumes", options, accelerations)
        splits = split_subjects(written.subject_of.values(), options)
        for split, subjects in splits.items():
            (staging / split).mkdir()
            for name, subject in written.subject_of.items():
                if subject in subjects:
                    os.replace(staging / "volumes" / f"{name}.h5", staging / split / f"{name}.h5")
        (staging / "volumes").rmdir()
        (staging / "masks").mkdir()
        for acceleration, mask in written.masks.items():
            np.save(staging / "masks" / f"mask_{acceleration}.npy", mask)
        manifest = _manifest(options, accelerations, written, splits)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
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
    directories in place; the two splits must not share a directory or a volume name.
    """
    destination = Path(destination)
    if destination.exists():
        raise ValueError(f"{destination}: already exists; choose a new dataset directory")
    masks = load_mask_files(mask_files)
    directories = {split: Path(d).resolve() for split, d in zip(SPLITS, (train_directory, validation_directory))}
    if directories["train"] == directories["validation"]:
        raise ValueError(f"{directories['train']}: given for both train and validation; the splits must be disjoint")
    splits = {}
    for split, directory in directories.items():
        files = sorted(directory.glob("*.h5"))
        if not files:
            raise ValueError(f"{directory}: no .h5 files for the {split} split")
        for file in tqdm(files, desc=f"check {split}", unit="volume", disable=None):
            for acceleration, (mask_path, mask) in masks.items():
                check_papers_file(file, acceleration, mask, mask_path)
        splits[split] = {"directory": str(directory), "subjects": [f.stem for f in files]}
    shared = sorted(set(splits["train"]["subjects"]) & set(splits["validation"]["subjects"]))
    if shared:
        raise ValueError(f"volumes {shared} are in both {directories['train']} and {directories['validation']}")
    with staging_directory(destination) as staging:
        (staging / "masks").mkdir()
        for acceleration, (_, mask) in masks.items():
            np.save(staging / "masks" / f"mask_{acceleration}.npy", mask)
        manifest = {
            "format": "kdrecon-dataset",
            "version": 1,
            "source": "papers-h5",
            "accelerations": list(masks),
            "crop": None,
            "mask": {"kind": "files", "files": {a: str(path.resolve()) for a, (path, _) in masks.items()}},
            "masks": {a: f"masks/mask_{a}.npy" for a in masks},
            "splits": splits,
            "skipped_empty_slices": 0,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return destination


def load_mask_files(mask_files: dict[str, Path]) -> dict[str, tuple[Path, np.ndarray]]:
    """``{acceleration: path}`` to ``{normalised acceleration: (path, un-centred float32 mask)}``."""
    if not mask_files:
        raise ValueError("papers-h5 needs at least one mask file (acceleration=path)")
    masks = {}
    for acceleration, path in mask_files.items():
        key, path = layout.parse_acceleration(acceleration), Path(path)
        if key in masks:
            raise ValueError(f"mask file {path}: a mask for {key} is already given ({masks[key][0]})")
        if path.suffix != ".npy":
            raise ValueError(f"mask file {path}: expected a .npy file")
        masks[key] = (path, mask_generators.load_mask(path).uncentred().values.astype(np.float32))
        check_mask(masks[key][1], key, RECONSTRUCTION, path, FIXED_MASK_TOLERANCE)
    return masks


def check_papers_file(file: Path, acceleration: str, mask: np.ndarray, mask_path: Path) -> None:
    """Check one papers'-layout file against the (un-centred) mask of one acceleration."""
    arrays = layout.read_volume(file, acceleration)
    if arrays.target.shape[1:] != mask.shape:
        shapes = f"slices are {arrays.target.shape[1:]}, mask {mask_path} for {acceleration} is {mask.shape}"
        raise ValueError(f"{file}: {shapes}")
    check_volume(arrays.target, arrays.zero_filled, arrays.kspace, mask, f"{file} ({acceleration}, mask {mask_path})")
