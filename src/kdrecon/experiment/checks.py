"""What ``kdrecon run`` checks before anything is written or trained.

Everything that would otherwise fail hours into a study is refused up front with
:class:`~kdrecon.training.config.ConfigError`: a run directory holding something else, a device
that is not there, a timing batch larger than the validation set, a distillation whose layers
or method options do not fit its networks, and ``--only`` stages whose inputs are missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdrecon.data.dataset import count_slices
from kdrecon.experiment.config import ExperimentConfig
from kdrecon.experiment.stages import STAGE_REFERENCE, Stage
from kdrecon.models import build_model
from kdrecon.report.run_layout import RunLayout
from kdrecon.training.config import DISTILL, ConfigError
from kdrecon.training.distill import check_distillation
from kdrecon.training.trainer import resolve_device


def check_experiment(config: ExperimentConfig, stages: list[Stage], configs: dict[str, Any], validation_slices: int) -> None:
    """What would otherwise fail hours into a run: the device, the timing batch, every distillation's
    layers and method options (against untrained networks of the teacher stage's architecture)."""
    try:
        resolve_device(config.device)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if config.report.timing_batch_size > validation_slices:
        raise ConfigError(f"report.timing_batch_size: {config.report.timing_batch_size} is more than the "
                          f"{validation_slices} validation slices it is measured on")
    teachers: dict[str, torch.nn.Module] = {}
    for stage in stages:
        if stage.kind != DISTILL:
            continue
        source = stage.config["teacher"].removeprefix(STAGE_REFERENCE)
        try:
            with torch.random.fork_rng(devices=[]):  # random initialisations must not move the seeded stream
                if source not in teachers:
                    model = configs[source].model
                    teachers[source] = build_model(model.name, **model.options())
                check_distillation(configs[stage.id], teachers[source])
        except ConfigError as error:
            raise ConfigError(f"stage {stage.id}: {error}") from None


def check_dataset_slices(config: ExperimentConfig, validation_slices: int) -> None:
    """The dataset holds the slices per split the experiment states (``dataset_slices``): the same
    directory name prepared with other phases, crop or subjects would change every number silently."""
    for split, expected in (config.dataset_slices or {}).items():
        found = validation_slices if split == "validation" else count_slices(config.data.dataset, split)
        if found != expected:
            raise ConfigError(f"dataset_slices.{split}: the experiment expects {expected} {split} slices, "
                              f"{config.data.dataset} has {found} (prepared with other phases, crop or subjects?); "
                              "--set 'dataset_slices={}' uses it anyway")


def check_inputs(stages: list[Stage], selected: set[str], pending: set[str]) -> None:
    """With ``--only``, refuse stages whose inputs are not complete."""
    blocked = sorted(d for name in selected for d in build_dependencies(stages, name) if d in pending and d not in selected)
    if blocked:
        raise ConfigError(f"--only: stage {blocked[0]!r}, an input of {', '.join(sorted(selected))}, is not complete")


def build_dependencies(stages: list[Stage], stage: str) -> set[str]:
    """The id of every stage ``stage`` (an id) needs, directly or through others."""
    by_id = {s.id: s for s in stages}
    needed, todo = set(), list(by_id[stage].depends_on)
    while todo:
        dependency = todo.pop()
        if dependency not in needed:
            needed.add(dependency)
            todo += by_id[dependency].depends_on
    return needed


def check_run_directory(run_dir: Path) -> None:
    """Refuse a directory that holds something other than an experiment."""
    layout = RunLayout(Path(run_dir))
    if layout.root.is_dir() and any(p != layout.lock for p in layout.root.iterdir()) and not layout.config.is_file():
        raise ConfigError(f"{layout.root}: exists and is not an experiment run directory")
