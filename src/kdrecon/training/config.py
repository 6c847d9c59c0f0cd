"""Experiment configuration as validated data: one YAML file per run.

Unknown keys and wrong values are errors that name the key. Defaults are the papers' settings
(spec §4): Adam with learning rate 1e-3, StepLR every 40 epochs by 0.1, 150 epochs, batch 4,
seed 42, L1 loss, best-validation-loss checkpoint kept.

Example:
    >>> config = TrainConfig.model_validate({"name": "teacher", "model": {"name": "D5C5"}})
    >>> config.optimization.epochs, config.optimization.batch_size
    (150, 4)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kdrecon.data.layout import parse_acceleration
from kdrecon.models.dccnn import parse_dncm


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(StrictModel):
    dataset: str = Field("sample", description="a directory made by 'kdrecon prepare', or 'sample'")
    acceleration: str = "4x"

    @field_validator("acceleration", mode="before")
    @classmethod
    def _acceleration(cls, value: Any) -> str:
        return parse_acceleration(value)


class ModelConfig(StrictModel):
    name: str = "D5C5"
    channels: int = Field(32, gt=0)
    residual: bool = False
    padding: int = Field(0, ge=0)

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if parse_dncm(value) is None:
            raise ValueError(f"unknown model {value!r}: expected DnCm such as D5C5 or D3C5")
        return value.upper()

    def options(self) -> dict[str, Any]:
        """Constructor options for :func:`kdrecon.models.build_model`."""
        return {"channels": self.channels, "residual": self.residual, "padding": self.padding}


class OptimizationConfig(StrictModel):
    epochs: int = Field(150, gt=0)
    batch_size: int = Field(4, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    lr_step_epochs: int = Field(40, gt=0, description="StepLR step size in epochs")
    lr_gamma: float = Field(0.1, gt=0, le=1)
    validation_batch_size: int = Field(16, gt=0)


class TrainConfig(StrictModel):
    """One training run: a model trained on L1 to the target."""

    name: str = "run"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimization: OptimizationConfig = OptimizationConfig()


Config = TypeVar("Config", bound=BaseModel)


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in first and first["type"] != "missing":
        message = f"{message} (got {first['input']!r})"
    more = f" (+{len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return f"{source}: {key}: {message}{more}"


def validate(cls: type[Config], data: dict[str, Any], source: str = "config") -> Config:
    """Validate ``data`` as ``cls``; raise :class:`ConfigError` naming the first bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_one_line(error, source)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key = "a.b"``, creating mappings on the way."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config: {key}: {part!r} is not a mapping")
    node[last] = value


def load_config(cls: type[Config], path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (optional), apply dotted ``overrides`` (``None`` values skipped), validate."""
    data = read_yaml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, key, value)
    return validate(cls, data, str(path) if path is not None else "config")


def write_config(config: BaseModel, path: Path) -> None:
    """Write the full config (defaults included) as YAML."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
