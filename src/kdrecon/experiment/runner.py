"""Run an experiment's stage graph: reuse finished stages, resume interrupted ones, rerun changed ones.

``RUN/`` holds ``experiment.yaml`` (the validated config), ``experiment.json`` (the stages, their
seeds, fingerprints and where they are), ``cpu-training-path.json`` (how ``auto`` resolves on a
CPU for every stage: :mod:`kdrecon.experiment.training_path`), ``stages/seed-{s}/{name}/`` (each a training or
distillation run directory plus ``evaluation/`` and ``stage.json``), and the report; the layout
is :mod:`kdrecon.report.run_layout`'s.

Stages are identified by ``seed-{s}/{name}``. A stage is complete when its ``stage.json`` says
so with the current fingerprint; such a stage is reused. A stage with another fingerprint (its
config or something upstream changed) is rerun only with ``rerun=True``, after being moved to
``RUN/superseded/{time}/`` (never deleted); :mod:`kdrecon.experiment.resumption` decides which.
An interrupted stage resumes from its last checkpoint. Everything that could fail later is
checked first (:mod:`kdrecon.experiment.checks`).

Under ``torchrun`` every process runs the graph: rank 0 decides which stages are pending, each
of those trains on all processes through DistributedDataParallel, and rank 0 alone moves stale
stages aside, writes the stage files, evaluates, measures and writes the report; the others wait for
it at the end of each stage.
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from kdrecon import __version__
from kdrecon.data.dataset import SliceData, dataset_identity, load_split
from kdrecon.data.layout import remove_debris
from kdrecon.evaluation.benchmark import count_macs
from kdrecon.evaluation.evaluate import evaluate, write_json
from kdrecon.experiment.checks import check_dataset_slices, check_experiment, check_inputs, check_run_directory
from kdrecon.experiment.config import ExperimentConfig
from kdrecon.experiment.run_lock import RUN_LOCK_HOLDER, holder, lock_descriptors, run_lock
from kdrecon.experiment.resumption import (copy_reusable, epochs_done, follow_moves, move_aside, pending_stages,
                                          recorded_locations, rerun_refusal)
from kdrecon.experiment.stages import STAGE_REFERENCE, Stage, build_stages, fingerprints
from kdrecon.experiment.training_path import adopted, copy_recorded_path, experiment_cpu_path, recorded_cpu_path
from kdrecon.models import count_parameters
from kdrecon.report.build import build_report
from kdrecon.report.results import evaluation_problem
from kdrecon.report.run_layout import RunLayout, StageFiles, StageStatus, is_finished
from kdrecon.training.checkpoint import DATA_IDENTITY, load_model
from kdrecon.training.config import (DISTILL, TRAIN, ConfigError, DistillConfig, TrainConfig, config_data, validate,
                                     write_config)
from kdrecon.training.distill import distill_student
from kdrecon.training.distributed import barrier, current_world, from_main
from kdrecon.training.supervised import CONFIG_FILE, train_model
from kdrecon.training.teacher_cache import SHARING_PROCESSES
from kdrecon.training.trainer import FitResult, TrainingDiverged, resolve_device

SELECTION_RULE = "checkpoint with the lowest validation loss (student L1; teacher L1 for the SFT teacher; feature loss in KD-MRI's feature stage)"


class StageFailed(ValueError):
    """A stage run in its own process did not finish (its own error is printed above)."""


class Progress:
    """One line per epoch: the stage, its epoch, and the time left in it and in the experiment.

    The time left in a stage comes from its own recent epochs; a stage not started yet is
    assumed to take as long per epoch as the stages measured so far do on average. ``done``
    counts the epochs an interrupted stage finished before this session.
    """

    def __init__(self, stages: list[Stage], pending: set[str], enabled: bool, done: dict[str, int] | None = None) -> None:
        self.stages = stages
        self.planned = {s.id: s.planned_epochs() for s in stages if s.id in pending}
        self.done: dict[str, int] = dict(done or {})
        self.epoch_seconds: dict[str, list[float]] = {}
        self.enabled = enabled

    def callback(self, stage: Stage, index: int) -> Callable[..., None]:
        def on_epoch_end(*args: Any) -> None:
            *part, epoch, row = args  # distillation passes its sub-stage first
            self.done[stage.id] = self.done.get(stage.id, 0) + 1
            self.epoch_seconds.setdefault(stage.id, []).append(row["epoch_seconds"])
            own = statistics.median(self.epoch_seconds[stage.id][-3:])
            typical = statistics.mean(statistics.median(times) for times in self.epoch_seconds.values())
            stage_left = (self.planned[stage.id] - self.done[stage.id]) * own
            later = sum(self.planned[n] - self.done.get(n, 0) for n in self.planned if n != stage.id) * typical
            sub = f" {part[0]}" if part else ""
            if self.enabled:
                print(
                    f"[stage {index}/{len(self.stages)} {stage.id}{sub}] epoch {epoch} · "
                    f"validation {row['validation_loss']:.4g} · {row['epoch_seconds']:.1f} s/epoch · "
                    f"stage ≈ {_clock(stage_left)} left · experiment ≈ {_clock(stage_left + later)} left",
                    flush=True,
                )

        return on_epoch_end


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _stage_config(stage: Stage, layout: RunLayout) -> TrainConfig | DistillConfig:
    data = dict(stage.config)
    if stage.kind == DISTILL:
        data["teacher"] = str(layout.stage(data["teacher"].removeprefix(STAGE_REFERENCE)).directory)
        return validate(DistillConfig, data, f"stage {stage.id}")
    return validate(TrainConfig, data, f"stage {stage.id}")


def _measure(stage_dir: Path, batch_size: int, data) -> dict[str, Any]:
    """Parameters and MACs per slice of a stage's final network.

    Its speed is not measured here: a time taken at the end of one stage depends on what else
    the machine did then, so the report times all networks together, in alternation.
    """
    model, _ = load_model(stage_dir)
    macs = count_macs(model, data.batch(torch.arange(batch_size)))
    return {"parameters": count_parameters(getattr(model, "teacher", model)), "macs_per_slice": macs}


def _train_stage(stage: Stage, stage_config: Any, files: StageFiles, callback: Callable[..., None]) -> FitResult:
    """Train or distil the stage; a diverged run is a :class:`StageFailed`."""
    try:
        if stage.kind == TRAIN:
            return train_model(stage_config, files.directory, progress=False, on_epoch_end=callback)
        return distill_student(stage_config, files.directory, progress=False, on_epoch_end=callback)
    except TrainingDiverged as error:
        raise StageFailed(f"stage {stage.id} failed: {error}") from None


@contextmanager
def _recorded_if_stopped(files: StageFiles, state: dict[str, Any], main: bool) -> Iterator[None]:
    """A stage that stops with an error is recorded in ``stage.json`` as ``failed`` (``interrupted``
    for Ctrl-C or SIGTERM) with the error, not left ``running``; it is still resumed by the next run."""
    try:
        yield
    except BaseException as error:
        if main:
            status = StageStatus.INTERRUPTED if isinstance(error, KeyboardInterrupt) else StageStatus.FAILED
            write_json(files.state_file, {**state, "status": status, "error": str(error) or type(error).__name__})
        raise


def _running_state(stage: Stage, plan: _Plan, previous: dict[str, Any]) -> dict[str, Any]:
    """``stage.json`` of a stage being run; a resumed stage keeps the time it first started."""
    return {
        "name": stage.name,
        "seed": stage.seed,
        "fingerprint": plan.prints[stage.id],
        DATA_IDENTITY: plan.data_identity,
        "status": StageStatus.RUNNING,
        "started": previous.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _run_stage(stage: Stage, index: int, plan: _Plan, display: Progress) -> None:
    """Train (or resume) one stage, evaluate it, measure it, and mark it complete.

    Training runs on every rank; rank 0 alone writes ``stage.json``, evaluates and measures.
    """
    config, stage_config, validation_data = plan.config, plan.configs[stage.id], plan.validation_data
    files = plan.layout.stage(stage.id)
    stage_dir = files.directory
    main = current_world().is_main
    if display.enabled:
        print(f"[stage {index}/{len(plan.stages)} {stage.id}] {stage.label}: {stage.planned_epochs()} epochs", flush=True)
    state = _running_state(stage, plan, files.state())
    if main:
        stage_dir.mkdir(parents=True, exist_ok=True)
        follow_moves(stage_dir / CONFIG_FILE, stage_config)
        write_json(files.state_file, state)
    barrier()
    began = time.perf_counter()
    with _recorded_if_stopped(files, state, main):
        result = _train_stage(stage, stage_config, files, display.callback(stage, index))
        if not main:
            barrier()  # wait for rank 0 to finish the stage: the next one may read its checkpoint
            return
        # In the precision training ran in, as its checkpoint records it: evaluate's as-trained would
        # measure this device's fast path again, in this process.
        evaluation = evaluate(stage_dir, files.evaluation, device=config.device, data=validation_data,
                              precision=result.precision)
        measured = _measure(stage_dir, config.report.timing_batch_size, validation_data)
    device = resolve_device(config.device)
    state.update(
        status=StageStatus.COMPLETE,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        wall_seconds=result.wall_seconds,
        session_seconds=time.perf_counter() - began,
        best_epoch=result.best_epoch,
        device=str(device),
        precision=result.precision,
        channels_last=result.channels_last,
        metrics=evaluation.summary["model_metrics"],
        **measured,
    )
    write_json(files.state_file, state)
    barrier()


def _evaluate_again_where_unusable(plan: _Plan, pending: set[str], display_enabled: bool) -> None:
    """Evaluate again every complete stage whose evaluation the report cannot use (files removed, or
    another split, acceleration or checkpoint evaluated into it by hand): the trained network is the
    work, its evaluation derived from it. The unusable one is moved to ``RUN/superseded/``."""
    for stage in plan.stages:
        files = plan.layout.stage(stage.id)
        state = files.state()
        if stage.id in pending or not is_finished(state, plan.prints[stage.id]):
            continue
        problem = evaluation_problem(files, plan.config.data, plan.data_identity)
        if problem is None:
            continue
        kept = move_aside([files.evaluation], plan.layout, False) if files.evaluation.exists() else None
        if display_enabled:
            print(f"[evaluate again] {stage.id}: {problem}" + (f"; the previous evaluation is in {kept}" if kept else ""),
                  flush=True)
        evaluation = evaluate(files.directory, files.evaluation, device=plan.config.device, data=plan.validation_data,
                              precision=state.get("precision", "fp32"))
        write_json(files.state_file, {**state, "metrics": evaluation.summary["model_metrics"]})


def _run_in_parallel(stages: list[Stage], pending: set[str], run_dir: Path, workers: int, progress: bool) -> None:
    """Run pending stages in up to ``workers`` processes at once, each as soon as its inputs exist.

    With enough GPUs each process gets its own (``CUDA_VISIBLE_DEVICES``); on the CPU the cores
    are shared out (``OMP_NUM_THREADS``).
    """
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // workers)
    waiting = [s for s in stages if s.id in pending]
    running: dict[str, tuple[subprocess.Popen, int]] = {}
    free = list(range(workers))
    try:
        while waiting or running:
            for stage in list(waiting):
                if free and not any(d in pending for d in stage.depends_on):
                    slot = free.pop(0)
                    environment = {**os.environ, RUN_LOCK_HOLDER: holder()}  # they share our lock
                    if gpus >= workers:
                        environment["CUDA_VISIBLE_DEVICES"] = str(slot)
                    else:  # the workers share the CPU cores, and the memory of the CPU or of a GPU
                        environment["OMP_NUM_THREADS"] = str(threads)
                        environment[SHARING_PROCESSES] = str(workers)
                    command = [sys.executable, "-m", "kdrecon", "run", str(RunLayout(run_dir).config), "--run-dir",
                               str(run_dir), "--only", stage.id, "--no-report"] + ([] if progress else ["--quiet"])
                    running[stage.id] = (_stage_process(command, environment, RunLayout(run_dir)), slot)
                    waiting.remove(stage)
            time.sleep(0.5)
            for name, (process, slot) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                free.append(slot)
                if process.returncode != 0:
                    raise StageFailed(f"stage {name} failed (exit status {process.returncode}); run again to resume")
                pending.discard(name)
    finally:
        for process, _ in running.values():
            process.terminate()
        for process, _ in running.values():
            process.wait()  # each records its stage interrupted before the lock is released


def _stage_process(command: list[str], environment: dict[str, str], layout: RunLayout) -> subprocess.Popen:
    """A stage process of ``--parallel``, holding the run directory's lock with its parent: if the
    parent is killed, no other run can take the directory while the stage process still writes it."""
    return subprocess.Popen(command, env=environment, pass_fds=lock_descriptors(layout))


def _select(stages: list[Stage], only: Sequence[str]) -> set[str]:
    """The ids ``--only`` names: a stage id (``seed-42/teacher``), or a name for every seed."""
    ids = {s.id for s in stages}
    selected = set()
    for item in only:
        matches = {item} & ids or {s.id for s in stages if s.name == item}
        if not matches:
            raise ConfigError(f"--only: no stage {item!r} in this experiment (stages: {', '.join(sorted(ids))})")
        selected |= matches
    return selected


def _manifest(config: ExperimentConfig, stages: list[Stage], prints: dict[str, str], configs: dict[str, Any],
              layout: RunLayout, seconds: float | None, identity: str) -> dict[str, Any]:
    return {
        "name": config.name,
        "kdrecon": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(resolve_device(config.device)),
        "seeds": config.replicate_seeds,
        "paper_setting": config.paper_column,
        "checkpoint_selection": SELECTION_RULE,
        "config": config_data(config),
        DATA_IDENTITY: identity,
        "stages": [
            {"id": s.id, "name": s.name, "seed": s.seed, "role": s.role, "label": s.label, "kind": s.kind,
             "method": s.method, "model": s.model, "variant": s.variant, "ablation_of": s.ablation_of,
             "fingerprint": prints[s.id],
             "directory": layout.stage(s.id).directory.relative_to(layout.root).as_posix(),
             "depends_on": list(s.depends_on), "config": config_data(configs[s.id])}
            for s in stages
        ],
        "session_seconds": seconds,
    }


@dataclass(frozen=True)
class _Plan:
    """An experiment checked against its run directory: its stages, their configs and fingerprints."""

    config: ExperimentConfig
    layout: RunLayout
    stages: list[Stage]
    prints: dict[str, str]
    configs: dict[str, TrainConfig | DistillConfig]
    selected: set[str]
    validation_data: SliceData
    #: :func:`kdrecon.data.dataset.dataset_identity` of the experiment's data, recorded by every stage.
    data_identity: str


def _plan(config: ExperimentConfig, layout: RunLayout, only: Sequence[str], parallel: int,
          reuse_from: Path | None) -> _Plan:
    """Validate everything that could fail later, before anything is written."""
    check_run_directory(layout.root)
    config = recorded_locations(config, layout)
    if reuse_from is not None:
        check_run_directory(Path(reuse_from))
        if not RunLayout(Path(reuse_from)).config.is_file():
            raise ConfigError(f"--reuse-from {reuse_from}: not an experiment run directory")
    if parallel > 1 and current_world().distributed:
        raise ConfigError("--parallel: stages already share the processes started by torchrun; leave it at 1")
    stages = build_stages(config)
    configs = {stage.id: _stage_config(stage, layout) for stage in stages}  # validate all up front
    selected = _select(stages, only)
    validation_data = load_split(config.data.dataset, "validation", config.data.acceleration, config.data.task,
                                 config.data.image)
    for recorded in [layout] + ([RunLayout(Path(reuse_from))] if reuse_from is not None else []):
        recorded_cpu_path(recorded)  # a damaged record is refused before anything is written
    check_dataset_slices(config, len(validation_data))
    check_experiment(config, stages, configs, len(validation_data))
    return _Plan(config, layout, stages, fingerprints(stages), configs, selected, validation_data,
                 dataset_identity(config.data.dataset))


def _write_run_directory(plan: _Plan, only: Sequence[str], stale: list[Path], progress: bool) -> None:
    """Create the run directory (rank 0): config, a manifest of what will run, stale stages moved aside."""
    layout = plan.layout
    layout.root.mkdir(parents=True, exist_ok=True)
    if not only:  # stage processes started with --only share the root with their parent
        remove_debris(layout.root, recursive=False)
        remove_debris(layout.figures)
    # --only on a new directory still makes it an experiment run directory, so the study can
    # be built stage by stage; on an existing one it leaves the recorded experiment as it is.
    if not only or not layout.config.is_file():
        write_config(plan.config, layout.config)
        # Written now too, so 'kdrecon report' can report the finished stages of a study still running.
        write_json(layout.manifest, _manifest(plan.config, plan.stages, plan.prints, plan.configs, layout, None,
                                              plan.data_identity))
    move_aside(stale, layout, display_enabled=progress)


def _run_pending(plan: _Plan, pending: set[str], progress: bool) -> None:
    """Run the selected stages that are not complete, in the graph's order."""
    display = Progress(plan.stages, pending, progress and current_world().is_main, epochs_done(plan.layout, pending))
    total = len(plan.stages)
    for index, stage in enumerate(plan.stages, start=1):
        if plan.selected and stage.id not in plan.selected:
            continue
        if stage.id in pending:
            _run_stage(stage, index, plan, display)
        elif display.enabled:
            print(f"[stage {index}/{total} {stage.id}] complete, reused", flush=True)


def run_experiment(
    config: ExperimentConfig,
    run_dir: Path,
    progress: bool = True,
    report: bool = True,
    only: Sequence[str] = (),
    parallel: int = 1,
    reuse_from: Path | None = None,
    rerun: bool = False,
) -> dict[str, Any] | None:
    """Run (or continue) ``config`` in ``run_dir``; returns the manifest written to ``experiment.json``.

    Args:
        only: run just these stages (ids ``seed-42/teacher``, or names for every seed; their
            inputs must be complete); no manifest or report.
        parallel: run up to this many independent stages at once, in separate processes.
        reuse_from: another experiment's run directory; its complete stages with the same
            fingerprint as one of ours (same settings, same inputs) are copied in, not retrained.
        rerun: stages already run whose settings changed are moved to ``RUN/superseded/`` and run
            again; without it such a run is refused before anything moves, naming what changed.
    """
    layout = RunLayout(Path(run_dir))
    plan = _plan(config, layout, only, parallel, reuse_from)
    with run_lock(layout) if current_world().is_main else nullcontext(), _sigterm_as_interrupt():
        return _run_locked(plan, only, parallel, reuse_from, rerun, progress, report)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's time limit, ``--parallel`` stopping its stage processes) ends the
    run as Ctrl-C does: the stage recorded ``interrupted`` and the lock released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_locked(plan: _Plan, only: Sequence[str], parallel: int, reuse_from: Path | None, rerun: bool, progress: bool,
                report: bool) -> dict[str, Any] | None:
    """:func:`run_experiment` once the run directory is locked."""
    layout, main = plan.layout, current_world().is_main
    if reuse_from is not None and main:
        copy_reusable(plan.stages, plan.prints, layout, RunLayout(Path(reuse_from)), progress, plan.data_identity)
        copy_recorded_path(layout, RunLayout(Path(reuse_from)))
    barrier()
    # Every rank must run the same stages (each one's collectives and barriers): rank 0 decides.
    pending, stale = from_main(pending_stages(plan.stages, plan.prints, layout, plan.selected, plan.data_identity))
    if stale and not rerun:
        raise ConfigError(from_main(rerun_refusal(stale, layout, plan.configs, plan.data_identity)))
    check_inputs(plan.stages, plan.selected, pending)  # before a changed stage is moved aside
    if main:
        _write_run_directory(plan, only, stale, progress)
    barrier()
    return _run_and_report(plan, pending, only, parallel, progress, report)


def _run_and_report(plan: _Plan, pending: set[str], only: Sequence[str], parallel: int, progress: bool,
                    report: bool) -> dict[str, Any] | None:
    """Run the pending stages, evaluate again what cannot be reported, then (unless ``only``) write
    the manifest and the report."""
    main = current_world().is_main
    started = time.perf_counter()
    # auto resolves for every stage as this experiment's first process measured it
    cpu_path = from_main(experiment_cpu_path(plan.config, plan.layout, plan.stages, plan.prints) if main else None)
    with adopted(cpu_path):
        if parallel > 1 and not only:
            _run_in_parallel(plan.stages, pending, plan.layout.root, parallel, progress)
        _run_pending(plan, pending, progress)
    if only or not main:  # --parallel's stage processes leave the evaluations to their parent
        return None
    _evaluate_again_where_unusable(plan, pending, progress)
    manifest = _manifest(plan.config, plan.stages, plan.prints, plan.configs, plan.layout, time.perf_counter() - started,
                         plan.data_identity)
    write_json(plan.layout.manifest, manifest)
    if report:
        build_report(plan.layout.root)
    return manifest


