"""Who a split holds: the subjects of a dataset's split and the source they were read from, so that
a network is not scored on patients it was trained on (:func:`seen_subjects`).

A subject name means the same patient only within one source: ``sub01`` of two NIfTI folders may
be two people. Two splits are compared when they come from the same ``FORMAT:PATH`` source, or from
the same public dataset whose subject names are its own identifiers (Sunnybrook's ``SCD`` numbers,
fastMRI's file names), which are the same on every machine.

Example:
    >>> trained = SplitSubjects("sunnybrook:/data/sunnybrook", ("SCD0000101", "SCD0000201"))
    >>> seen_subjects(trained, SplitSubjects("sunnybrook:/home/me/scd", ("SCD0000201",)))
    ['SCD0000201']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdrecon.data.dataset import SAMPLE, read_manifest, sample_directory, sample_subject_files
from kdrecon.data.sources import fastmri, sunnybrook

#: Source formats whose subject names are the public dataset's own identifiers.
PUBLIC_SUBJECT_FORMATS = (sunnybrook.FORMAT, fastmri.FORMAT)
#: The source format of the embedded sample's subjects, as a manifest writes it (``prepare sunnybrook``).
SAMPLE_FORMAT = sunnybrook.FORMAT


@dataclass(frozen=True)
class SplitSubjects:
    """The subjects of one split and the source (``FORMAT:PATH``, as a dataset manifest records it)."""

    source: str
    subjects: tuple[str, ...]

    @property
    def format(self) -> str:
        """The source's format, or "" where the source names none (prepared through the API)."""
        name, separator, _ = self.source.partition(":")
        return name if separator else ""

    def as_record(self) -> dict[str, Any]:
        """For a weights file's provenance (JSON)."""
        return {"source": self.source, "subjects": list(self.subjects)}

    @classmethod
    def from_record(cls, record: Any) -> SplitSubjects | None:
        """The inverse of :meth:`as_record`; None for a file written before kdrecon recorded it."""
        if not isinstance(record, dict) or not isinstance(record.get("subjects"), list):
            return None
        return cls(str(record.get("source", "")), tuple(str(subject) for subject in record["subjects"]))


def subjects_of_split(dataset: str | Path, split: str) -> SplitSubjects | None:
    """The subjects of ``split`` of a prepared dataset or of the embedded sample; None where the
    dataset is gone or its manifest lists none for the split. (Registered papers' files list their
    file stems, with a source that names no place: :func:`seen_subjects` never compares them.)"""
    if str(dataset) == SAMPLE:
        subjects = tuple(file.stem for file in sample_subject_files(split))
        return SplitSubjects(f"{SAMPLE_FORMAT}:{sample_directory()}", subjects)
    try:
        manifest = read_manifest(Path(dataset))
    except ValueError:
        return None
    subjects = manifest["splits"].get(split, {}).get("subjects")
    return SplitSubjects(str(manifest.get("source", "")), tuple(subjects)) if subjects else None


def seen_subjects(trained: SplitSubjects, evaluated: SplitSubjects) -> list[str]:
    """The subjects of ``evaluated`` that are in ``trained``, where the two can be compared (same
    ``FORMAT:PATH`` source, or the same public dataset); sorted."""
    same_place = trained.format != "" and trained.source == evaluated.source
    same_public_dataset = trained.format in PUBLIC_SUBJECT_FORMATS and trained.format == evaluated.format
    if not (same_place or same_public_dataset):
        return []
    return sorted(set(trained.subjects) & set(evaluated.subjects))
