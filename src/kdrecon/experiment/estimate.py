"""How long an experiment will take on this device, from measured costs of its kinds of stage.

Every distinct kind of training run the experiment makes (a network trained on L1, an SFT step, a
distillation by its method and layer pairs, the imitation run that ends a two-stage distillation) is
built once and timed on the experiment's own data and settings (batch size, precision, device,
``compile``): the median of a few training steps after warm-up, the teacher cache a distillation
builds before its first step, a validation pass of the trained network and, for a distillation with
a feature loss, one on that loss (the teacher runs on the validation slices), the scoring of the
validation split and, for a compiled experiment, what compiling the trained network adds to its
first steps. A training run ``r`` of ``E_r`` epochs costs

.. math::

    T_r = E_r\\,(\\lceil N_{train} / B \\rceil\\, t_{step} + t_{validation}) + t_{compile} + t_{cache},

and a stage the sum of its runs plus its evaluation, ``t_{validation} + t_{scores}`` of its network.
A stage is one run, except a two-stage distillation: its feature run (the method's step, validated
on the feature loss) and its fine-tuning run (L1 and imitation of the cached teacher outputs, or L1
alone when ``alpha`` is 1). Not counted: FT's paraphraser preparation, a method's options, and the
report (bootstrap, figures, the inference timing).

Example (``kdrecon bench --experiment demo``)::

    estimate = estimate_experiment(load_experiment("demo"), steps=3)
    print(format_estimate(estimate))
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from kdrecon.data.dataset import SliceData, load_split
from kdrecon.data.image import COMPLEX, channels_of
from kdrecon.distillation.layer_pairs import LayerPairs
from kdrecon.distillation.losses import DEFAULT_METHOD, FEATURE_LOSSES, method_label
from kdrecon.evaluation.benchmark import TrainingStep, training_step
from kdrecon.evaluation.evaluate import ZERO_FILLED, baselines, score
from kdrecon.experiment.config import ExperimentConfig
from kdrecon.experiment.stages import STAGE_REFERENCE, Stage, build_stages
from kdrecon.models.registry import SFT_TEACHER
from kdrecon.training.config import DISTILL, IMITATION, TRAIN
from kdrecon.training.timing import median_seconds, synchronise
from kdrecon.training.trainer import ReconstructionObjective, compile_forward, resolve_device, validate


@dataclass(frozen=True)
class CostKey:
    """What a training run's cost depends on: its kind (``train``, ``sft-teacher``, ``distill``), networks
    and, for a distillation, method and layer pairs (empty: the method's defaults)."""

    kind: str
    teacher: str
    student: str = ""
    method: str = ""
    teacher_layers: tuple[str, ...] = ()
    student_layers: tuple[str, ...] = ()

    def label(self) -> str:
        if self.kind == DISTILL:
            method = method_label(self.method) if self.method in FEATURE_LOSSES else self.method
            layers = " (its own layers)" if self.teacher_layers else ""
            return f"distillation {method} {self.teacher}→{self.student}{layers}"
        return f"SFT teacher {self.teacher}+{self.student}" if self.kind == SFT_TEACHER else f"{self.teacher} on L1"

    def layer_pairs(self) -> LayerPairs | None:
        return LayerPairs(list(self.teacher_layers), list(self.student_layers)) if self.teacher_layers else None


@dataclass(frozen=True)
class MeasuredCost:
    """Seconds of one training step, the teacher cache, a validation pass of the trained network, the
    evaluation's scores, the compilation (0 unless the experiment compiles) that one training run's
    first steps add and, for a distillation, a validation pass on the feature loss (teacher included)."""

    step: float
    cache: float
    validation: float
    scores: float
    compile: float = 0.0
    feature_validation: float = 0.0


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    role: str
    cost: CostKey
    epochs: int
    seconds: float
    #: A two-stage distillation's second run.
    fine_tuning: CostKey | None = None


@dataclass(frozen=True)
class ExperimentEstimate:
    name: str
    device: str
    stages: tuple[StageEstimate, ...]
    costs: dict[CostKey, MeasuredCost]

    @property
    def total_seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    def by_role(self) -> list[tuple[str, int, float]]:
        """``(role, number of stages, seconds of them all)`` in the order the roles first run."""
        totals: dict[str, list[float]] = {}
        for stage in self.stages:
            totals.setdefault(stage.role, []).append(stage.seconds)
        return [(role, len(seconds), sum(seconds)) for role, seconds in totals.items()]


def cost_key(stage: Stage, stages: dict[str, Stage]) -> CostKey:
    """The kind and networks that set the cost of ``stage``'s (first) training run."""
    if stage.kind == TRAIN:
        model = stage.config["model"]
        if model["name"] == SFT_TEACHER:
            return CostKey(SFT_TEACHER, model["teacher"], model["student"])
        return CostKey(TRAIN, model["name"])
    source = stages[stage.config["teacher"].removeprefix(STAGE_REFERENCE)].config["model"]
    teacher = source["teacher"] if source["name"] == SFT_TEACHER else source["name"]
    layers = stage.config.get("layers") or {}
    return CostKey(DISTILL, teacher, stage.config["student"]["name"], stage.config["method"],
                   tuple(layers.get("teacher", ())), tuple(layers.get("student", ())))


def fine_tuning_key(stage: Stage, first: CostKey) -> CostKey | None:
    """The cost of a two-stage distillation's second run (None for any other stage): imitation of the
    teacher's cached outputs with L1, or L1 alone when ``alpha`` is 1 (no teacher, no cache)."""
    if stage.planned_epochs() == stage.config["optimization"]["epochs"]:
        return None
    if stage.config["alpha"] < 1:
        return CostKey(DISTILL, first.teacher, first.student, IMITATION)
    return CostKey(TRAIN, first.student)


def measure_cost(key: CostKey, config: ExperimentConfig, train: SliceData, validation: SliceData,
                 device: torch.device, steps: int, scores_seconds: float, feature_run: bool = False) -> MeasuredCost:
    """Time one stage kind on the experiment's data and settings (see the module docstring); with
    ``feature_run``, also a validation pass on its feature loss (the feature run of a two-stage distillation)."""
    options: dict[str, Any] = {"channels": config.channels}
    if config.data.image == COMPLEX:
        options["image_channels"] = channels_of(COMPLEX)
    timed = training_step(key.kind, key.teacher, key.student or key.teacher,
                          train, None, device, config.optimization.batch_size, options, config.precision,
                          config.channels_last, compiled=config.compile, method=key.method or DEFAULT_METHOD,
                          layers=key.layer_pairs())
    compiling = 0.0
    if config.compile:
        compiling = _seconds(lambda: compile_training_step(timed, train, config.optimization.batch_size, device))
    step_seconds = median_seconds(timed.step, device, steps, warmup=2)
    batch = config.optimization.validation_batch_size
    objective = timed.objective
    trained = objective if key.kind != DISTILL else ReconstructionObjective(objective.student)
    validation_seconds = _seconds(lambda: validate(trained, validation, batch, device, timed.precision))
    feature_seconds = 0.0
    if feature_run:
        feature_seconds = _seconds(lambda: validate(objective, validation, batch, device, timed.precision))
    compile_seconds = max(0.0, compiling - COMPILED_FIRST_STEPS * step_seconds)
    return MeasuredCost(step_seconds, timed.cache_seconds, validation_seconds, scores_seconds, compile_seconds,
                        feature_seconds)


#: Training steps that pay for compilation: the forward graph, the backward graph, then (on a GPU) the
#: CUDA-graph recording; the steps after them replay.
COMPILED_FIRST_STEPS = 3


def compile_training_step(timed: TrainingStep, train: SliceData, batch_size: int, device: torch.device) -> None:
    """Compile the trained network as a training run does (afresh) and run the steps that compilation slows."""
    compile_forward(timed.objective.modules()["model"], train.batch(torch.arange(batch_size, device=device)), fresh=True)
    for _ in range(COMPILED_FIRST_STEPS):
        timed.step()
    synchronise(device)


def _seconds(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def run_seconds(cost: MeasuredCost, epochs: int, steps_per_epoch: int, validation: float) -> float:
    """``T_r`` of the module docstring: one training run of ``epochs``, each validated in ``validation`` s."""
    return epochs * (steps_per_epoch * cost.step + validation) + cost.compile + cost.cache


def stage_seconds(stage: Stage, cost: MeasuredCost, train_slices: int, fine_tuning: MeasuredCost | None = None) -> float:
    """The seconds of ``stage``: its runs (``fine_tuning``: the cost of a two-stage distillation's second
    run) and its evaluation."""
    steps_per_epoch = math.ceil(train_slices / stage.config["optimization"]["batch_size"])
    evaluation = cost.validation + cost.scores
    if fine_tuning is None:
        return run_seconds(cost, stage.planned_epochs(), steps_per_epoch, cost.validation) + evaluation
    tuning_epochs = stage.config["optimization"]["epochs"]
    feature_epochs = stage.planned_epochs() - tuning_epochs
    return (run_seconds(cost, feature_epochs, steps_per_epoch, cost.feature_validation)
            + run_seconds(fine_tuning, tuning_epochs, steps_per_epoch, fine_tuning.validation) + evaluation)


def estimate_experiment(config: ExperimentConfig, steps: int = 5,
                        progress: Callable[[str], None] = lambda message: None) -> ExperimentEstimate:
    """Measure each kind of stage of ``config`` once and cost every stage (all seeds)."""
    device = resolve_device(config.device)
    data = config.data
    train = load_split(data.dataset, "train", data.acceleration, data.task, data.image).to(device)
    validation = load_split(data.dataset, "validation", data.acceleration, data.task, data.image).to(device)
    stages = build_stages(config)
    by_id = {stage.id: stage for stage in stages}
    scores_seconds = _seconds(lambda: score(validation, baselines(validation)[ZERO_FILLED]))
    planned = [(stage, cost_key(stage, by_id)) for stage in stages]
    tunings = [fine_tuning_key(stage, key) for stage, key in planned]
    feature_runs = {key for (_, key), tuning in zip(planned, tunings) if tuning is not None}
    costs: dict[CostKey, MeasuredCost] = {}
    estimates = []
    for (stage, key), tuning in zip(planned, tunings):
        for needed in (key, tuning):
            if needed is not None and needed not in costs:
                progress(needed.label())
                costs[needed] = measure_cost(needed, config, train, validation, device, steps, scores_seconds,
                                             feature_run=needed in feature_runs)
        seconds = stage_seconds(stage, costs[key], len(train), costs[tuning] if tuning else None)
        estimates.append(StageEstimate(stage.id, stage.role, key, stage.planned_epochs(), seconds, tuning))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return ExperimentEstimate(config.name, f"{name} ({device.type}, {torch.get_num_threads()} threads)",
                              tuple(estimates), costs)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{seconds / 60:.1f} min"


def _validation(cost: MeasuredCost) -> str:
    feature_stage = f" (feature stage {cost.feature_validation:.1f})" if cost.feature_validation else ""
    return f"{cost.validation:.1f}{feature_stage}"


def format_estimate(estimate: ExperimentEstimate) -> str:
    """The estimate as Markdown: time per stage role, the total, and the measured costs behind them."""
    lines = [f"Estimated time of experiment {estimate.name!r} on {estimate.device}: "
             f"**{_duration(estimate.total_seconds)}** for {len(estimate.stages)} stages (report not counted).",
             "", "| stages | count | time |", "|---|---|---|"]
    lines += [f"| {role} | {count} | {_duration(seconds)} |" for role, count, seconds in estimate.by_role()]
    compiled = any(cost.compile > 0 for cost in estimate.costs.values())
    lines += ["", "| measured | training step (s) | teacher cache (s) | validation pass (s) | scores (s) |"
              + (" compilation (s) |" if compiled else ""), "|---|---|---|---|---|" + ("---|" if compiled else "")]
    lines += [f"| {key.label()} | {cost.step:.3f} | {cost.cache:.1f} | {_validation(cost)} | {cost.scores:.1f} |"
              + (f" {cost.compile:.1f} |" if compiled else "") for key, cost in estimate.costs.items()]
    return "\n".join(lines)


def estimate_data(estimate: ExperimentEstimate) -> dict[str, Any]:
    """The estimate as plain data for ``estimate.json``."""
    return {
        "experiment": estimate.name,
        "device": estimate.device,
        "total_seconds": estimate.total_seconds,
        "stages": [{"stage": s.stage, "role": s.role, "cost": s.cost.label(), "epochs": s.epochs, "seconds": s.seconds,
                    **({"fine_tuning": s.fine_tuning.label()} if s.fine_tuning else {})}
                   for s in estimate.stages],
        "costs": [{"cost": key.label(), **vars(cost)} for key, cost in estimate.costs.items()],
    }
