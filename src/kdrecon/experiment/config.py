"""A whole study as one validated YAML file: which stages to run, with which settings.

Example (``kdrecon run study.yaml``)::

    name: cardiac-4x
    data: {dataset: datasets/sunnybrook-4x, acceleration: 4x}
    teacher: D5C5
    student: D3C5
    methods: [at, fitnets, sp, fsp, cc]
    random_init_ablation: true          # SFT-KD with the student initialised at random (Table 5)
    compression_sweep: [D4C5, D2C5]     # more baseline students for the size table (Table 8)
    optimization: {epochs: 150}         # every stage; `epochs` below overrides per stage kind

Presets shipped with the package (:data:`PRESETS`) are such files; ``kdrecon run demo`` or
``kdrecon run paper-cardiac-4x`` name them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from kdrecon.models.dccnn import parse_dncm
from kdrecon.training.config import (
    DataConfig,
    OptimizationConfig,
    StrictModel,
    StudentFriendlyLossConfig,
    load_config,
)

METHODS = ("at", "fitnets", "sp", "fsp", "cc", "at-paper", "nst", "ft", "pkt")
PRESETS = ("demo", "paper-cardiac-4x", "paper-cardiac-5x", "paper-brain-4x", "paper-brain-5x")


class StageEpochs(StrictModel):
    """Epochs per stage kind; unset ones use ``optimization.epochs``."""

    teacher: int | None = Field(None, gt=0)
    student: int | None = Field(None, gt=0)
    sft_teacher: int | None = Field(None, gt=0)
    feature_stage: int | None = Field(None, gt=0, description="KD-MRI's first distillation stage")
    distillation: int | None = Field(None, gt=0, description="the (final) distillation stage")


class ReportConfig(StrictModel):
    figure_slices: int = Field(2, ge=1, description="slices shown in the reconstruction figure")
    zoom: float = Field(0.35, gt=0, le=1, description="side of the zoomed inset, as a fraction of the image")
    timing_batch_size: int = Field(1, gt=0, description="batch size of the measured inference time")


class ExperimentConfig(StrictModel):
    name: str = "experiment"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "bf16"
    channels_last: bool = True
    data: DataConfig = DataConfig()
    teacher: str = "D5C5"
    student: str = "D3C5"
    channels: int = Field(32, gt=0)
    methods: list[str] = Field(default_factory=lambda: ["at"], min_length=1)
    procedure: Literal["two-stage", "single-stage"] = "two-stage"
    alpha: float = Field(0.5, ge=0, le=1)
    sft: StudentFriendlyLossConfig = StudentFriendlyLossConfig()
    random_init_ablation: bool = False
    compression_sweep: list[str] = Field(default_factory=list, description="more student sizes, e.g. [D4C5, D2C5]")
    optimization: OptimizationConfig = OptimizationConfig()
    epochs: StageEpochs = StageEpochs()
    report: ReportConfig = ReportConfig()

    @field_validator("teacher", "student")
    @classmethod
    def _dncm(cls, value: str) -> str:
        if parse_dncm(value) is None:
            raise ValueError(f"unknown model {value!r}: expected DnCm such as D5C5 or D3C5")
        return value.upper()

    @field_validator("compression_sweep")
    @classmethod
    def _sweep(cls, values: list[str]) -> list[str]:
        names = [cls._dncm(value) for value in values]
        if len(set(names)) != len(names):
            raise ValueError("a model is listed twice")
        return names

    @field_validator("methods")
    @classmethod
    def _methods(cls, values: list[str]) -> list[str]:
        for value in values:
            if value not in METHODS:
                raise ValueError(f"unknown method {value!r}; choose from {', '.join(METHODS)}")
        if len(set(values)) != len(values):
            raise ValueError("a method is listed twice")
        return values


def preset_path(name: str) -> Path:
    """The YAML file of a shipped preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return Path(str(resources.files("kdrecon") / "resources" / "experiments" / f"{name}.yaml"))


def load_experiment(source: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """An experiment from a YAML file or a preset name, with dotted ``overrides``."""
    path = preset_path(str(source)) if str(source) in PRESETS else Path(source)
    return load_config(ExperimentConfig, path, overrides)
