"""Where an experiment keeps what: the one place that knows a run directory's file names.

``RUN/`` holds::

    experiment.yaml            the validated experiment config
    experiment.json            the manifest: stages, seeds, fingerprints, where each stage is
    cpu-training-path.json     how ``auto`` resolves on a CPU for every stage (experiment.training_path)
    stages/seed-{s}/{stage}/   one training or distillation run directory per (stage, seed)
        stage.json             fingerprint, status, wall time, parameters, MACs
        metrics.csv            the final (or only) training stage's history
        feature-stage/         KD-MRI's first distillation stage, when the procedure has one
        evaluation/            what :func:`kdrecon.evaluation.evaluate.evaluate` writes
    superseded/{time}/seed-{s}/{stage}/   stages whose settings changed, moved aside (restorable)
    report.md, report.html, figures/
    .kdrecon-run.lock          locked by the ``kdrecon run`` writing the directory (its process id and host), while it runs

The runner writes through :class:`RunLayout` and the report reads through it, so neither spells
a file name; the names inside a training run directory and an evaluation directory are the
ones the training and evaluation modules that write them declare. A stage is identified by its
``id``, ``seed-{s}/{name}``, which is also its path
below ``stages/``.

Example:
    >>> stage_id("teacher", 42)
    'seed-42/teacher'
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kdrecon.evaluation.evaluate import EVALUATION, PER_SLICE, PER_VOLUME, RECONSTRUCTIONS, SUMMARY
from kdrecon.training.distill import FEATURE_STAGE
from kdrecon.training.trainer import HISTORY

EXPERIMENT_CONFIG = "experiment.yaml"
MANIFEST = "experiment.json"
STAGES = "stages"
STAGE_FILE = "stage.json"
SUPERSEDED = "superseded"
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
FIGURES = "figures"
#: How ``auto`` precision and layout resolve on a CPU for every stage of the experiment.
CPU_TRAINING_PATH = "cpu-training-path.json"
#: Locked (and naming its process and host) while a ``kdrecon run`` writes the directory.
RUN_LOCK = ".kdrecon-run.lock"


class StageStatus(StrEnum):
    """A stage's ``status`` in ``stage.json``; only ``complete`` stages are reused and reported."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    #: Stopped by Ctrl-C or SIGTERM.
    INTERRUPTED = "interrupted"


def is_finished(state: dict[str, Any], fingerprint: str) -> bool:
    """Whether ``stage.json``'s ``state`` records a complete stage of the settings ``fingerprint``."""
    return state.get("status") == StageStatus.COMPLETE and state.get("fingerprint") == fingerprint


#: The folder of one seed's stages is this prefix and the seed, e.g. ``seed-42``.
SEED_FOLDER = "seed-"


def stage_id(name: str, seed: int) -> str:
    """The identifier (and relative directory below ``stages/``) of stage ``name`` for ``seed``."""
    return f"{SEED_FOLDER}{seed}/{name}"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when the file does not exist (a stage never started).

    A file that exists but is not a JSON object is an error naming it: read as "absent", a
    damaged ``stage.json`` would have its finished stage silently rerun.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def read_history(path: Path) -> tuple[list[int], list[float]]:
    """Epochs and validation losses of a training run's ``metrics.csv`` (empty when absent)."""
    epochs, losses = [], []
    if Path(path).is_file():
        with open(path, newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    epochs.append(int(row["epoch"]))
                    losses.append(float(row["validation_loss"]))
                except (KeyError, TypeError, ValueError):
                    raise ValueError(f"{path}: line {line} has no numeric epoch and validation_loss") from None
    return epochs, losses


@dataclass(frozen=True)
class StageFiles:
    """The files of one stage's run directory."""

    directory: Path

    @property
    def state_file(self) -> Path:
        return self.directory / STAGE_FILE

    @property
    def evaluation(self) -> Path:
        return self.directory / EVALUATION

    @property
    def history(self) -> Path:
        return self.directory / HISTORY

    @property
    def feature_history(self) -> Path:
        return self.directory / FEATURE_STAGE / HISTORY

    @property
    def summary(self) -> Path:
        return self.evaluation / SUMMARY

    @property
    def per_slice(self) -> Path:
        return self.evaluation / PER_SLICE

    @property
    def per_volume(self) -> Path:
        return self.evaluation / PER_VOLUME

    def state(self) -> dict[str, Any]:
        return read_json(self.state_file) or {}

    def reconstruction(self, volume: str) -> np.ndarray:
        """The stored reconstruction ``(S, H, W)`` of ``volume``."""
        with h5py.File(self.evaluation / RECONSTRUCTIONS / f"{volume}.h5", "r") as file:
            return file["reconstruction"][()]


@dataclass(frozen=True)
class RunLayout:
    """The paths of an experiment's run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / EXPERIMENT_CONFIG

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def stages(self) -> Path:
        return self.root / STAGES

    @property
    def superseded(self) -> Path:
        return self.root / SUPERSEDED

    @property
    def report_markdown(self) -> Path:
        return self.root / REPORT_MARKDOWN

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def figures(self) -> Path:
        return self.root / FIGURES

    @property
    def lock(self) -> Path:
        return self.root / RUN_LOCK

    @property
    def cpu_training_path(self) -> Path:
        return self.root / CPU_TRAINING_PATH

    def stage(self, identifier: str) -> StageFiles:
        return StageFiles(self.stages / identifier)


def enclosing_experiment(path: Path) -> RunLayout | None:
    """The experiment run directory ``path`` lies inside (the nearest folder above it with a
    manifest), or None: a stage's directory belongs to the ``kdrecon run`` writing its experiment."""
    for folder in Path(path).resolve().parents:
        if (folder / MANIFEST).is_file():
            return RunLayout(folder)
    return None
