"""Train a reconstruction network: the teacher and baseline student (L1) and the SFT teacher stages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdrecon.data.dataset import SliceData, load_split
from kdrecon.distillation.student_friendly import StudentFriendlyObjective
from kdrecon.models import build_model
from kdrecon.training.checkpoint import check_same_data, checkpoint_path, data_record, initialise_from, load_checkpoint
from kdrecon.training.config import (SFT_TEACHER, TRAIN, ConfigError, DataConfig, TrainConfig, config_data, read_yaml,
                                     write_config)
from kdrecon.training.distributed import barrier, current_world, local_device
from kdrecon.training.trainer import FitResult, ReconstructionObjective, fit, resolve_device

CONFIG_FILE = "config.yaml"


#: Settings a run may be resumed with changed: the name is a label (the CLI's default is the directory's
#: name, so a renamed run directory resumes) and the teacher cache's size is the machine's memory, not
#: part of what is trained.
RESUMABLE_WITH_ANOTHER_VALUE = frozenset({"name", "teacher_cache_gib"})


def claim_run_directory(run_dir: Path, config_data: dict) -> None:
    """Create ``run_dir`` for ``config_data``, or check that the run already there used the same config
    (its ``config.yaml``, else the config its last checkpoint records: a resumed run continues it)."""
    run_dir = Path(run_dir)
    previous = _recorded_config(run_dir)
    if previous is not None:
        changed = sorted(k for k in set(previous) | set(config_data)
                         if previous.get(k) != config_data.get(k) and k not in RESUMABLE_WITH_ANOTHER_VALUE)
        if changed:
            raise ConfigError(
                f"{run_dir}: holds a run with a different config (differs in: {', '.join(changed)}); "
                "use another run directory"
            )
    run_dir.mkdir(parents=True, exist_ok=True)


def _recorded_config(run_dir: Path) -> dict | None:
    """The config of the run in ``run_dir``: its ``config.yaml``, else its last checkpoint's; None for none."""
    if (run_dir / CONFIG_FILE).is_file():
        return read_yaml(run_dir / CONFIG_FILE)
    last = checkpoint_path(run_dir, "last")
    return load_checkpoint(last).get("config") if last.is_file() else None


def check_resumed_on_same_data(run_dir: Path, dataset: str | Path) -> None:
    """A run resumed from its last checkpoint continues on the data it began with: the same path
    prepared again with other options would mix two datasets in one network."""
    last = checkpoint_path(Path(run_dir), "last")
    if last.is_file():
        check_same_data(load_checkpoint(last), dataset, run_dir)


def load_splits(
    data: DataConfig, train_data: SliceData | None = None, validation_data: SliceData | None = None
) -> tuple[SliceData, SliceData]:
    """The configured train and validation splits, unless given already."""
    if train_data is None:
        train_data = load_split(data.dataset, "train", data.acceleration, data.task, data.image)
    if validation_data is None:
        validation_data = load_split(data.dataset, "validation", data.acceleration, data.task, data.image)
    return train_data, validation_data


def train_model(
    config: TrainConfig,
    run_dir: Path,
    progress: bool = True,
    train_data: SliceData | None = None,
    validation_data: SliceData | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``config.model`` on ``config.data``; resumes if ``run_dir`` holds an unfinished run.

    A network trains on L1 to the target; ``sft-teacher`` runs the SFT step with the loss
    weights of ``config.sft`` (:class:`StudentFriendlyObjective`). With ``config.init_from`` the
    network starts from a trained one's weights (fine-tuning, e.g. from another acceleration or
    dataset); a resumed run continues from its own last checkpoint.
    ``train_data``/``validation_data`` replace the configured dataset (for notebooks and tests).

    Example (a tiny run on the embedded sample)::

        from kdrecon.training.config import TrainConfig
        config = TrainConfig.model_validate({"model": {"name": "D3C5"}, "optimization": {"epochs": 2}})
        result = train_model(config, "runs/student")
    """
    run_dir = Path(run_dir)
    device = local_device(resolve_device(config.device))
    if train_data is None:
        check_resumed_on_same_data(run_dir, config.data.dataset)
    data = data_record(config.data.dataset, train_data is None)
    train_data, validation_data = load_splits(config.data, train_data, validation_data)
    torch.manual_seed(config.seed)
    model = build_model(config.model.name, **config.model.options())
    if config.init_from is not None:  # before the run directory exists, so a refusal leaves nothing behind
        initialise_from(model, Path(config.init_from))
    if current_world().is_main:
        claim_run_directory(run_dir, config_data(config))
        write_config(config, run_dir / CONFIG_FILE)
    barrier()
    if config.model.is_student_friendly_teacher:
        weights = config.sft
        objective = StudentFriendlyObjective(model, weights.teacher_weight, weights.branch_weight, weights.imitation_weight)
    else:
        objective = ReconstructionObjective(model)
    return fit(
        objective,
        train_data,
        validation_data,
        run_dir,
        config.optimization,
        seed=config.seed,
        device=device,
        precision=config.precision,
        channels_last=config.channels_last,
        compile=config.compile,
        checkpoint_extra={
            "stage": SFT_TEACHER if config.model.is_student_friendly_teacher else TRAIN,
            "model": {"name": config.model.name, "options": config.model.options()},
            "config": config_data(config),
            **data,
        },
        progress=progress,
        on_epoch_end=on_epoch_end,
    )
