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

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import torch
import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_serializer,
                      model_validator)

from kdrecon.data.image import COMPLEX, MAGNITUDE, ImageKind, channels_of
from kdrecon.data.layout import atomic_path, parse_acceleration
from kdrecon.data.task import RECONSTRUCTION, Task
from kdrecon.training.checkpoint import resolve_checkpoint
from kdrecon.training.teacher_cache import AUTO as AUTO_TEACHER_CACHE
from kdrecon.distillation.losses import ATTENTION_TRANSFER, DEFAULT_METHOD, METHOD_NAMES
from kdrecon.models import build_model, count_parameters
from kdrecon.models.registry import (
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    SFT_TEACHER,
    canonical_model_name,
    cascades_of,
    family_of,
    model_name_help,
    state_kind_of,
)


#: The papers' seed, every run's default.
DEFAULT_SEED = 42
#: A seed NumPy and PyTorch both accept (NumPy's legacy seeding stops at 2**32 - 1).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
#: Bounds that catch a typo (an extra digit or three) before it becomes a run of weeks.
MAX_EPOCHS = 10_000
MAX_CHANNELS = 1024
#: Bounds that keep a typo from allocating for minutes before failing: parameters of one network
#: (4 GB of float32 weights; the papers' networks have under a million) and DC-CNN padding per side.
MAX_PARAMETERS = 10**9
MAX_PADDING = 64
#: Distillation procedures: KD-MRI's two stages (feature loss alone, then L1 + imitation), or
#: SFT-KD-Recon's Algorithm 1 in one stage (L1 + imitation + feature loss together).
Procedure = Literal["two-stage", "single-stage"]
PROCEDURES: tuple[str, ...] = get_args(Procedure)
DEFAULT_PROCEDURE: Procedure = "two-stage"
#: ``auto``: bf16 autocast or float32, whichever is faster on the device (:mod:`kdrecon.training.fast_path`).
Precision = Literal["auto", "fp32", "bf16"]
#: Memory a distillation stage may fill with the teacher's features (or their summaries): GiB, or ``auto``,
#: a share of the free memory (:mod:`kdrecon.training.teacher_cache`).
TeacherCacheSize = float | Literal["auto"]
MAX_TEACHER_CACHE_GIB = 1024
DEFAULT_TEACHER_CACHE: TeacherCacheSize = AUTO_TEACHER_CACHE
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: The inference precision (evaluation, deployment) that runs a network as it was trained
#: (:func:`kdrecon.training.fast_path.inference_precision`), and all that inference accepts.
AS_TRAINED = "as-trained"
INFERENCE_PRECISIONS: tuple[str, ...] = (AS_TRAINED, *(p for p in PRECISIONS if p != "auto"))


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file and key."""


class StrictModel(BaseModel):
    # Infinity and NaN are never a setting: they would reach the optimiser or the loss weights.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class DataConfig(StrictModel):
    dataset: str = Field("sample", description="a directory made by 'kdrecon prepare', or 'sample'")
    acceleration: str = Field("4x", description="undersampling, or for super-resolution the factor per axis")
    task: Task = Field(RECONSTRUCTION, description="reconstruction or super-resolution; must match the dataset")
    image: ImageKind = Field(MAGNITUDE, description="magnitude, or complex (two-channel networks); must match the dataset")

    @field_validator("acceleration", mode="before")
    @classmethod
    def _acceleration(cls, value: Any) -> str:
        return parse_acceleration(value)

    @model_serializer(mode="wrap")
    def _without_defaults_added_later(self, handler: Any) -> dict[str, Any]:
        # Configs written before tasks and image kinds existed have neither key; leaving the defaults
        # out keeps their files and stage fingerprints unchanged, so recorded runs still resume.
        data = handler(self)
        for key, default in (("task", RECONSTRUCTION), ("image", MAGNITUDE)):
            if data.get(key) == default:
                data.pop(key)
        return data


#: What a training run optimises, as its checkpoints record it (``stage``), the experiment's stages
#: are built from and the bench and the time estimate cost: a network on L1, a student-friendly
#: teacher (named as its model, :data:`~kdrecon.models.registry.SFT_TEACHER`), a distillation.
TRAIN, DISTILL = "train", "distill"
STAGE_KINDS = (TRAIN, SFT_TEACHER, DISTILL)


def trained_on(payload: dict[str, Any]) -> DataConfig:
    """The data a checkpoint's network was trained on, as its recorded config says (defaults for what
    configs older than a key do not hold)."""
    return DataConfig.model_validate(payload.get("config", {}).get("data", {}))


#: Distillation by the student's output alone (KD-MRI's imitation loss), no feature loss.
IMITATION = "imitation"


@dataclass(frozen=True)
class DistillationRecipe:
    """One named distillation setting of an ablation: method, procedure and α."""

    stage: str
    method: str
    procedure: Procedure
    alpha: float
    label: str


#: KD-MRI's ablation (Std-KD from the teacher). AT alone: the feature stage, then L1 (α = 1);
#: imitation alone: ``α·L1 + (1 − α)·L1`` to the teacher's output; the last, both, is KD-MRI.
KD_MRI_ABLATION = (
    DistillationRecipe(f"kd-mri-{ATTENTION_TRANSFER}", ATTENTION_TRANSFER, "two-stage", 1.0, "KD-MRI: AT alone"),
    DistillationRecipe(f"kd-mri-{IMITATION}", IMITATION, "single-stage", 0.5, "KD-MRI: imitation alone"),
    DistillationRecipe(f"kd-mri-{ATTENTION_TRANSFER}-{IMITATION}", ATTENTION_TRANSFER, "two-stage", 0.5,
                       "KD-MRI: AT + imitation (its procedure)"),
)
#: Constructor options a model config can set; each family takes the ones it declares.
MODEL_OPTIONS = ("channels", "residual", "padding", "data_consistency", "image_channels")


class ModelConfig(StrictModel):
    """A registered network (``D5C5``, ``U2C5``, …), or the student-friendly teacher of a teacher and a student."""

    name: str = DEFAULT_TEACHER
    channels: int = Field(32, gt=0, le=MAX_CHANNELS, description="width of the hidden layers (a DC-UNet's full-resolution level)")
    residual: bool = False
    padding: int = Field(0, ge=0, le=MAX_PADDING, description="DC-CNN: zero-pad each block's input by this many pixels")
    data_consistency: bool | None = Field(None, description="residual CNN: one DC layer after the last block (default off)")
    image_channels: Literal[1, 2] | None = Field(None, description="1 magnitude, 2 complex (real, imaginary); default: from data.image")
    teacher: str | None = Field(None, description=f"{SFT_TEACHER} only: the teacher (default {DEFAULT_TEACHER})")
    student: str | None = Field(None, description=f"{SFT_TEACHER} only: the student (default {DEFAULT_STUDENT})")

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value.lower() == SFT_TEACHER:
            return SFT_TEACHER
        try:
            family_of(value)
        except ValueError:
            raise ValueError(f"unknown model {value!r}: expected a name such as {model_name_help()}, or {SFT_TEACHER}") from None
        return canonical_model_name(value)  # a known family's error says what is wrong with the shape

    @field_validator("teacher", "student")
    @classmethod
    def _branch_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("name") != SFT_TEACHER:
            raise ValueError(f"only for model {SFT_TEACHER}")
        return canonical_model_name(value)

    @model_validator(mode="after")
    def _sft_defaults(self) -> ModelConfig:
        if self.name == SFT_TEACHER:
            # Stored explicitly so the run's config.yaml says which networks were trained.
            object.__setattr__(self, "teacher", self.teacher or DEFAULT_TEACHER)
            object.__setattr__(self, "student", self.student or DEFAULT_STUDENT)
            if cascades_of(self.teacher) != cascades_of(self.student):
                raise ValueError(
                    f"{SFT_TEACHER}: teacher {self.teacher} and student {self.student} need the same number of cascades"
                )
            if state_kind_of(self.teacher) != state_kind_of(self.student):
                raise ValueError(f"{SFT_TEACHER}: teacher {self.teacher} passes {state_kind_of(self.teacher)} between blocks, "
                                 f"student {self.student} {state_kind_of(self.student)}")
        for key in MODEL_OPTIONS:
            if getattr(self, key) not in (None, type(self).model_fields[key].default) and key not in self._accepted_options():
                raise ValueError(f"{key}: {' and '.join(self._networks())} {'have' if len(self._networks()) > 1 else 'has'} no such option")
        with torch.device("meta"):  # counted without allocating
            parameters = count_parameters(build_model(self.name, **self.options()))
        if parameters > MAX_PARAMETERS:
            raise ValueError(f"{self.name} at {self.channels} channels has {parameters:,} parameters, more than the "
                             f"{MAX_PARAMETERS:,} kdrecon trains; choose a smaller network or fewer channels")
        return self

    def _networks(self) -> list[str]:
        return [self.teacher, self.student] if self.is_student_friendly_teacher else [self.name]

    def _accepted_options(self) -> set[str]:
        return {option for name in self._networks() for option in family_of(name).options}

    @property
    def is_student_friendly_teacher(self) -> bool:
        return self.name == SFT_TEACHER

    def options(self) -> dict[str, Any]:
        """Constructor options for :func:`kdrecon.models.build_model` (those its families have)."""
        accepted = self._accepted_options()
        options = {key: getattr(self, key) for key in MODEL_OPTIONS if key in accepted and getattr(self, key) is not None}
        if self.is_student_friendly_teacher:
            options.update(teacher=self.teacher, student=self.student)
        return options


def fit_to_images(model: ModelConfig, data: DataConfig | None, key: str) -> ModelConfig:
    """``model`` with the input channels of ``data``'s images (two for complex data); refuses a network
    without a two-channel form, or channels given explicitly that disagree with the data."""
    if data is None:
        return model
    wanted = channels_of(data.image)
    if model.image_channels not in (None, wanted):
        raise ValueError(f"{key}.image_channels: is {model.image_channels}, but data.image {data.image} has {wanted}")
    if data.image != COMPLEX:
        return model
    for name in model._networks():
        if "image_channels" not in family_of(name).options:
            raise ValueError(f"data.image: {name} ({family_of(name).name}) has no complex, two-channel form")
    return model.model_copy(update={"image_channels": wanted})


class OptimizationConfig(StrictModel):
    epochs: int = Field(150, gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(4, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    lr_step_epochs: int = Field(40, gt=0, le=MAX_EPOCHS, description="StepLR step size in epochs")
    lr_gamma: float = Field(0.1, gt=0, le=1)
    validation_batch_size: int = Field(16, gt=0, description=(
        "most slices per validation pass; a CPU takes fewer (kdrecon.models.inference)"))


#: Loss weights (teacher, branches, imitation) of the SFT step, eqs. 3–5 of SFT-KD-Recon.
#: ``sft-code`` is what the public code effectively trained (its imitation term was divided by
#: the element count twice, ~1e-5); ``sft-paper-equations`` is the sum as printed (spec §4).
SFT_PRESETS: dict[str, tuple[float, float, float]] = {
    "sft-code": (1.0, 1.0, 0.0),
    "sft-paper-equations": (1.0, 1.0, 1.0),
}


class StudentFriendlyLossConfig(StrictModel):
    """``w_T·L1(x_T, x) + w_S·mean_j L1(x_S,j, x) + w_I·mean_j L1(x_S,j, x_T)``.

    ``preset`` fills the weights that are not given explicitly.
    """

    preset: str = "sft-code"
    teacher_weight: float | None = Field(None, ge=0)
    branch_weight: float | None = Field(None, ge=0)
    imitation_weight: float | None = Field(None, ge=0)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in SFT_PRESETS:
            raise ValueError(f"unknown SFT preset {value!r}; choose from {', '.join(SFT_PRESETS)}")
        return value

    @model_validator(mode="after")
    def _fill_from_preset(self) -> StudentFriendlyLossConfig:
        names = ("teacher_weight", "branch_weight", "imitation_weight")
        for name, value in zip(names, SFT_PRESETS[self.preset]):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if not any(getattr(self, name) for name in names):
            raise ValueError("all three SFT loss weights are 0")
        return self


class StageConfig(StrictModel):
    """What every training stage shares."""

    name: str = "run"
    seed: Seed = DEFAULT_SEED
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = Field(
        "auto",
        description="bf16: convolutions under bf16 autocast (FFTs and data consistency stay float32); "
        "auto: the faster of the two on this device (on a GPU bf16 when compiled, float32 eagerly; measured on a CPU)",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="convolutions in channels-last memory layout; auto: on a GPU or under bf16, for float32 on a CPU "
        "the layout measured faster there"
    )
    compile: bool = Field(False, description="torch.compile the networks (falls back to eager when unsupported)")
    data: DataConfig = DataConfig()
    optimization: OptimizationConfig = OptimizationConfig()


class TrainConfig(StageConfig):
    """One training run: a network trained on L1 to the target, or the SFT teacher step."""

    model: ModelConfig = ModelConfig()
    sft: StudentFriendlyLossConfig | None = Field(None, description="loss weights of an sft-teacher model")
    init_from: str | None = Field(
        None, description="fine-tune: start from this run directory's (or checkpoint's) weights, every tensor by name"
    )

    @field_validator("sft")
    @classmethod
    def _sft_only_for_sft_teacher(cls, value: Any, info: ValidationInfo) -> Any:
        model = info.data.get("model")
        if value is not None and model is not None and not model.is_student_friendly_teacher:
            raise ValueError(f"only for model {SFT_TEACHER}")
        return value

    @field_validator("init_from")
    @classmethod
    def _trained_network_exists(cls, value: str | None) -> str | None:
        if value is not None:
            resolve_checkpoint(Path(value))
        return value

    @model_validator(mode="after")
    def _sft_default(self) -> TrainConfig:
        if self.model.is_student_friendly_teacher and self.sft is None:
            object.__setattr__(self, "sft", StudentFriendlyLossConfig())
        object.__setattr__(self, "model", fit_to_images(self.model, self.data, "model"))
        return self


class LayerPairsConfig(StrictModel):
    """Module paths whose outputs are paired, ``teacher[i]`` with ``student[i]``."""

    teacher: list[str] = Field(min_length=1)
    student: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> LayerPairsConfig:
        if len(self.teacher) != len(self.student):
            raise ValueError(f"{len(self.teacher)} teacher layers but {len(self.student)} student layers")
        return self


class DistillConfig(StageConfig):
    """A student distilled from a trained teacher (Std-KD) or a student-friendly teacher (SFT-KD).

    ``procedure``: ``two-stage`` is KD-MRI's (feature loss alone, then fine-tuning on
    ``α·L1(x_S, x) + (1 − α)·L1(x_S, x_T)``); ``single-stage`` optimises
    ``α·L1 + (1 − α)·imitation + β·feature`` at once. ``method: imitation`` has no feature loss.
    ``data`` defaults to the teacher's dataset and acceleration.
    """

    data: DataConfig | None = None
    teacher: str = Field(description="the teacher's run directory or checkpoint")
    teacher_checkpoint: Literal["best", "last"] = "best"
    student: ModelConfig = ModelConfig(name=DEFAULT_STUDENT)
    method: str = Field(DEFAULT_METHOD, description=f"a feature loss ({', '.join(METHOD_NAMES)}) or {IMITATION}")
    method_options: dict[str, Any] = Field(default_factory=dict, description="options of the feature loss")
    feature_weight: float | None = Field(None, gt=0, description="β; default: the method's published weight")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of L1 to the target against imitation")
    procedure: Procedure = DEFAULT_PROCEDURE
    feature_epochs: int | None = Field(None, gt=0, le=MAX_EPOCHS, description="epochs of the feature stage (default: optimization.epochs)")
    layers: LayerPairsConfig | None = Field(None, description="default: the papers' pairs")
    init: Literal["random", "sft"] = "random"
    first_block: Literal["random", "baseline"] = Field("random", description="S1's source with init sft")
    baseline: str | None = Field(None, description="the trained baseline student, for first_block: baseline")
    teacher_cache_gib: TeacherCacheSize = Field(
        DEFAULT_TEACHER_CACHE, description="GiB for the teacher's features (or, for AT, its attention maps) computed once "
        "per run; auto: a share of the memory free when the run starts; 0: run the teacher every step"
    )

    @field_validator("teacher_cache_gib", mode="before")
    @classmethod
    def _cache_size(cls, value: Any) -> Any:
        if value == AUTO_TEACHER_CACHE:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_TEACHER_CACHE_GIB:
            raise ValueError(f"give GiB from 0 to {MAX_TEACHER_CACHE_GIB}, or {AUTO_TEACHER_CACHE}")
        return value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in (*METHOD_NAMES, IMITATION):
            raise ValueError(f"unknown method {value!r}; choose from {', '.join(METHOD_NAMES)} or {IMITATION}")
        return value

    @field_validator("student")
    @classmethod
    def _student_is_a_network(cls, value: ModelConfig) -> ModelConfig:
        if value.is_student_friendly_teacher:
            raise ValueError(f"the student must be a network such as {DEFAULT_STUDENT}, not {SFT_TEACHER}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DistillConfig:
        if self.first_block == "baseline" and self.init != "sft":
            raise ValueError("first_block: baseline needs init: sft")
        if (self.first_block == "baseline") != (self.baseline is not None):
            raise ValueError("baseline: give it exactly when first_block is baseline")
        unused = [key for key in ("feature_weight", "layers", "method_options") if getattr(self, key)]
        if self.method == IMITATION and unused:  # settings that would be recorded as if they had effect
            raise ValueError(f"{unused[0]}: method imitation distils no features; leave it out")
        if self.procedure == "single-stage" and self.feature_epochs is not None:
            raise ValueError("feature_epochs: the single-stage procedure has no feature stage; leave it out")
        object.__setattr__(self, "student", fit_to_images(self.student, self.data, "student"))
        return self

    @property
    def has_feature_stage(self) -> bool:
        return self.method != IMITATION and self.procedure == "two-stage"


Config = TypeVar("Config", bound=BaseModel)


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in first and first["type"] != "missing" and not isinstance(first["input"], dict):
        message = f"{message} (got {first['input']!r})"
    more = f" (+{len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    # Errors of a whole section (loc ()) already start with the key they are about.
    return f"{source}: {key + ': ' if key else ''}{message}{more}"


def validate(cls: type[Config], data: dict[str, Any], source: str = "config") -> Config:
    """Validate ``data`` as ``cls``; raise :class:`ConfigError` naming the first bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_one_line(error, source)) from None


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: it reads ``1e-3`` (no dot) as a number, where
    YAML 1.1, which PyYAML follows, reads it as the string ``"1e-3"`` that strict validation refuses."""


_Loader.yaml_implicit_resolvers = {key: list(resolvers) for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """A YAML document's value, as :data:`yaml.safe_load` reads it but with YAML 1.2's floats (``1e-3``)."""
    return yaml.load(text, Loader=_Loader)


def yaml_error_place(error: yaml.YAMLError) -> str:
    """`` at line L, column C (what PyYAML found)`` for a parse error, as an editor numbers lines."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where} ({problem})"


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML{yaml_error_place(error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    return data


class _Unset:
    """An override that removes a key from a config file, so that its default applies (``--set KEY=null``)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key = "a.b"``, creating mappings on the way; :data:`UNSET` removes it
    (and creates nothing: an empty mapping would be a setting of its own, such as ``sft: {}``)."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        if value is UNSET and part not in node:
            return
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config: {key}: {part!r} is not a mapping")
    if value is UNSET:
        node.pop(last, None)
    else:
        node[last] = value


def load_config(cls: type[Config], path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (optional), apply dotted ``overrides`` (``None`` values skipped, :data:`UNSET` removes
    the key), validate."""
    data = read_yaml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, key, value)
    return validate(cls, data, str(path) if path is not None else "config")


def config_data(config: BaseModel) -> dict[str, Any]:
    """The config as plain data, defaults included and unset optional values left out."""
    return config.model_dump(mode="json", exclude_none=True)


def write_yaml(data: dict[str, Any], path: Path) -> None:
    """Write plain data as YAML, atomically."""
    with atomic_path(Path(path)) as temporary:
        temporary.write_text(yaml.safe_dump(data, sort_keys=False))


def write_config(config: BaseModel, path: Path) -> None:
    """Write the full config (defaults included) as YAML, atomically."""
    write_yaml(config_data(config), path)
