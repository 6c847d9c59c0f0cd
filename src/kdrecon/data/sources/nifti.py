"""Read NIfTI-1/2 files (``.nii``, ``.nii.gz``) as magnitude volumes.

Orientation: arrays are taken **as stored** on disk (nibabel's data array, voxel axes
``(X, Y, Z[, T])``); no reorientation to RAS or any other convention is applied, and the
affine is ignored. A 3-D file gives one volume whose slices run along ``slice_axis``
(default: the last spatial axis, Z); the two remaining axes keep their stored order, so a
slice along Z is ``data[:, :, z]`` of shape ``(X, Y)``. A 4-D file ``(X, Y, Z, T)`` gives
one volume per time frame, named ``<stem>_t{t:02d}``, all sharing the file's subject.

Voxel values are read with ``get_fdata(dtype=np.float32)``, so the header's
``scl_slope``/``scl_inter`` scaling is applied. Nothing is cropped or normalised here.

Example (ACDC: ``patient001/patient001_frame01.nii.gz`` …)::

    for volume in read_volumes(Path("ACDC/training"), subject_pattern=r"(patient\\d+)",
                               exclude_pattern=r"_gt\\.nii"):
        ...
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from kdrecon.data.slicing import SLICE_AXIS, check_slice_axis
from kdrecon.data.volume import Volume

# The reader's default axis and its check are declared in kdrecon.data.slicing, and used from here too.
__all__ = ["read_volumes", "SLICE_AXIS", "check_slice_axis"]

_SUFFIXES = (".nii.gz", ".nii")


def read_volumes(
    path: Path,
    *,
    slice_axis: int = SLICE_AXIS,
    subject_pattern: str | None = None,
    exclude_pattern: str | None = None,
) -> Iterator[Volume]:
    """Yield the volumes of one NIfTI file or of every NIfTI file under a directory.

    Args:
        path: a ``.nii``/``.nii.gz`` file, or a directory searched recursively (files in
            sorted path order).
        slice_axis: the spatial axis (of ``X, Y, Z``; ``-3..2``) that becomes the slice
            axis ``S``; the other two spatial axes become ``(H, W)`` in stored order.
        subject_pattern: regular expression searched in the file name; its first group
            (or the whole match if it has no group) is the subject. ``None``: a BIDS
            ``sub-<label>`` or ACDC ``patient<N>`` in the name, else the file stem
            (:data:`DEFAULT_SUBJECT_PATTERNS`).
        exclude_pattern: regular expression; files whose name it matches are skipped
            (e.g. ACDC segmentations ``_gt\\.nii``).

    Yields:
        ``Volume`` with ``images`` float32 ``(S, H, W)``, one per 3-D file or per frame of
        a 4-D file. Files are read one at a time.

    Raises:
        ValueError: no NIfTI file found, unreadable file, data not 3-D/4-D, a subject
            pattern that does not match, or an invalid ``slice_axis``.
    """
    path = Path(path)
    check_slice_axis(slice_axis)
    subject_re = _compiled(subject_pattern, "subject pattern")
    files = _find_files(path, exclude_pattern)
    root = path if path.is_dir() else path.parent
    for file, name in zip(files, _unique_names(files, root)):
        subject = _subject(file, subject_re)
        data = _load(file)
        if data.ndim == 3:
            yield _volume(file, name, subject, data, slice_axis)
        elif data.ndim == 4:
            for t in range(data.shape[3]):
                yield _volume(file, f"{name}_t{t:02d}", subject, data[..., t], slice_axis)
        else:
            raise ValueError(f"{file}: expected 3-D (X,Y,Z) or 4-D (X,Y,Z,T) data, got shape {data.shape}")


def _find_files(path: Path, exclude_pattern: str | None) -> list[Path]:
    if path.is_file():
        if not path.name.endswith(_SUFFIXES):
            raise ValueError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")
    exclude = _compiled(exclude_pattern, "exclude pattern")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.name.endswith(_SUFFIXES) and not (exclude and exclude.search(p.name))
    )
    if not files:
        raise ValueError(f"{path}: no NIfTI files (.nii, .nii.gz) found")
    return files


def _compiled(pattern: str | None, what: str) -> re.Pattern | None:
    try:
        return re.compile(pattern) if pattern else None
    except re.error as err:
        raise ValueError(f"{what} {pattern!r}: not a regular expression ({err})") from None


def _stem(file: Path) -> str:
    name = file.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return file.stem


def _safe(text: str) -> str:
    """Filesystem-safe version of ``text``: characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._") or "volume"


def _unique_names(files: list[Path], root: Path) -> list[str]:
    """File stems; stems shared by several files are replaced by their relative path."""
    stems = [_safe(_stem(f)) for f in files]
    counts = Counter(stems)
    names = []
    for file, stem in zip(files, stems):
        if counts[stem] > 1:
            rel = file.relative_to(root)
            stem = _safe("__".join([*rel.parent.parts, _stem(file)]))
        names.append(stem)
    return names


#: Where no subject pattern is given, the subject is the first of these found in the file name, as the
#: field names files of several scans of one subject: BIDS (``sub-01_run-2_T1w.nii.gz``) and ACDC
#: (``patient001_frame12.nii.gz``); else the file stem. Splits are by subject, so two scans of one
#: person never fall in both.
DEFAULT_SUBJECT_PATTERNS = (re.compile(r"(?<![A-Za-z0-9])(sub-[A-Za-z0-9]+)"), re.compile(r"^(patient\d+)(?![0-9])"))


def _subject(file: Path, subject_re: re.Pattern[str] | None) -> str:
    if subject_re is None:
        return next((match.group(1) for pattern in DEFAULT_SUBJECT_PATTERNS if (match := pattern.search(file.name))),
                    _stem(file))
    match = subject_re.search(file.name)
    if match is None:
        raise ValueError(f"{file}: subject_pattern {subject_re.pattern!r} does not match the file name")
    return match.group(1) if subject_re.groups else match.group(0)


def read_image(file: Path) -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    """The NIfTI image (its affine and header) and its real data as float32; a corrupt or truncated
    file, or complex data, is a ``ValueError`` naming ``file``."""
    try:
        image = nib.load(file)
        if image.get_data_dtype().kind == "c":
            raise ValueError("complex data; give its magnitude, or its k-space as .npy")
        return image, image.get_fdata(dtype=np.float32)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise ValueError(f"{file}: cannot read NIfTI data ({type(err).__name__}: {err})") from err


def _load(file: Path) -> np.ndarray:
    return read_image(file)[1]


def _volume(file: Path, name: str, subject: str, data: np.ndarray, slice_axis: int) -> Volume:
    images = np.ascontiguousarray(np.moveaxis(data, slice_axis, 0), dtype=np.float32)
    try:
        return Volume(name=name, subject=subject, images=images)
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from err
