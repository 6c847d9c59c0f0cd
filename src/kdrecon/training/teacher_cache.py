"""How much memory a distillation may fill with its frozen teacher's features: a set size, or ``auto``.

A distillation computes the teacher's outputs and tapped features once per run and looks them up at
every step (:class:`kdrecon.distillation.distiller.Distiller`). Features that do not fit the budget
are not cached, and the teacher then runs at every step: for the feature methods that need whole
features (FitNets, SP, FSP, CC) on a training split of a few hundred slices, that is most of a
step's extra cost over attention transfer, which caches only attention maps (docs/benchmarks.md).
A fixed budget is either too small for a large machine or too large for a small one, so by
default (``auto``) it is a share of the memory the device has free when the run starts:

.. math::

    B = s \\cdot M_{free},

with ``s`` = :data:`AUTO_SHARE`, the rest left to training itself and to other processes.
``M_free`` is the device's free memory on a GPU, and on a CPU the operating system's available
memory (``psutil``) divided among the training processes torchrun started on this machine
(``LOCAL_WORLD_SIZE``), each of which caches the whole split. A number is a budget in GiB; 0 runs
the teacher at every step.

Example:
    >>> import torch
    >>> teacher_cache_bytes(0.5, torch.device("cpu"))
    536870912
    >>> 0 < teacher_cache_bytes(AUTO, torch.device("cpu")) < free_memory_bytes(torch.device("cpu"))
    True
"""

from __future__ import annotations

import os

import psutil
import torch

#: The budget sized from the free memory (see the module docstring).
AUTO = "auto"
#: The share of the free memory that ``auto`` gives the cache.
AUTO_SHARE = 0.5


def free_memory_bytes(device: torch.device) -> int:
    """Memory the device can give this process now: the GPU's free memory, else the system's available
    memory shared among this machine's training processes."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def teacher_cache_bytes(setting: float | str, device: torch.device) -> int:
    """The cache budget in bytes for ``setting`` (GiB, or :data:`AUTO`) on ``device``."""
    if setting == AUTO:
        return int(AUTO_SHARE * free_memory_bytes(device))
    return int(float(setting) * 2**30)
