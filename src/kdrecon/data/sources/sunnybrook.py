"""Reader for the Sunnybrook cardiac cine subset (one ``SCD*.npz`` file per subject).

Each file holds ``images`` uint16 ``(slices, phases, H, W)``; the embedded sample also holds
``phase_index`` (the original phase numbers it kept). One :class:`Volume` is yielded per cardiac
phase, holding every slice position of that phase, so a volume is a 3-D stack like the ACDC
volumes the papers used, and all phases of a subject share the subject for the split.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from kdrecon.data.volume import Volume

#: The name of this source in ``kdrecon prepare sunnybrook`` and in a dataset manifest's ``source``.
FORMAT = "sunnybrook"


def subject_files(path: Path) -> list[Path]:
    """The subject files under ``path`` (a directory of ``SCD*.npz`` or one such file), sorted."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("SCD*.npz"))
    if not files:
        raise ValueError(f"{path}: no Sunnybrook subject files (SCD*.npz) found")
    return files


def _read_subject(file: Path) -> tuple[np.ndarray, list[int]]:
    """A subject file's ``images`` (slices, phases, H, W) and the original numbers of its phases."""
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in ("images", "phase_index") if name in archive.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, AttributeError) as error:
        # truncated, or not an .npz archive at all (NumPy then tries it as a pickle, refused)
        raise ValueError(f"{file}: not a readable .npz archive ({error})") from None
    if "images" not in arrays:
        raise ValueError(f"{file}: missing array 'images'")
    images = arrays["images"]
    if images.ndim != 4:
        raise ValueError(f"{file}: 'images' must be (slices, phases, H, W), got shape {images.shape}")
    return images, arrays["phase_index"].tolist() if "phase_index" in arrays else list(range(images.shape[1]))


def read_volumes(path: Path, phases: Sequence[int] | None = None) -> Iterator[Volume]:
    """Yield one volume per (subject, cardiac phase), slices ordered as acquired.

    Args:
        path: directory of ``SCD*.npz`` subject files, or one file.
        phases: original phase numbers to keep (default: all in the file).
    """
    for file in subject_files(path):
        images, stored_phases = _read_subject(file)
        wanted = stored_phases if phases is None else list(phases)
        for phase in wanted:
            if phase not in stored_phases:
                raise ValueError(f"{file}: phase {phase} not stored (available: {stored_phases})")
            column = stored_phases.index(phase)
            yield Volume(
                name=f"{file.stem}_phase{phase:02d}",
                subject=file.stem,
                images=images[:, column].astype(np.float32),
            )
