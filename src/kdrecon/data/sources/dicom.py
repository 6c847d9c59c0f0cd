"""Read a directory tree of single-frame MR DICOM files as magnitude volumes.

Grouping: files are grouped by ``SeriesInstanceUID``. Within a series, images are grouped
by slice location (the position along the slice normal, see below). If every location
holds one image, the series is one volume. If every location holds the same number
``n > 1`` of images (a cine series), the images of each location are ranked by
``TriggerTime`` (fallback ``TemporalPositionIdentifier``, then ``InstanceNumber``) and
rank ``k`` of every location forms cardiac phase ``k``: one volume per phase, named
``<base>_t{k:02d}``. The rank is used, not the trigger time itself, because trigger times
differ slightly from slice to slice. ``split_phases=False`` keeps a cine series as one
volume ordered by (location, phase).

Slice order: ascending ``ImagePositionPatient · n`` with ``n = row × column`` direction
cosines of ``ImageOrientationPatient`` (the slice normal); fallback ``SliceLocation``; if
neither is present for every image of a series, ``InstanceNumber`` (such a series cannot be
a cine series: the phases could not be told apart, so that is an error).

Pixel values: ``pixel_array * RescaleSlope + RescaleIntercept`` (defaults 1 and 0), float32;
rows are ``H``, columns ``W``, as stored, except in a series whose ``InPlanePhaseEncodingDirection``
is ``ROW`` (phase-encoding lines are image columns): its images are transposed, so that kdrecon's
masks, which sample rows, skip phase-encoding lines as a scanner does (:func:`phase_encoding_along_rows`;
the manifest records it, :data:`MANIFEST_ORIENTATION`). Nothing is cropped or normalised here.

Subject: ``PatientID``; fallback the name of the first folder under ``path`` that holds the
file (or ``path``'s own name for files directly in it).

Name: ``<PatientID or subject>_series<SeriesNumber>``, filesystem-safe; a short hash of the
``SeriesInstanceUID`` is appended where two series would share a name.

Laziness: headers of all files are read first (without pixel data) to build the groups;
pixel data is read volume by volume. Files that are not DICOM (no ``DICM`` preamble), or
that hold no image (``Rows`` missing, e.g. ``DICOMDIR``), are skipped. Multi-frame
(enhanced) DICOM is not supported and raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from kdrecon.data.volume import Volume

__all__ = ["read_volumes", "phase_encoding_along_rows", "MANIFEST_ORIENTATION"]

#: What the manifest of a dataset prepared from DICOM records: series phase-encoded along the rows
#: were transposed. A dataset prepared before kdrecon did so lacks it, so it counts as other data.
MANIFEST_ORIENTATION = {"orientation": "phase encoding along the rows (DICOM series encoded along ROW transposed)"}

_POSITION_DECIMALS = 3  # slice positions equal to 1 µm are the same location


@dataclass(frozen=True)
class _Header:
    """What grouping and ordering need from one file's header."""

    file: Path
    series_uid: str
    series_number: int | None
    patient_id: str
    rows: int
    columns: int
    position: float | None  # along the slice normal (mm), or SliceLocation
    temporal: float | None  # TriggerTime, or TemporalPositionIdentifier
    instance: int | None
    cardiac_images: int | None
    transposed: bool  # phase-encoded along the rows: read transposed


def read_volumes(path: Path, *, split_phases: bool = True) -> Iterator[Volume]:
    """Yield the volumes of every DICOM series found under ``path``.

    Args:
        path: a directory searched recursively; files may have any extension. A single
            DICOM file is accepted too.
        split_phases: cine series give one volume per cardiac phase (``True``) or one
            volume holding all frames, location-major (``False``).

    Yields:
        ``Volume`` with ``images`` float32 ``(S, H, W)`` in spatial slice order, rescaled.
        Volumes come sorted by subject, series number and series UID.

    Raises:
        ValueError: no DICOM image found, unreadable pixel data, images of different shapes
            or unequal numbers of phases per location within one series, multi-frame or
            colour images, a cine series without slice positions.
    """
    path = Path(path)
    headers = _read_headers(path)
    root = path if path.is_dir() else path.parent
    series: dict[str, list[_Header]] = defaultdict(list)
    for header in headers:
        series[header.series_uid].append(header)
    names = _series_names(series)
    order = sorted(series, key=lambda uid: (_subject(series[uid][0], root), series[uid][0].series_number or 0, uid))
    for uid in order:
        members = series[uid]
        subject = _subject(members[0], root)
        _check_shapes(members, uid)
        transposed = _series_transposed(members, uid)
        groups = _phase_groups(members, uid, split_phases)
        for k, group in enumerate(groups):
            name = names[uid] if len(groups) == 1 else f"{names[uid]}_t{k:02d}"
            images = np.stack([_read_pixels(h) for h in group])
            if transposed:
                images = np.ascontiguousarray(images.transpose(0, 2, 1))
            try:
                yield Volume(name=name, subject=subject, images=images)
            except ValueError as err:
                raise ValueError(f"{group[0].file}: {err}") from err


def _read_headers(path: Path) -> list[_Header]:
    if path.is_file():
        candidates = [path]
    elif path.is_dir():
        candidates = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        raise ValueError(f"{path}: no such file or directory")
    headers = [h for h in (read_image_header(p) for p in candidates) if h is not None]
    if not headers:
        raise ValueError(f"{path}: no DICOM image files found ({len(candidates)} files checked)")
    return headers


def read_image_header(file: Path) -> _Header | None:
    """The header of a single-frame grey-level DICOM image; None for a file that is not DICOM or holds
    no image (``DICOMDIR``, reports); ValueError naming the file for images kdrecon cannot read."""
    try:
        ds = pydicom.dcmread(file, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError):
        return None
    if "Rows" not in ds or "Columns" not in ds:
        return None  # DICOMDIR, reports and other non-image objects
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ValueError(f"{file}: multi-frame DICOM (NumberOfFrames={ds.NumberOfFrames}) is not supported")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"{file}: expected a grey-level image, got SamplesPerPixel={ds.SamplesPerPixel}")
    component = complex_component(ds)
    if component is not None:
        image_type = "\\".join(_image_type(ds))  # as DICOM writes multiple values
        raise ValueError(f"{file}: a {component} image (ImageType {image_type}), not a magnitude one; give the "
                         "magnitude series")
    return _Header(
        file=file,
        series_uid=str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{file.parent}"),
        series_number=_int(ds.get("SeriesNumber")),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        position=_position(ds),
        temporal=_float(ds.get("TriggerTime", ds.get("TemporalPositionIdentifier"))),
        instance=_int(ds.get("InstanceNumber")),
        cardiac_images=_int(ds.get("CardiacNumberOfImages")),
        transposed=phase_encoding_along_rows(ds),
    )


#: ImageType values of MR images that hold a part of the complex image other than its magnitude.
OTHER_COMPONENTS = {"P": "phase", "PHASE": "phase", "R": "real part", "REAL": "real part", "I": "imaginary part",
                    "IMAGINARY": "imaginary part"}


def complex_component(ds: pydicom.Dataset) -> str | None:
    """What part of the complex image ``ds`` holds when it is not the magnitude (phase, real or imaginary
    part), from ``ComplexImageComponent`` or the ``ImageType`` values scanners use; None for a magnitude."""
    component = str(ds.get("ComplexImageComponent", "") or "").strip().upper()
    if component and component != "MAGNITUDE":
        return OTHER_COMPONENTS.get(component, component.lower())
    for value in _image_type(ds):
        if value.upper() in OTHER_COMPONENTS:
            return OTHER_COMPONENTS[value.upper()]
    return None


def _image_type(ds: pydicom.Dataset) -> list[str]:
    """``ImageType``'s values (a file may hold a single value, read as a string)."""
    values = ds.get("ImageType") or []
    return [str(v).strip() for v in ([values] if isinstance(values, str) else values)]


def phase_encoding_along_rows(ds: pydicom.Dataset) -> bool:
    """Whether the image's phase-encoding lines are its columns (``InPlanePhaseEncodingDirection`` ``ROW``):
    kdrecon reads such an image transposed. Absent, the Sunnybrook data's ``COL`` is assumed."""
    return str(ds.get("InPlanePhaseEncodingDirection", "") or "").strip().upper() == "ROW"


def _position(ds: pydicom.Dataset) -> float | None:
    """Position along the slice normal: ``ImagePositionPatient · (row × column)``; else ``SliceLocation``."""
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
        cosines = np.asarray(iop, dtype=np.float64)
        normal = np.cross(cosines[:3], cosines[3:])
        return float(np.dot(np.asarray(ipp, dtype=np.float64), normal))
    return _float(ds.get("SliceLocation"))


def _float(value: object) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _int(value: object) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _subject(header: _Header, root: Path) -> str:
    if header.patient_id:
        return header.patient_id
    parts = header.file.relative_to(root).parts
    return parts[0] if len(parts) > 1 else root.name


def _safe(text: str) -> str:
    """Filesystem-safe version of ``text``: characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._") or "volume"


def _series_names(series: dict[str, list[_Header]]) -> dict[str, str]:
    base = {}
    for uid, members in series.items():
        first = members[0]
        number = first.series_number if first.series_number is not None else uid.rsplit(".", 1)[-1]
        base[uid] = _safe(f"{first.patient_id or first.file.parent.name}_series{number}")
    counts = Counter(base.values())
    return {
        uid: f"{name}_{hashlib.sha1(uid.encode()).hexdigest()[:8]}" if counts[name] > 1 else name
        for uid, name in base.items()
    }


def _check_shapes(members: list[_Header], uid: str) -> None:
    shapes = Counter((h.rows, h.columns) for h in members)
    if len(shapes) > 1:
        common = shapes.most_common(1)[0][0]
        odd = next(h for h in members if (h.rows, h.columns) != common)
        raise ValueError(
            f"{odd.file}: image shape {odd.rows}x{odd.columns} differs from {common[0]}x{common[1]} "
            f"of the other images in series {uid}"
        )


def _series_transposed(members: list[_Header], uid: str) -> bool:
    directions = {h.transposed for h in members}
    if len(directions) > 1:
        odd = next(h for h in members if h.transposed != members[0].transposed)
        raise ValueError(f"{odd.file}: its InPlanePhaseEncodingDirection differs from {members[0].file}'s "
                         f"in series {uid}")
    return directions.pop()


def _phase_groups(members: list[_Header], uid: str, split_phases: bool) -> list[list[_Header]]:
    """Headers grouped per volume (one group, or one per phase), each in spatial order."""

    def temporal_key(h: _Header) -> tuple[float, int, str]:
        return (h.temporal if h.temporal is not None else 0.0, h.instance or 0, h.file.name)

    if any(h.position is None for h in members):
        if len(members) > 1 and (max(h.cardiac_images or 1 for h in members) > 1):
            raise ValueError(
                f"{members[0].file}: cine series {uid} has no ImagePositionPatient/SliceLocation; "
                "cannot separate slices from cardiac phases"
            )
        return [sorted(members, key=lambda h: (h.instance or 0, h.file.name))]
    locations: dict[float, list[_Header]] = defaultdict(list)
    for h in members:
        locations[round(h.position, _POSITION_DECIMALS)].append(h)
    ordered = [sorted(locations[p], key=temporal_key) for p in sorted(locations)]
    counts = {len(frames) for frames in ordered}
    if len(counts) > 1:
        raise ValueError(
            f"{members[0].file}: series {uid} has unequal numbers of images per slice location "
            f"({sorted(counts)}); cannot form cardiac phases"
        )
    n_phases = counts.pop()
    if n_phases == 1 or not split_phases:
        return [[h for frames in ordered for h in frames]]
    return [[frames[k] for frames in ordered] for k in range(n_phases)]


def _read_pixels(header: _Header) -> np.ndarray:
    try:
        ds = pydicom.dcmread(header.file)
        pixels = ds.pixel_array
    except Exception as err:  # missing decoders, truncated pixel data, …
        raise ValueError(f"{header.file}: cannot read pixel data ({type(err).__name__}: {err})") from err
    if pixels.shape != (header.rows, header.columns):
        raise ValueError(
            f"{header.file}: pixel data shape {pixels.shape} != Rows x Columns {header.rows}x{header.columns}"
        )
    slope = _float(ds.get("RescaleSlope"))
    intercept = _float(ds.get("RescaleIntercept"))
    values = pixels.astype(np.float64) * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    return values.astype(np.float32)
