"""Train a reconstruction network on L1 to the target: the teacher and baseline student stages."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from kdrecon.data.dataset import load_split
from kdrecon.models import build_model
from kdrecon.training.config import ConfigError, TrainConfig, write_config
from kdrecon.training.trainer import FitResult, ReconstructionObjective, fit, resolve_device

CONFIG_FILE = "config.yaml"


def claim_run_directory(run_dir: Path, config_data: dict) -> None:
    """Create ``run_dir`` for ``config_data``, or check that the run already there used the same config."""
    run_dir = Path(run_dir)
    existing = run_dir / CONFIG_FILE
    if existing.is_file():
        previous = yaml.safe_load(existing.read_text())
        if previous != config_data:
            changed = sorted(k for k in set(previous) | set(config_data) if previous.get(k) != config_data.get(k))
            raise ConfigError(
                f"{run_dir}: holds a run with a different config (differs in: {', '.join(changed)}); "
                "use another run directory"
            )
    run_dir.mkdir(parents=True, exist_ok=True)


def train_model(config: TrainConfig, run_dir: Path, progress: bool = True) -> FitResult:
    """Train ``config.model`` on ``config.data``; resumes if ``run_dir`` holds an unfinished run.

    Example (a tiny run on the embedded sample)::

        from kdrecon.training.config import TrainConfig
        config = TrainConfig.model_validate({"model": {"name": "D3C5"}, "optimization": {"epochs": 2}})
        result = train_model(config, "runs/student")
    """
    run_dir = Path(run_dir)
    claim_run_directory(run_dir, config.model_dump(mode="json"))
    write_config(config, run_dir / CONFIG_FILE)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(config.model.name, **config.model.options())
    train_data = load_split(config.data.dataset, "train", config.data.acceleration)
    validation_data = load_split(config.data.dataset, "validation", config.data.acceleration)
    return fit(
        ReconstructionObjective(model),
        train_data,
        validation_data,
        run_dir,
        config.optimization,
        seed=config.seed,
        device=device,
        precision=config.precision,
        checkpoint_extra={
            "stage": "train",
            "model": {"name": config.model.name, "options": config.model.options()},
            "config": config.model_dump(mode="json"),
        },
        progress=progress,
    )
