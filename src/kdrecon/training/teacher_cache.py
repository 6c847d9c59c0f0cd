"""How much memory a distillation may fill with its frozen teacher's features: a set size, or ``auto``.

A distillation computes the teacher's outputs and tapped features once per run and looks them up at
every step (:class:`kdrecon.distillation.distiller.Distiller`). Features that do not fit the budget
are not cached, and the teacher then runs at every step: for every feature method but attention
transfer (which caches only attention maps), on a training split of a few hundred slices, that is
most of a step's extra cost over AT (docs/benchmarks.md). A fixed budget is either too small for a
large machine or too large for a small one, so by default (``auto``) it is a share of the memory
this process may take when the run starts:

.. math::

    B = s \\cdot M_{free} / P,

with ``s`` = :data:`AUTO_SHARE` (the rest is left to training itself and to other programs) and
``P`` the training processes that share that memory and start together, each caching its own
split: torchrun's ranks on this machine (``LOCAL_WORLD_SIZE``, CPU only: on GPUs each rank has its
own) and ``kdrecon run --parallel`` workers that share a device (:data:`SHARING_PROCESSES`).
``M_free`` is, on a GPU, its free memory plus what PyTorch's allocator holds unused; on a CPU, the
system's available memory, capped by the cgroup's limit less its use where the process runs in a
container or a batch job with a memory limit. A number is a budget in GiB; 0 runs the teacher at
every step.

Example:
    >>> import torch
    >>> teacher_cache_bytes(0.5, torch.device("cpu"))
    536870912
    >>> 0 < teacher_cache_bytes(AUTO, torch.device("cpu")) < free_memory_bytes(torch.device("cpu"))
    True
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import torch

#: The budget sized from the free memory (see the module docstring).
AUTO = "auto"
#: The share of the free memory that ``auto`` gives the cache.
AUTO_SHARE = 0.5
#: Environment variable: how many processes started together share this process's memory (set by
#: ``kdrecon run --parallel`` for its workers).
SHARING_PROCESSES = "KDRECON_SHARING_PROCESSES"
#: cgroup v2, then v1: the memory limit and the memory in use of the process's group.
CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _cgroup_headroom() -> int | None:
    """The memory the process's cgroup may still take, or None where no limit is set or readable."""
    for limit_file, usage_file in CGROUP_FILES:
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit() and int(limit) < 2**60:  # v1 writes a huge number for "none"
            return max(0, int(limit) - int(usage))
        return None
    return None


def _sharing_processes(device: torch.device) -> int:
    processes = int(os.environ.get(SHARING_PROCESSES, "1"))
    if device.type != "cuda":
        processes *= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, processes)


def free_memory_bytes(device: torch.device) -> int:
    """``M_free / P`` of the module docstring: the memory this process may take now on ``device``."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    else:
        free = psutil.virtual_memory().available
        headroom = _cgroup_headroom()
        free = free if headroom is None else min(free, headroom)
    return free // _sharing_processes(device)


def teacher_cache_bytes(setting: float | str, device: torch.device) -> int:
    """The cache budget in bytes for ``setting`` (GiB, or :data:`AUTO`) on ``device``."""
    if setting == AUTO:
        return int(AUTO_SHARE * free_memory_bytes(device))
    return int(float(setting) * 2**30)
