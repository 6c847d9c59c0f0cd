"""A whole study as one validated YAML file: which stages to run, with which settings.

Example (``kdrecon run study.yaml``)::

    name: cardiac-4x
    seeds: [42, 43, 44]                 # every stage once per seed; comparisons are paired by seed
    data: {dataset: datasets/sunnybrook-4x, acceleration: 4x}
    dataset_slices: {train: 350, validation: 110}   # a dataset prepared otherwise is refused
    teacher: D5C5
    student: D3C5
    methods: [at, fitnets, sp, fsp, cc]
    procedure: single-stage             # SFT-KD-Recon's Algorithm 1 (two-stage: KD-MRI's)
    procedure_ablation: true            # first seed: also the other procedure, equal total epochs
    sft_preset_ablation: [sft-paper-equations]   # first seed: SFT teacher and SFT-KD with this loss
    ablation_seeds: 1                   # how many seeds, the first ones, run those two ablations
    random_init_ablation: true          # SFT-KD with the student initialised at random (Table 5)
    compression_sweep: [D4C5, D2C5]     # more student sizes for the size table (Table 8) ...
    compression_methods: [at]           # ... each distilled (Std-KD, SFT-KD) with these methods
    method_settings:                    # per method, what `kdrecon distill` can set
      at: {feature_weight: 1000, layers: {teacher: [...], student: [...]}}
    optimization: {epochs: 150}         # every stage; `epochs` below overrides per stage kind

Presets shipped with the package (:data:`PRESETS`) are such files; ``kdrecon run demo`` or
``kdrecon run paper-cardiac-4x`` name them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kdrecon.data.package_files import package_resource
from kdrecon.distillation.losses import DEFAULT_METHOD, METHOD_NAMES
from kdrecon.models.registry import (DEFAULT_STUDENT, DEFAULT_TEACHER, canonical_model_name, cascades_of,
                                     default_channels_of, state_kind_of)
from kdrecon.report.published import PUBLISHED, default_setting
from kdrecon.training.config import (
    DataConfig,
    OptimizationConfig,
    DEFAULT_PROCEDURE,
    DEFAULT_SEED,
    MAX_CHANNELS,
    MAX_EPOCHS,
    Seed,
    SFT_PRESETS,
    Precision,
    LayerPairsConfig,
    Procedure,
    StrictModel,
    StudentFriendlyLossConfig,
    load_config,
)

METHODS = METHOD_NAMES
_PRESET_DIRECTORY = package_resource("experiments")
#: The experiment files shipped with the package, by name (``kdrecon run demo``): the demo first.
PRESETS = tuple(sorted((f.name.removesuffix(".yaml") for f in _PRESET_DIRECTORY.iterdir() if f.name.endswith(".yaml")),
                       key=lambda name: (name != "demo", name)))


class StageEpochs(StrictModel):
    """Epochs per stage kind; unset ones use ``optimization.epochs``."""

    teacher: int | None = Field(None, gt=0, le=MAX_EPOCHS)
    student: int | None = Field(None, gt=0, le=MAX_EPOCHS)
    sft_teacher: int | None = Field(None, gt=0, le=MAX_EPOCHS)
    feature_stage: int | None = Field(None, gt=0, le=MAX_EPOCHS, description="KD-MRI's first distillation stage")
    distillation: int | None = Field(None, gt=0, le=MAX_EPOCHS, description="the (final) distillation stage")


class MethodSettings(StrictModel):
    """What a distillation stage of one method may set besides the defaults."""

    feature_weight: float | None = Field(None, gt=0, description="β; default: the method's published weight")
    method_options: dict[str, Any] = Field(default_factory=dict, description="options of the feature loss")
    layers: LayerPairsConfig | None = Field(None, description="teacher and student module paths; default: one per cascade")


#: In a ``fine_tune`` path: the seed of the stage started from it.
SEED_PLACEHOLDER = "{seed}"


class FineTuneConfig(StrictModel):
    """Trained networks to fine-tune from (SFT-KD-Recon Figure 7), by the stage they replace.

    Each one given adds a stage ``{stage}-fine-tuned``: the same training, started from those
    weights (every tensor by name), beside the one trained from scratch. A path holding
    :data:`SEED_PLACEHOLDER` names one network per seed and adds the stage on every seed, each
    started from its own seed's network (so the comparison covers training variance); a path
    without it adds the stage on the first seed only.

    Example: ``sft_teacher: runs/study-sunnybrook-4x/stages/seed-{seed}/sft-teacher``.
    """

    teacher: str | None = Field(None, description="a run directory or checkpoint of the same teacher network")
    student: str | None = Field(None, description="... of the same student network")
    sft_teacher: str | None = Field(None, description="... of the same student-friendly teacher")

    @field_validator("teacher", "student", "sft_teacher")
    @classmethod
    def _one_placeholder(cls, value: str | None) -> str | None:
        if value is not None and re.sub(re.escape(SEED_PLACEHOLDER), "", value).count("{"):
            raise ValueError(f"the only placeholder a path may hold is {SEED_PLACEHOLDER}, got {value!r}")
        return value

    def sources(self, seed: int, per_seed: bool) -> dict[str, str]:
        """Stage name → the run or checkpoint it is fine-tuned from on ``seed``: of the paths that
        name one network per seed (``per_seed``), or of those that name one for the first seed."""
        names = {"teacher": "teacher", "student": "student", "sft_teacher": "sft-teacher"}
        return {names[key]: value.replace(SEED_PLACEHOLDER, str(seed))
                for key, value in self.model_dump().items()
                if value is not None and (SEED_PLACEHOLDER in value) == per_seed}


class ReportConfig(StrictModel):
    figure_slices: int = Field(2, ge=1, description="slices shown in the reconstruction figure")
    zoom: float = Field(0.35, gt=0, le=1, description="side of the zoomed inset, as a fraction of the image")
    timing_batch_size: int = Field(1, gt=0, description="batch size of the inference timing and the MAC count")
    timing_rounds: int = Field(30, ge=5, description="alternating rounds of the report's inference timing (every architecture)")
    paper_setting: str | None = Field(
        None, description="the papers' column shown beside ours; must be of the data's task and acceleration "
                          "(default: the first published at them, cardiac before brain)"
    )
    bootstrap_resamples: int = Field(10000, ge=100, le=1_000_000, description="resamples of the hierarchical bootstrap")

    @field_validator("paper_setting")
    @classmethod
    def _known_setting(cls, value: str | None) -> str | None:
        if value is not None and value not in PUBLISHED:
            raise ValueError(f"unknown paper setting {value!r}; choose from {', '.join(PUBLISHED)}")
        return value


#: An experiment's name: it names its run directory (``runs/NAME``), so one plain path component.
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ExperimentConfig(StrictModel):
    name: str = Field("experiment", description="names the default run directory, runs/NAME")
    seed: Seed | None = Field(None, description=f"the one seed of an unreplicated experiment (default {DEFAULT_SEED})")
    seeds: list[Seed] | None = Field(None, min_length=1, description="replicates: every stage once per seed")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = Field(
        False, description="torch.compile every stage's trained network (on a GPU in CUDA graphs, where it pays most: "
        "docs/benchmarks.md)"
    )
    data: DataConfig = DataConfig()
    dataset_slices: dict[Literal["train", "validation"], int] | None = Field(
        None, description="slices per split data.dataset must hold: a dataset prepared with other options is refused"
    )
    teacher: str = DEFAULT_TEACHER
    student: str = DEFAULT_STUDENT
    channels: int = Field(gt=0, le=MAX_CHANNELS, description="width of teacher and student (default: the teacher family's)")
    methods: list[str] = Field(default_factory=lambda: [DEFAULT_METHOD], min_length=1)
    procedure: Procedure = DEFAULT_PROCEDURE
    alpha: float = Field(0.5, ge=0, le=1)
    sft: StudentFriendlyLossConfig = StudentFriendlyLossConfig()
    procedure_ablation: bool = Field(
        False, description="first seed: Std-KD and SFT-KD also with the other procedure, at equal total epochs"
    )
    sft_preset_ablation: list[str] = Field(
        default_factory=list, description="first seed: an SFT teacher and SFT-KD students with each of these SFT losses"
    )
    ablation_seeds: int = Field(
        1, ge=1, description="how many of the seeds, the first ones, run procedure_ablation and sft_preset_ablation "
                             "(more than one: the report's intervals cover training variance for them too)"
    )
    random_init_ablation: bool = False
    kd_mri_ablation: bool = Field(
        False, description="every seed: Std-KD with attention transfer alone, imitation alone, and both (KD-MRI)"
    )
    fine_tune: FineTuneConfig = FineTuneConfig()
    compression_sweep: list[str] = Field(default_factory=list, description="more student sizes, e.g. [D4C5, D2C5]")
    compression_methods: list[str] | None = Field(
        None, description="methods each sweep student is distilled with (default: the first of methods; [] for none)"
    )
    method_settings: dict[str, MethodSettings] = Field(default_factory=dict, description="per method: feature_weight, ...")
    optimization: OptimizationConfig = OptimizationConfig()
    epochs: StageEpochs = StageEpochs()
    report: ReportConfig = ReportConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not EXPERIMENT_NAME.fullmatch(value):
            raise ValueError("not a plain name (letters, digits, '.', '_' and '-', not starting with '.' or '-'): "
                             "it names the run directory runs/NAME")
        return value

    @field_validator("teacher", "student")
    @classmethod
    def _model(cls, value: str) -> str:
        return canonical_model_name(value)

    @model_validator(mode="before")
    @classmethod
    def _family_width(cls, data: Any) -> Any:
        """Unset ``channels`` becomes the teacher family's width (32 for the DC-CNN, 64 for VDSR)."""
        if isinstance(data, dict) and "channels" not in data:
            try:
                data = {**data, "channels": default_channels_of(str(data.get("teacher", DEFAULT_TEACHER)))}
            except ValueError:
                pass  # an unknown teacher is reported by its own validator
        return data

    @field_validator("compression_sweep")
    @classmethod
    def _sweep(cls, values: list[str]) -> list[str]:
        names = [canonical_model_name(value) for value in values]
        if len(set(names)) != len(names):
            raise ValueError("a model is listed twice")
        return names

    @field_validator("methods", "compression_methods")
    @classmethod
    def _methods(cls, values: list[str] | None) -> list[str] | None:
        for value in values or []:
            if value not in METHODS:
                raise ValueError(f"unknown method {value!r}; choose from {', '.join(METHODS)}")
        if values is not None and len(set(values)) != len(values):
            raise ValueError("a method is listed twice")
        return values

    @field_validator("method_settings")
    @classmethod
    def _method_settings(cls, values: dict[str, MethodSettings]) -> dict[str, MethodSettings]:
        for method in values:
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        return values


    @field_validator("dataset_slices")
    @classmethod
    def _positive_slices(cls, values: dict[str, int] | None) -> dict[str, int] | None:
        for split, count in (values or {}).items():
            if count < 1:
                raise ValueError(f"{split}: {count} slices; give a positive count")
        return values

    @field_validator("sft_preset_ablation")
    @classmethod
    def _sft_presets(cls, values: list[str]) -> list[str]:
        for value in values:
            if value not in SFT_PRESETS:
                raise ValueError(f"unknown SFT preset {value!r}; choose from {', '.join(SFT_PRESETS)}")
        if len(set(values)) != len(values):
            raise ValueError("a preset is listed twice")
        return values

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError("a seed is listed twice")
        return values

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.compression_methods is not None and not self.compression_sweep:
            raise ValueError("compression_methods: there is no compression_sweep student to distil with them; "
                             "add compression_sweep or remove compression_methods")
        for model in set(self.compression_sweep) & {self.teacher, self.student}:
            raise ValueError(f"compression_sweep: {model} is already the {'teacher' if model == self.teacher else 'student'}")
        for student in [self.student, *self.compression_sweep]:
            if cascades_of(student) != cascades_of(self.teacher):
                raise ValueError(
                    f"the SFT teacher pairs blocks one to one: teacher {self.teacher} and student {student} "
                    "need the same number of cascades"
                )
            if state_kind_of(student) != state_kind_of(self.teacher):
                raise ValueError(f"the SFT teacher branches into the student: teacher {self.teacher} and student "
                                 f"{student} must pass the same kind of state between blocks (image or features)")
        if self.seeds is not None and self.seed is not None:
            raise ValueError("give either seed (one run) or seeds (replicates), not both")
        if self.ablation_seeds > len(self.replicate_seeds):
            raise ValueError(f"ablation_seeds: {self.ablation_seeds} of {len(self.replicate_seeds)} seed(s); "
                             "give at most as many as seeds lists")
        if self.sft.preset in self.sft_preset_ablation:
            raise ValueError(f"sft_preset_ablation: {self.sft.preset} is already the main SFT loss (sft.preset)")
        for key in ("procedure_ablation", "kd_mri_ablation"):
            if not getattr(self, key) or self.procedure != "single-stage":
                continue
            total = self.epochs.distillation or self.optimization.epochs
            if self.epochs.feature_stage is None or self.epochs.feature_stage >= total:
                raise ValueError(
                    f"{key}: its two-stage distillations split the single-stage epochs; "
                    f"set epochs.feature_stage below the distillation epochs ({total})"
                )
        return self

    @model_validator(mode="after")
    def _paper_setting_of_this_data(self) -> ExperimentConfig:
        """A paper column measured at another acceleration or task compares nothing of ours."""
        name = self.report.paper_setting
        setting = PUBLISHED.get(name) if name else None
        data = (self.data.task, self.data.acceleration)
        if setting is not None and (setting.task, setting.acceleration) != data:
            raise ValueError(f"report.paper_setting: {name} was measured on {setting.task} at {setting.acceleration}, "
                             f"this experiment's data is {data[0]} at {data[1]}")
        return self

    @property
    def replicate_seeds(self) -> list[int]:
        """The seeds every stage runs with, the first ``ablation_seeds`` of which also run the ablations."""
        if self.seeds is not None:
            return list(self.seeds)
        return [DEFAULT_SEED if self.seed is None else self.seed]

    @property
    def sweep_methods(self) -> list[str]:
        """The methods each ``compression_sweep`` student is distilled with (default: the first of ``methods``)."""
        return self.methods[:1] if self.compression_methods is None else list(self.compression_methods)

    def method_settings_of(self, method: str) -> dict[str, Any]:
        """The distillation config keys ``method_settings`` sets for ``method`` (none when not given)."""
        settings = self.method_settings.get(method)
        return {} if settings is None else settings.model_dump(mode="json", exclude_defaults=True)

    @property
    def paper_column(self) -> str | None:
        """The papers' setting the report shows beside ours; None when none is published for this data."""
        return self.report.paper_setting or default_setting(self.data.task, self.data.acceleration)


def preset_path(name: str) -> Path:
    """The YAML file of a shipped preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return _PRESET_DIRECTORY / f"{name}.yaml"


def load_experiment(source: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """An experiment from a YAML file or a preset name, with dotted ``overrides``."""
    path = preset_path(str(source)) if str(source) in PRESETS else Path(source)
    return load_config(ExperimentConfig, path, overrides)
