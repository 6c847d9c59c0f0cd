"""The tasks kdrecon trains networks for, and how each degrades a fully sampled image.

* ``reconstruction`` — undersampled Cartesian k-space (a line mask, ``4x`` = a quarter of the
  lines); the input is the zero-filled image.
* ``super-resolution`` — the central ``1/r × 1/r`` block of k-space (:mod:`kdrecon.mri.resolution`,
  ``4x`` = the central 64×64 of 256×256); the input is the low-resolution image on the full grid.

Both store ``(target, input, k-space, mask)`` in the same files (:mod:`kdrecon.data.layout`),
so training and evaluation are the same for both; a dataset's manifest records its task and a
configuration that names another task is refused.

Example:
    >>> task_of({"format": "kdrecon-dataset"}), factor_of("4x")
    ('reconstruction', 4.0)
"""

from __future__ import annotations

from typing import Literal, get_args

Task = Literal["reconstruction", "super-resolution"]
TASKS: tuple[str, ...] = get_args(Task)
RECONSTRUCTION, SUPER_RESOLUTION = TASKS
#: Key of the task in a dataset manifest; manifests written before it existed are reconstruction.
MANIFEST_KEY = "task"
#: The embedded sample's 150×150 slices are centre-cropped to this for super-resolution, a size
#: every factor up to 8 divides (128 / 4 = a 32×32 low-resolution image).
SAMPLE_SUPER_RESOLUTION_SIZE = 128


def task_of(manifest: dict) -> str:
    """The task a dataset was prepared for (``reconstruction`` when its manifest predates tasks)."""
    task = manifest.get(MANIFEST_KEY, RECONSTRUCTION)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} in the dataset manifest; expected one of {', '.join(TASKS)}")
    return task


def factor_of(acceleration: str) -> float:
    """The number in an acceleration label: lines kept 1 in r, or the resolution divided by r per axis."""
    return float(acceleration.removesuffix("x"))


def check_task(dataset: object, found: str, expected: str) -> None:
    """Refuse data prepared for another task than the configuration says."""
    if found != expected:
        raise ValueError(
            f"{dataset}: prepared for {found}, but the configuration's data.task is {expected}; "
            f"set data.task: {found} or prepare the data with --task {expected}"
        )
