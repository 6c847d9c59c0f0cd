"""In-memory slice data: every slice of a split loaded once into stacked tensors.

The papers' code reopened an h5 file and reloaded the mask for every item; here a split is
read once, kept as contiguous tensors (optionally on the GPU) and indexed by batch, which is
what makes small cascaded networks train fast.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from kdrecon.data import layout, slicing
from kdrecon.data.image import COMPLEX, MAGNITUDE, check_image_kind, image_kind_of
from kdrecon.data.integrity import acceleration_tolerance, check_mask, check_volume
from kdrecon.data.package_files import package_resource
from kdrecon.data.prepare import CONTENT, MANIFEST, PrepareOptions, prepare_volume
from kdrecon.data.sources import sunnybrook
from kdrecon.data.task import RECONSTRUCTION, SAMPLE_SUPER_RESOLUTION_SIZE, SUPER_RESOLUTION, check_task, task_of
from kdrecon.mri.channels import to_channels
from kdrecon.mri.fft import ifft2

SAMPLE = "sample"
SAMPLE_VALIDATION_SUBJECTS = ("SCD0000401",)


@dataclass(frozen=True)
class VolumeIndex:
    """Slices ``start:stop`` of a :class:`SliceData` belong to volume ``name``."""

    name: str
    start: int
    stop: int


@dataclass(frozen=True)
class Batch:
    """Model inputs and target for a batch of slices.

    ``zero_filled`` and ``target``: ``(B, C, H, W)`` float32, ``C`` = 1 for magnitude images and 2
    (real, imaginary) for complex ones (:mod:`kdrecon.data.image`); ``kspace``: ``(B, H, W)``
    complex64, un-centred, masked; ``mask``: ``(H, W)`` float32, un-centred; ``index``: the
    positions of the slices in their :class:`SliceData` (``None`` for a hand-made batch), which
    lets per-slice results computed once (a frozen teacher's outputs) be looked up.
    """

    zero_filled: torch.Tensor
    kspace: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    index: torch.Tensor | None = None


@dataclass(frozen=True)
class SliceData:
    """All slices of one split at one acceleration, stacked (see :class:`Batch` for shapes).

    For ``task`` super-resolution, ``zero_filled`` is the low-resolution input on the full grid
    and ``mask`` the low-pass box (:mod:`kdrecon.data.task`). For ``image`` complex, inputs and
    targets are complex images as two channels and ``zero_filled`` is ``F⁻¹ k`` with its phase.
    """

    zero_filled: torch.Tensor
    kspace: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    volumes: tuple[VolumeIndex, ...]
    acceleration: str
    task: str = RECONSTRUCTION
    image: str = MAGNITUDE

    def __len__(self) -> int:
        return self.target.shape[0]

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.target.shape[-2:])

    def to(self, device: torch.device | str) -> SliceData:
        """A copy with every tensor on ``device``."""
        return replace(
            self,
            zero_filled=self.zero_filled.to(device),
            kspace=self.kspace.to(device),
            mask=self.mask.to(device),
            target=self.target.to(device),
        )

    def batch(self, indices: torch.Tensor) -> Batch:
        """The slices at ``indices`` (a 1-D integer tensor)."""
        return Batch(self.zero_filled[indices], self.kspace[indices], self.mask, self.target[indices], indices)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Batches in a random order drawn from ``generator``, or in order when it is ``None``."""
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: must be at least 1")
        count = len(self)
        order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
        order = order.to(self.target.device)
        for start in range(0, count, batch_size):
            yield self.batch(order[start : start + batch_size])


def _stack(volumes: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], mask: np.ndarray, acceleration: str,
           task: str, image: str = MAGNITUDE) -> SliceData:
    """Stack ``(name, target, zero_filled, kspace)`` volumes; a complex dataset's targets are complex."""
    index, start = [], 0
    for name, target, _, _ in volumes:
        index.append(VolumeIndex(name, start, start + len(target)))
        start += len(target)
    kspace = torch.from_numpy(np.concatenate([v[3] for v in volumes]))
    target = torch.from_numpy(np.concatenate([v[1] for v in volumes]))
    if image == COMPLEX:
        zero_filled, target = to_channels(ifft2(kspace)), to_channels(target)
    else:
        zero_filled, target = torch.from_numpy(np.concatenate([v[2] for v in volumes])).unsqueeze(1), target.unsqueeze(1)
    return SliceData(
        zero_filled=zero_filled.contiguous(),
        kspace=kspace,
        mask=torch.from_numpy(mask.astype(np.float32)),
        target=target.contiguous(),
        volumes=tuple(index),
        acceleration=acceleration,
        task=task,
        image=image,
    )


def sample_directory() -> Path:
    """Where the embedded Sunnybrook sample is installed."""
    return package_resource("sunnybrook_sample")


def sample_subject_files(split: str) -> list[Path]:
    """The embedded sample's subject files (one per subject) of ``split``, ``"train"`` or ``"validation"``."""
    if split not in ("train", "validation"):
        raise ValueError(f"split {split!r}: expected 'train' or 'validation'")
    return [file for file in sunnybrook.subject_files(sample_directory())
            if (file.stem in SAMPLE_VALIDATION_SUBJECTS) == (split == "validation")]


def load_sample(split: str, acceleration: str = "4x", mask_kind: str = "papers", mask_seed: int | None = None,
                task: str = RECONSTRUCTION) -> SliceData:
    """The embedded real sample, prepared in memory like ``kdrecon prepare sunnybrook``.

    Train: subjects SCD0000101, SCD0000201, SCD0000301; validation: SCD0000401. 150×150
    slices scaled to max 1, undersampled with the papers' cardiac mask (4x or 5x) or any other
    mask kind of :func:`kdrecon.data.prepare.make_mask`; for super-resolution, centre-cropped to
    128×128 and low-passed.
    """
    acceleration = layout.parse_acceleration(acceleration)
    if split not in ("train", "validation"):
        raise ValueError(f"split {split!r}: expected 'train' or 'validation'")
    size = SAMPLE_SUPER_RESOLUTION_SIZE if task == SUPER_RESOLUTION else 150
    options = PrepareOptions(mask=mask_kind, mask_seed=mask_seed, task=task)
    mask = options.make_mask(acceleration, (size, size))
    volumes = []
    # The split is chosen by subject file before reading: each file is decompressed whole.
    files = sample_subject_files(split)
    for volume in (volume for file in files for volume in sunnybrook.read_volumes(file)):
        target, undersampled, _ = prepare_volume(volume, size, {acceleration: mask})
        zero_filled, kspace = undersampled[acceleration]
        volumes.append((volume.name, target, zero_filled, kspace))
    return _stack(volumes, mask, acceleration, task)


def read_manifest(dataset: Path) -> dict:
    """The ``dataset.json`` of a prepared dataset directory."""
    path = Path(dataset) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{dataset}: not a kdrecon dataset (no {MANIFEST}; run 'kdrecon prepare' first)")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "kdrecon-dataset":
        raise ValueError(f"{path}: not a kdrecon dataset manifest (no \"format\": \"kdrecon-dataset\")")
    for key in ("splits", "masks"):
        if not isinstance(manifest.get(key), dict):
            raise ValueError(f"{path}: missing or malformed {key!r}")
    return manifest


def prepared_slice_axis(dataset: str | Path) -> int | None:
    """The axis (0, 1 or 2) a dataset prepared from NIfTI files was sliced along, as its manifest records
    it (:mod:`kdrecon.data.slicing`); None for the embedded sample, other sources and NIfTI datasets
    prepared before kdrecon recorded it."""
    if str(dataset) == SAMPLE:
        return None
    manifest = read_manifest(Path(dataset))
    axis = slicing.recorded_slice_axis(manifest, Path(dataset) / MANIFEST)
    if axis is None and str(manifest.get("source", "")).startswith("nifti:"):
        warnings.warn(f"{dataset}: prepared from NIfTI before kdrecon recorded the slice axis; new volumes will be "
                      "sliced along the last axis unless told otherwise", stacklevel=2)
    return axis


def dataset_identity(dataset: str | Path) -> str:
    """A digest of what a dataset holds, to tell whether a path still names the data a network was
    trained on: its manifest (less the source's location), its masks, and the names and sizes of its
    volumes (milliseconds: no volume is read); for a dataset prepared since kdrecon records it, ``+``
    and the digest of the volumes' targets written at preparation (the manifest's ``content``,
    :func:`kdrecon.data.prepare.volume_digest`: the same bits on every machine), which tells apart
    preparations of equal sizes from other reader options or cardiac phases. Two
    preparations from the same source with the same options agree; another mask, crop, phase
    selection or split does not. The embedded sample is ``"sample"``. Compare two with
    :func:`same_data`."""
    if str(dataset) == SAMPLE:
        return SAMPLE
    root = Path(dataset)
    manifest = read_manifest(root)
    # Where the files came from or lie is not what they hold: the source, a registered split's folder, mask files' paths.
    # Nor is the slice axis, recorded since session 39: the volumes' sizes and content already tell slicings apart,
    # and a NIfTI dataset re-prepared as before keeps the identity its networks recorded.
    ignored = ("source", "splits", "mask", CONTENT, slicing.SLICE_AXIS_KEY)
    described = {key: value for key, value in manifest.items() if key not in ignored}
    described["subjects"] = {split: entry.get("subjects") for split, entry in manifest["splits"].items()}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for acceleration, name in sorted(manifest["masks"].items()):
        digest.update(acceleration.encode() + ((root / name).read_bytes() if (root / name).is_file() else b""))
    for split, entry in sorted(manifest["splits"].items()):
        for path in sorted((root / entry["directory"]).glob("*.h5")):
            digest.update(f"{split}/{path.name}:{path.stat().st_size}".encode())
    content = manifest.get(CONTENT)
    return digest.hexdigest()[:16] + (f"{_CONTENT_SEPARATOR}{str(content)[:16]}" if content else "")


#: Between the two parts of a :func:`dataset_identity`: manifest and sizes, then content.
_CONTENT_SEPARATOR = "+"


def same_data(recorded: str, current: str) -> bool:
    """Whether two :func:`dataset_identity` values name the same data. An identity recorded before
    kdrecon digested the volumes' targets has no content part: it is compared on what it has, so
    runs, checkpoints and records made earlier keep matching the same preparation."""
    recorded_parts, current_parts = recorded.split(_CONTENT_SEPARATOR), current.split(_CONTENT_SEPARATOR)
    return all(a == b for a, b in zip(recorded_parts, current_parts))


def count_slices(dataset: str | Path, split: str) -> int:
    """The slices of ``split`` of a prepared dataset (read from the volumes' shapes, no image loaded),
    or of the embedded sample."""
    if str(dataset) == SAMPLE:
        return len(load_sample(split))
    manifest = read_manifest(Path(dataset))
    if split not in manifest["splits"]:
        raise ValueError(f"{dataset}: no split {split!r} (has: {', '.join(manifest['splits'])})")
    total = 0
    for path in sorted((Path(dataset) / manifest["splits"][split]["directory"]).glob("*.h5")):
        try:
            with h5py.File(path, "r") as file:
                total += file[layout.TARGET_KEY].shape[-1]
        except (OSError, KeyError) as error:
            raise ValueError(f"{path}: not a readable volume ({error})") from None
    return total


def _mask_kind(manifest: dict) -> str | None:
    """The kind of mask a manifest records (``papers``, ``random``, a file…), ``None`` if it records none."""
    described = manifest.get("mask")
    return described.get("kind") if isinstance(described, dict) else None


def load_split(dataset: str | Path, split: str, acceleration: str = "4x", task: str = RECONSTRUCTION,
               image: str = MAGNITUDE) -> SliceData:
    """Load every slice of ``split`` ('train' or 'validation') of a dataset into memory.

    ``dataset`` is a directory made by ``kdrecon prepare`` or the word ``"sample"`` for the
    embedded sample; data prepared for another ``task`` or holding another ``image`` kind is
    refused, and so is a mask or a volume that no longer agrees with the rest
    (:mod:`kdrecon.data.integrity`).
    """
    if str(dataset) == SAMPLE:
        check_image_kind(f"the embedded {SAMPLE}", MAGNITUDE, image)
        return load_sample(split, acceleration, task=task)
    acceleration = layout.parse_acceleration(acceleration)
    dataset = Path(dataset)
    manifest = read_manifest(dataset)
    check_task(dataset, task_of(manifest), task)
    check_image_kind(dataset, image_kind_of(manifest), image)
    if split not in manifest["splits"]:
        raise ValueError(f"{dataset}: no split {split!r} (has: {', '.join(manifest['splits'])})")
    if acceleration not in manifest["masks"]:
        raise ValueError(f"{dataset}: no {acceleration} data (has: {', '.join(manifest['masks'])})")
    mask_path = dataset / manifest["masks"][acceleration]
    if not mask_path.is_file():
        raise ValueError(f"{mask_path}: the {acceleration} mask named in {MANIFEST} is missing")
    try:
        mask = np.load(mask_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{mask_path}: not a readable .npy mask ({error})") from None
    check_mask(mask, acceleration, task, mask_path, acceleration_tolerance(_mask_kind(manifest)))
    directory = dataset / manifest["splits"][split]["directory"]
    files = sorted(directory.glob("*.h5"))
    if not files:
        raise ValueError(f"{directory}: the {split} split is empty (no .h5 files)")
    volumes = []
    for file in files:
        arrays = layout.read_volume(file, acceleration, complex_target=image == COMPLEX)
        if arrays.target.shape[1:] != mask.shape:
            raise ValueError(f"{file}: slices are {arrays.target.shape[1:]}, the {acceleration} mask is {mask.shape}")
        target = arrays.complex_target if image == COMPLEX else arrays.target
        check_volume(target, arrays.zero_filled, arrays.kspace, mask, file)
        volumes.append((file.stem, target, arrays.zero_filled, arrays.kspace))
    return _stack(volumes, mask, acceleration, task, image)
