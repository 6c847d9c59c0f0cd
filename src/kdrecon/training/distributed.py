"""Multi-process training with PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

``torchrun --nproc_per_node N -m kdrecon train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`initialise_from_environment` joins them into one
process group (NCCL on GPUs, gloo on CPUs) and :func:`kdrecon.training.trainer.fit` then:

* splits every global batch across the ranks (rank r takes slices r, r+N, … of it), so a run
  with global batch B on N processes follows the same loss curve as one process with batch B
  (for losses that are means over slices: L1, imitation, AT, FitNets, FSP);
* wraps the trained networks in :class:`~torch.nn.parallel.DistributedDataParallel`, which
  averages the gradients; each rank's loss is scaled by its share of the global batch so that
  the average is the gradient of the global mean even when the last batch splits unevenly;
* validates each slice on exactly one rank and sums losses and counts over ranks;
* writes checkpoints, metrics and logs from rank 0 only.

All ranks read the run directory (to resume, to load a teacher), so on several machines it must
be on a shared filesystem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


# The other ranks wait at a barrier while rank 0 evaluates a finished stage of an experiment,
# which on a full dataset can outlast NCCL's default of 10 minutes.
COLLECTIVE_TIMEOUT = timedelta(hours=1)


def initialise_from_environment() -> World:
    """Join the process group torchrun describes (no-op for a single process)."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return current_world()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    return current_world()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` means this rank's GPU (``LOCAL_RANK``) under torchrun."""
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (identity for one process)."""
    if not current_world().distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(value: Any) -> Any:
    """``value`` as rank 0 has it, on every rank (picklable values; identity for one process)."""
    if not current_world().distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if current_world().distributed:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
