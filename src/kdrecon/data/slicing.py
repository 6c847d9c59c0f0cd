"""Which spatial axis of a 3-D NIfTI volume its 2-D slices run along, and where that is recorded.

A volume ``(X, Y, Z)`` is sliced along one of its axes, given as ``-3..2`` (``-1``, the last, Z, by
default); the other two keep their stored order as each slice's rows and columns
(:mod:`kdrecon.data.sources.nifti`). ``kdrecon prepare nifti`` records the axis in the dataset's
manifest as ``0..2``, and a network trained on that dataset carries it into its weights file's data
description (:mod:`kdrecon.deployment.package`), so ``kdrecon reconstruct`` slices new volumes the
same way unless told otherwise. Kept apart from the NIfTI reader so that reading a manifest does not
import nibabel.

Example:
    >>> slice_axis_record(-1)
    {'nifti_slice_axis': 2}
    >>> recorded_slice_axis({'nifti_slice_axis': 0}, 'dataset.json')
    0
"""

from __future__ import annotations

from typing import Any

#: The spatial axis slices run along unless told otherwise: the last (Z).
SLICE_AXIS = -1

#: The key of a dataset manifest and of a weights file's data description that holds the axis (0..2).
SLICE_AXIS_KEY = "nifti_slice_axis"


def check_slice_axis(slice_axis: int) -> None:
    """Refuse an axis that is not one of the three spatial axes (``X, Y, Z``: ``-3..2``)."""
    if not -3 <= slice_axis <= 2:
        raise ValueError(f"slice axis {slice_axis}: must be a spatial axis in -3..2")


def slice_axis_record(slice_axis: int) -> dict[str, int]:
    """What a dataset's manifest records of the axis its volumes were sliced along."""
    check_slice_axis(slice_axis)
    return {SLICE_AXIS_KEY: slice_axis % 3}


def recorded_slice_axis(description: dict[str, Any], where: object) -> int | None:
    """The axis ``description`` (a manifest, or a weights file's data description, read from
    ``where``) records, or None where it records none; anything but 0, 1 or 2 is an error naming ``where``."""
    axis = description.get(SLICE_AXIS_KEY)
    if axis is not None and (type(axis) is not int or not 0 <= axis <= 2):
        raise ValueError(f"{where}: {SLICE_AXIS_KEY} {axis!r} is not a spatial axis 0, 1 or 2")
    return axis
