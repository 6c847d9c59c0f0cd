"""The training loop shared by every stage: checkpointed, resumable, logged.

A stage is an :class:`Objective` (what is optimised) run by :func:`fit` over in-memory slice
data. After every epoch the loop validates, writes ``checkpoints/last.pt`` (everything needed
to resume) and, when the validation loss improved, ``checkpoints/best.pt``; it logs to
TensorBoard and rewrites ``metrics.csv``. Calling :func:`fit` again on the same run directory
resumes after the last finished epoch and reproduces an uninterrupted run exactly on the CPU:
the batch order of epoch ``e`` is drawn from a generator seeded with ``seed + e``.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from kdrecon.data.dataset import Batch, SliceData
from kdrecon.data.layout import atomic_path, remove_debris
from kdrecon.models.cascade import use_matrix_consistency
from kdrecon.models.dccnn import use_depthwise_forms, use_thin_kernels
from kdrecon.models.inference import inference_batch_size, inference_layout
from kdrecon.training.allocator import retain_freed_memory
from kdrecon.training.checkpoint import CHECKPOINTS, checkpoint_path, load_checkpoint, save_checkpoint
from kdrecon.training.config import OptimizationConfig
from kdrecon.training.distributed import World, barrier, current_world, from_main, sum_over_ranks
from kdrecon.training.fast_path import (AUTO_LAYOUT, AUTO_PRECISION, autocast, resolve_channels_last, resolve_precision,
                                        warn_if_emulated)

#: The run directory's training history, one row per epoch (rewritten after every epoch).
HISTORY = "metrics.csv"


def history_column(term: str) -> str:
    """The training history's column of the epoch mean of an objective's loss term ``term``."""
    return f"train_{term}"


class Objective(Protocol):
    """What one training stage optimises.

    ``modules()`` returns the trainable modules by name; ``"model"`` is the network whose
    predictions are evaluated and whose validation loss selects the best checkpoint.
    """

    def modules(self) -> dict[str, nn.Module]: ...

    def training_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Losses by name; ``"total"`` is the one differentiated."""
        ...

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        """Mean validation loss of the batch (scalar)."""
        ...

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Call the trained network through ``wrap(network)`` (DistributedDataParallel)."""
        ...


class ReconstructionObjective:
    """Plain supervised training: ``L = L1(model(x_zf), x)``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.network: nn.Module = model  # what is called: the model, or its DistributedDataParallel wrapper

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.network = wrap(self.model)

    def training_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        prediction = self.network(batch.zero_filled, batch.kspace, batch.mask)
        return {"total": nn.functional.l1_loss(prediction, batch.target)}

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        return nn.functional.l1_loss(self.network(batch.zero_filled, batch.kspace, batch.mask), batch.target)


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    best_epoch: int
    best_validation_loss: float
    epochs: int
    wall_seconds: float
    #: What the run trained in (``auto`` resolved, as its checkpoints record).
    precision: str
    channels_last: bool


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def prepare_module(module: nn.Module, device: torch.device, channels_last: bool = False, plain: bool = False) -> nn.Module:
    """Move ``module`` to ``device``, with 4-D weights in channels-last layout if asked.

    Channels-last lets oneDNN (CPU) and cuDNN (GPU) run the 3×3 convolutions without layout
    conversions; the single-channel images in and out of a block are the same in both layouts.
    On a CPU the thin convolutions run in their depthwise forms in either layout (the C→1
    convolution ending each block, and the input gradient of the 1→C one starting it:
    :class:`kdrecon.models.dccnn.Conv3x3`; not measured on GPU, so cuDNN keeps the plain ones),
    and in bf16 on a CPU with AVX-512 BF16 the 1→32 and 32→1 convolutions run in kdrecon's own
    kernels (:mod:`kdrecon.models.thin_kernels`), unless ``plain`` (the benchmark's reference); and the process's allocator is told to keep
    freed activations mapped (:func:`kdrecon.training.allocator.retain_freed_memory`). ``plain``
    also keeps data consistency in the FFT form of the papers' code
    (:mod:`kdrecon.mri.consistency`).
    """
    if device.type == "cpu":
        retain_freed_memory()
    use_depthwise_forms(module, device.type == "cpu" and not plain)
    use_thin_kernels(module, device.type == "cpu" and not plain)
    use_matrix_consistency(module, not plain)
    module.to(device)
    return module.to(memory_format=torch.channels_last) if channels_last else module


def compile_forward(model: nn.Module, example: Batch, fresh: bool = False) -> bool:
    """Replace ``model.forward`` by its ``torch.compile`` version; keep eager if that fails.

    On a GPU the compiled forward is also captured in CUDA graphs (``mode="reduce-overhead"``),
    meant to replay a step's many small kernels (five cascades of convolutions, FFTs and masks) at
    once instead of launching them one by one from Python (measured in docs/benchmarks.md, "GPU").
    The trial call runs without gradients, so a failure that only the backward pass meets is not
    caught here. Returns whether the compiled forward is in use. The weights and their names are
    untouched.

    ``fresh`` first drops what this process compiled before (``torch._dynamo.reset``), as a new
    training run must: every cascade network runs the same forward code, and dynamo stops compiling
    a function after a few variants of it (``recompile_limit``: networks, grad modes, precisions),
    so without it the fourth training run of one process, e.g. a stage of ``kdrecon run``, would
    silently run eagerly. A network compiled earlier still works; it compiles again when next called.
    """
    if fresh:
        torch._dynamo.reset()
    eager = model.forward
    cuda_graphs = example.zero_filled.device.type == "cuda"
    model.forward = torch.compile(eager, mode="reduce-overhead" if cuda_graphs else None)
    try:
        with torch.no_grad():
            model(example.zero_filled, example.kspace, example.mask)
    except Exception as error:  # the backend raises many types (no compiler, unsupported op, ...)
        del model.forward  # back to the class's eager forward
        warnings.warn(f"torch.compile unavailable ({type(error).__name__}: {str(error).splitlines()[0][:120]}); running eagerly", stacklevel=2)
        return False
    return True


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue())


@torch.no_grad()
def validate(objective: Objective, data: SliceData, batch_size: int, device: torch.device, precision: str) -> float:
    """Slice-weighted mean validation loss over the whole split.

    The networks run as for inference (:mod:`kdrecon.models.inference`: channels-last, and the
    device's batch size where that is smaller than ``batch_size``). Under torchrun each rank
    scores a contiguous share of the slices and the sums are added over ranks, so every slice
    counts exactly once.
    """
    modules = list(objective.modules().values())
    for module in modules:
        module.eval()
    world = current_world()
    shares = torch.arange(len(data), device=data.target.device).tensor_split(world.size)
    batch_size = min(batch_size, inference_batch_size(device, data.target.shape))
    total, count = 0.0, 0
    with inference_layout(*modules):
        for indices in shares[world.rank].split(batch_size):
            batch = data.batch(indices)
            with autocast(device, precision):
                total += float(objective.validation_loss(batch)) * len(indices)
            count += len(indices)
    total, count = sum_over_ranks([total, float(count)], device)
    return total / count


def _local_batches(data: SliceData, batch_size: int, generator: torch.Generator, world: World) -> Iterator[tuple[Batch, float]]:
    """This rank's part of every global batch and its share of the global batch.

    A rank whose part is empty (a last batch smaller than the number of ranks) gets one slice
    with share 0, so that it still takes part in the gradient averaging.
    """
    order = torch.randperm(len(data), generator=generator).to(data.target.device)
    for start in range(0, len(data), batch_size):
        global_batch = order[start : start + batch_size]
        local = global_batch[world.rank :: world.size]
        if len(local) == 0:
            yield data.batch(global_batch[:1]), 0.0
        else:
            yield data.batch(local), len(local) / len(global_batch)


class TrainingDiverged(ValueError):
    """A loss became non-finite: the run stops, keeping its last good checkpoint."""


def _check_finite(value: float, which: str, run_dir: Path, epoch: int, where: str, learning_rate: float, last: Path) -> None:
    """Stop at the first non-finite loss, before it reaches the weights or a checkpoint."""
    if math.isfinite(value):
        return
    kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written yet"
    raise TrainingDiverged(
        f"{run_dir}: training diverged: the {which} loss is {value} at epoch {epoch}, {where}; likely causes: a "
        f"learning rate too high ({learning_rate:g}) or non-finite values in the data; {kept}"
    )


def _agreed_loss(value: float, world: World, device: torch.device) -> float:
    """``value``, or NaN on every rank when any rank's loss is non-finite: a rank stopping alone
    would leave the others waiting in the next gradient all-reduce forever."""
    if world.distributed and sum_over_ranks([0.0 if math.isfinite(value) else 1.0], device)[0]:
        return value if not math.isfinite(value) else math.nan
    return value


@dataclass
class _Progress:
    """What a checkpoint carries from epoch to epoch besides weights, optimizer and schedule."""

    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0


@dataclass
class _Training:
    """Everything an epoch of :func:`fit` works with."""

    objective: Objective
    modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_data: SliceData
    validation_data: SliceData
    run_dir: Path
    optimization: OptimizationConfig
    seed: int
    device: torch.device
    precision: str
    channels_last: bool
    world: World
    progress: bool
    checkpoint_extra: dict[str, Any]

    @property
    def last(self) -> Path:
        return checkpoint_path(self.run_dir, "last")

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


@dataclass(frozen=True)
class _EpochLosses:
    """Slice-weighted mean of each training loss term over the global batches, and the time taken."""

    means: dict[str, float]
    slices: float
    seconds: float


def _resume(training: _Training) -> _Progress:
    """Restore weights, optimizer, schedule and progress from ``last.pt``, if there is one."""
    if not training.last.is_file():
        return _Progress()
    state = load_checkpoint(training.last, map_location=training.device)
    for name, module in training.modules.items():
        module.load_state_dict(state["modules"][name])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    progress = _Progress(state["epoch"], state["best_validation_loss"], state["best_epoch"], state["history"],
                         state["wall_seconds"])
    if training.world.is_main:  # a kill between the checkpoint and metrics.csv left the file an epoch behind
        _write_history(training.run_dir / HISTORY, progress.history)
    return progress


def _train_epoch(training: _Training, epoch: int) -> _EpochLosses:
    """One pass over the training split.

    Only the total loss is read back per step (to stop at a non-finite loss before it reaches
    the weights); the other terms are summed on the device and read once per epoch, since each
    read is a device synchronisation on a GPU.
    """
    started = time.perf_counter()
    for module in training.modules.values():
        module.train()
    optimization, world = training.optimization, training.world
    generator = torch.Generator().manual_seed(training.seed + epoch)
    steps = math.ceil(len(training.train_data) / optimization.batch_size)
    bar = tqdm(
        _local_batches(training.train_data, optimization.batch_size, generator, world),
        total=steps,
        desc=f"{training.run_dir.name} epoch {epoch + 1}/{optimization.epochs}",
        unit="batch",
        disable=None if training.progress else True,  # None: off when not a terminal
        leave=False,
    )
    total, seen = 0.0, 0
    sums: dict[str, torch.Tensor] = {}
    for step, (batch, share) in enumerate(bar, start=1):
        with autocast(training.device, training.precision):
            losses = training.objective.training_losses(batch)
        value = float(losses["total"].detach())
        _check_finite(_agreed_loss(value, world, training.device), "training", training.run_dir, epoch + 1,
                      f"step {step} of {steps}", training.learning_rate, training.last)
        training.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; scaling by share·ranks makes that the
        # gradient of the mean over the global batch.
        (losses["total"] * (share * world.size)).backward()
        training.optimizer.step()
        count = batch.target.shape[0] if share else 0
        seen, total = seen + count, total + value * count
        for name, loss in losses.items():
            if name != "total":  # float64 on the device: the same sums as Python floats
                sums[name] = sums.get(name, 0.0) + loss.detach().double() * count
        rate = seen / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{total / max(seen, 1):.4g}", slices_per_s=f"{rate:.0f}")
    summed = {"total": total, **{name: float(value) for name, value in sums.items()}}
    names = sorted(summed)
    *totals, seen = sum_over_ranks([summed[name] for name in names] + [float(seen)], training.device)
    means = {name: value / seen for name, value in zip(names, totals)}
    return _EpochLosses(means, seen, time.perf_counter() - started)


def _save_epoch(training: _Training, progress: _Progress, improved: bool, writer: SummaryWriter | None) -> None:
    """Checkpoints (``best.pt`` when improved, ``last.pt`` always), TensorBoard and ``metrics.csv``."""
    payload = {
        **training.checkpoint_extra,
        "modules": {name: module.state_dict() for name, module in training.modules.items()},
        "epoch": progress.epoch,
        "best_validation_loss": progress.best_loss,
        "best_epoch": progress.best_epoch,
        "history": progress.history,
        "wall_seconds": progress.wall_seconds,
        "seed": training.seed,
        "precision": training.precision,
        "channels_last": training.channels_last,
        "device": str(training.device),
    }
    if training.world.is_main:
        for key, value in progress.history[-1].items():
            if key != "epoch":
                writer.add_scalar(key.replace("_", "/", 1), value, progress.epoch)
        if improved:
            save_checkpoint(checkpoint_path(training.run_dir, "best"), payload)
        state = {**payload, "optimizer": training.optimizer.state_dict(), "scheduler": training.scheduler.state_dict()}
        save_checkpoint(training.last, state)
        _write_history(training.run_dir / HISTORY, progress.history)
    barrier()  # no rank runs ahead of the checkpoint it could be resumed from


def _run_epoch(training: _Training, progress: _Progress, writer: SummaryWriter | None) -> dict[str, Any]:
    """Train, validate, step the schedule and save the next epoch; returns its history row."""
    started = time.perf_counter()
    epoch = progress.epoch
    losses = _train_epoch(training, epoch)
    validation_loss = validate(training.objective, training.validation_data,
                               training.optimization.validation_batch_size, training.device, training.precision)
    learning_rate = training.learning_rate
    _check_finite(validation_loss, "validation", training.run_dir, epoch + 1, "its end", learning_rate, training.last)
    training.scheduler.step()
    seconds = time.perf_counter() - started
    row = {
        "epoch": epoch + 1,
        **{history_column(name): mean for name, mean in losses.means.items()},
        "validation_loss": validation_loss,
        "learning_rate": learning_rate,
        "train_slices_per_second": losses.slices / losses.seconds,
        "epoch_seconds": seconds,
    }
    improved = validation_loss < progress.best_loss
    progress.epoch, progress.wall_seconds = epoch + 1, progress.wall_seconds + seconds
    progress.history.append(row)
    if improved:
        progress.best_loss, progress.best_epoch = validation_loss, epoch + 1
    _save_epoch(training, progress, improved, writer)
    if training.progress:
        tqdm.write(
            f"{training.run_dir.name} epoch {epoch + 1}/{training.optimization.epochs}: train {row['train_total']:.5f} "
            f"validation {validation_loss:.5f}{' *' if improved else ''} ({row['train_slices_per_second']:.0f} slices/s)"
        )
    return row


@dataclass(frozen=True)
class TrainingPath:
    """The precision (``fp32`` or ``bf16``) and the layout a run trains in, ``auto`` resolved."""

    precision: str
    channels_last: bool


def training_path(last: Path, device: torch.device, precision: str, channels_last: bool | str,
                  compiled: bool = False) -> TrainingPath:
    """The precision and layout to train in, ``auto`` resolved for ``device`` (and whether the network
    runs ``compiled``: :func:`~kdrecon.training.fast_path.resolve_precision`); a run resuming from
    ``last`` keeps what that checkpoint recorded for a setting left to ``auto``, so it goes on as it
    began (a CPU's measured choice may differ from one process to the next, or one rank to the
    next: every rank takes rank 0's). bf16 where it is emulated warns
    (:func:`~kdrecon.training.fast_path.warn_if_emulated`)."""
    recorded: dict[str, Any] = {}
    if (precision == AUTO_PRECISION or channels_last == AUTO_LAYOUT) and last.is_file():
        recorded = load_checkpoint(last, map_location="cpu")
    if precision == AUTO_PRECISION:
        precision = recorded.get("precision", precision)
    if channels_last == AUTO_LAYOUT:
        channels_last = recorded.get("channels_last", channels_last)
    precision = resolve_precision(precision, device, compiled)
    warn_if_emulated(precision, device)
    # Every rank of a distributed run trains as rank 0 measured: each process measures on its own.
    return from_main(TrainingPath(precision, resolve_channels_last(channels_last, device, precision)))


def _start(objective: Objective, train_data: SliceData, validation_data: SliceData, run_dir: Path,
           optimization: OptimizationConfig, seed: int, device: torch.device, precision: str,
           channels_last: bool | str, compile: bool, progress: bool,
           checkpoint_extra: dict[str, Any] | None) -> _Training:
    """Modules on the device in their layout, the optimizer and schedule, the run directory ready."""
    if len(train_data) == 0 or len(validation_data) == 0:
        raise ValueError("training needs non-empty train and validation splits")
    run_dir = Path(run_dir)
    path = training_path(checkpoint_path(run_dir, "last"), device, precision, channels_last, compile)
    world = current_world()
    if world.is_main:
        (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        remove_debris(run_dir)  # temporaries of writes a kill interrupted
    modules = objective.modules()
    for module in modules.values():
        prepare_module(module, device, path.channels_last)
    parameters = [p for module in modules.values() for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=optimization.learning_rate)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, optimization.lr_step_epochs, optimization.lr_gamma)
    return _Training(objective, modules, optimizer, scheduler, train_data.to(device), validation_data.to(device),
                     run_dir, optimization, seed, device, path.precision, path.channels_last, world,
                     progress and world.is_main, checkpoint_extra or {})


def fit(
    objective: Objective,
    train_data: SliceData,
    validation_data: SliceData,
    run_dir: Path,
    optimization: OptimizationConfig,
    *,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool | str = False,
    compile: bool = False,
    checkpoint_extra: dict[str, Any] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``objective`` for ``optimization.epochs`` epochs, resuming from ``run_dir`` if possible.

    Args:
        checkpoint_extra: plain data stored in every checkpoint (model name and options,
            config) so a checkpoint can be rebuilt and traced on its own.
        on_epoch_end: called with the epoch number and its history row (for progress displays).
        channels_last, compile: see :func:`prepare_module` (``auto``: :func:`resolve_channels_last`)
            and :func:`compile_forward`.
        precision: ``fp32``, ``bf16`` or ``auto`` (:func:`resolve_precision`); checkpoints record
            the precision used.
    """
    training = _start(objective, train_data, validation_data, run_dir, optimization, seed, device, precision,
                      channels_last, compile, progress, checkpoint_extra)
    state = _resume(training)
    if state.epoch < optimization.epochs and compile:
        compile_forward(training.modules["model"], training.train_data.batch(torch.arange(1, device=device)), fresh=True)
    if state.epoch < optimization.epochs and hasattr(objective, "before_training"):
        # e.g. cache a frozen teacher's features
        objective.before_training(training.train_data, lambda: autocast(device, training.precision))
    if training.world.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        objective.distribute(lambda module: DistributedDataParallel(module, device_ids=device_ids))
    writer = None
    if training.world.is_main:
        writer = SummaryWriter(str(training.run_dir / "tensorboard"), purge_step=state.epoch)
    try:
        while state.epoch < optimization.epochs:
            row = _run_epoch(training, state, writer)
            if on_epoch_end is not None:
                on_epoch_end(state.epoch, row)
    finally:
        if writer is not None:
            writer.close()
    return FitResult(training.run_dir, state.best_epoch, state.best_loss, optimization.epochs, state.wall_seconds,
                     training.precision, training.channels_last)
