"""The graph of stages an experiment runs, each with a fingerprint of everything it depends on.

Every stage runs once per seed of the experiment (``seeds: [42, 43, 44]``), in
``RUN/stages/seed-{s}/{name}/``; a distilled student of seed s learns from the teacher of seed
s, so every comparison is paired by seed. Stages of one seed come before the next seed's, so an
interrupted study holds whole replicates.

========================================  ==============  =========================================
name                                      role            what
========================================  ==============  =========================================
teacher                                   teacher         the DnCm teacher on L1
student                                   student         the baseline DnCm student on L1
sft-teacher                               sft-teacher     the student-friendly teacher (SFT step)
std-kd-{method}                           std-kd          student distilled from ``teacher``
sft-kd-{method}                           sft-kd          initialised from and distilled by ``sft-teacher``
sft-kd-{method}-random                    sft-kd-random   the same with a random initialisation (ablation)
student-{M}                               sweep           more student sizes M (compression sweep, Table 8)
sft-teacher-{M}                           sweep-sft-te..  the SFT teacher of student M
std-kd-{method}-{M}, sft-kd-{method}-{M}  sweep-std-kd/.. student M distilled (``compression_methods``)
std-kd-{method}-{procedure}               std-kd          first seeds: the other procedure (ablation)
sft-kd-{method}-{procedure}               sft-kd          first seeds: the other procedure (ablation)
sft-teacher-{p}, sft-kd-{method}-{p}     sft-teacher/..  first seeds: SFT loss preset sft-{p} (ablation)
{stage}-fine-tuned                        as {stage}      started from a trained network (Figure 7); first seed
                                                          only unless its path holds ``{seed}``
kd-mri-{at, imitation, at-imitation}      kd-mri          KD-MRI's ablation: AT alone, imitation alone, both
========================================  ==============  =========================================

"First seeds" are the first ``ablation_seeds`` of the seeds (one by default). An ablation stage carries its ``variant`` (the procedure or SFT preset it changes). A stage's
fingerprint hashes its own config together with the fingerprints of the stages it depends on,
so changing one stage's settings changes exactly its own fingerprint and those of the stages
downstream of it — and only those are rerun.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from kdrecon.distillation.losses import method_label
from kdrecon.experiment.config import ExperimentConfig
from kdrecon.training.config import DISTILL, KD_MRI_ABLATION, PROCEDURES, TRAIN, ConfigError
from kdrecon.models.registry import SFT_TEACHER as SFT_TEACHER_MODEL
from kdrecon.report import stage_names as names
from kdrecon.report.run_layout import stage_id
from kdrecon.report.stage_names import Role

#: Placeholder for a dependency's run directory inside a stage config (resolved when run).
STAGE_REFERENCE = "stage:"
#: The variant of a stage started from a trained network (``fine_tune``).
FINE_TUNED = "fine-tuned"



@dataclass(frozen=True)
class Stage:
    name: str
    seed: int
    kind: str  # TRAIN or DISTILL (kdrecon.training.config)
    role: str
    label: str
    config: dict[str, Any]
    depends_on: tuple[str, ...] = ()  # stage ids
    method: str | None = None
    model: str = ""
    variant: str = ""  # the procedure or SFT loss an ablation stage changes
    ablation_of: str = ""  # the name of the main stage it varies

    @property
    def id(self) -> str:
        return stage_id(self.name, self.seed)

    def planned_epochs(self) -> int:
        epochs = self.config["optimization"]["epochs"]
        if self.kind == DISTILL and self.config.get("procedure") == "two-stage":
            epochs += self.config.get("feature_epochs") or epochs
        return epochs


@dataclass
class _SeedGraph:
    """Builds the stages of one seed."""

    config: ExperimentConfig
    seed: int
    stages: list[Stage] = field(default_factory=list)
    main_student: Stage | None = None

    def common(self) -> dict[str, Any]:
        config = self.config
        common = {"seed": self.seed, "device": config.device, "precision": config.precision,
                  "channels_last": config.channels_last, "data": config.data.model_dump(mode="json")}
        # Only when asked: the stages of every earlier run keep their fingerprints.
        return {**common, "compile": True} if config.compile else common

    def optimization(self, epochs: int | None, lr_step_shift: int = 0) -> dict[str, Any]:
        """The optimisation settings for ``epochs``; ``lr_step_shift`` moves the learning-rate decay."""
        settings = {**self.config.optimization.model_dump(mode="json"), "epochs": epochs or self.config.optimization.epochs}
        settings["lr_step_epochs"] = max(1, settings["lr_step_epochs"] + lr_step_shift)
        return settings

    def train(self, name: str, role: str, label: str, model: dict[str, Any], epochs: int | None,
              variant: str = "", ablation_of: str = "", **more: Any) -> Stage:
        data = {"name": name, **self.common(), "model": {"channels": self.config.channels, **model},
                "optimization": self.optimization(epochs), **more}
        stage = Stage(name, self.seed, TRAIN, role, label, data, model=model["name"], variant=variant,
                      ablation_of=ablation_of)
        self.stages.append(stage)
        return stage

    def sft_teacher(self, preset: str, variant: str = "", student: str | None = None) -> Stage:
        """The SFT teacher with the main SFT loss, an SFT loss ablation (``variant``), or for a sweep student."""
        config = self.config
        sft = config.sft.model_dump(mode="json") if not variant else {"preset": preset}
        suffix = _short(variant) if variant else (student or "")
        role = Role.SWEEP_SFT_TEACHER if student else Role.SFT_TEACHER
        label = f"SFT teacher {config.teacher}{_label(variant)}" + (f" for {student}" if student else "")
        return self.train(
            names.sft_teacher(suffix), role, label,
            {"name": SFT_TEACHER_MODEL, "teacher": config.teacher, "student": student or config.student},
            config.epochs.sft_teacher, variant, names.SFT_TEACHER if variant else "", sft=sft,
        )

    def distill(self, role: str, method: str, teacher: Stage, init: str, procedure: str, *,
                suffix: str = "", variant: str = "", student: str | None = None,
                name: str | None = None, label: str | None = None, alpha: float | None = None) -> Stage:
        """A distilled student: ``role`` (std-kd, sft-kd, …), ``init`` (random or sft); ``suffix``
        names a variant or another student size; ``name``, ``label`` and ``alpha`` override the defaults."""
        config, epochs = self.config, self.config.epochs
        sft = role.startswith((Role.SFT_KD, Role.SWEEP_SFT_KD))
        name = name or (names.sft_kd if sft else names.std_kd)(method, suffix)
        student = student or config.student
        total = epochs.distillation or config.optimization.epochs
        data = {
            "name": name, **self.common(), "teacher": STAGE_REFERENCE + teacher.id,
            "student": {"name": student, "channels": config.channels},
            "method": method, "procedure": procedure, "alpha": config.alpha if alpha is None else alpha, "init": init,
            "optimization": self.optimization(total), **config.method_settings_of(method),
        }
        # The procedure ablation trains as many epochs in all as the main procedure, and its last
        # stage decays the learning rate with as many epochs left as the main one does.
        if procedure == "two-stage" and epochs.feature_stage is not None:
            data["feature_epochs"] = epochs.feature_stage
            if config.procedure == "single-stage":
                data["optimization"] = self.optimization(total - epochs.feature_stage, -epochs.feature_stage)
        elif procedure == "single-stage" and config.procedure == "two-stage":
            feature = epochs.feature_stage or total
            data["optimization"] = self.optimization(total + feature, feature)
        label = label or f"{method_label(method)} {'SFT-KD' if sft else 'Std-KD'}"
        if role == Role.SFT_KD_RANDOM:
            label += " (random init)"
        if student != config.student:
            label += f" {student}"
        stage = Stage(name, self.seed, DISTILL, role, label + _label(variant), data, (teacher.id,), method,
                      student, variant, (names.sft_kd if sft else names.std_kd)(method) if variant else "")
        self.stages.append(stage)
        return stage

    def main(self) -> tuple[Stage, Stage]:
        config = self.config
        teacher = self.train(names.TEACHER, Role.TEACHER, f"Teacher {config.teacher}", {"name": config.teacher},
                             config.epochs.teacher)
        self.main_student = self.train(names.STUDENT, Role.STUDENT, f"Student {config.student}", {"name": config.student},
                                       config.epochs.student)
        sft_teacher = self.sft_teacher(config.sft.preset)
        for method in config.methods:
            self.distill(Role.STD_KD, method, teacher, "random", config.procedure)
            self.distill(Role.SFT_KD, method, sft_teacher, "sft", config.procedure)
            if config.random_init_ablation:
                self.distill(Role.SFT_KD_RANDOM, method, sft_teacher, "random", config.procedure, suffix="random")
        for model in config.compression_sweep:
            self.compression(model, teacher)
        if config.kd_mri_ablation:
            self.kd_mri(teacher)
        self.fine_tune(teacher, sft_teacher, per_seed=True)
        return teacher, sft_teacher

    def fine_tune(self, teacher: Stage, sft_teacher: Stage, per_seed: bool) -> None:
        """The ``fine_tune`` stages of this seed: replicated ones (``per_seed``) or the first seed's."""
        mains = {stage.name: stage for stage in (teacher, sft_teacher)}
        for name, source in self.config.fine_tune.sources(self.seed, per_seed).items():
            self.fine_tuned(mains.get(name) or self.main_student, source)

    def kd_mri(self, teacher: Stage) -> None:
        """KD-MRI's ablation, Std-KD from the teacher: attention transfer alone, imitation alone, both."""
        for recipe in KD_MRI_ABLATION:
            self.distill(Role.KD_MRI, recipe.method, teacher, "random", recipe.procedure, name=recipe.stage,
                         label=recipe.label, alpha=recipe.alpha)

    def compression(self, student: str, teacher: Stage) -> None:
        """Table 8 for one more student size: its baseline and, per method, Std-KD and SFT-KD (own SFT teacher)."""
        config = self.config
        self.train(names.student(student), Role.SWEEP, f"Student {student}", {"name": student}, config.epochs.student)
        if not config.sweep_methods:
            return
        sft_teacher = self.sft_teacher(config.sft.preset, student=student)
        for method in config.sweep_methods:
            self.distill(Role.SWEEP_STD_KD, method, teacher, "random", config.procedure, suffix=student, student=student)
            self.distill(Role.SWEEP_SFT_KD, method, sft_teacher, "sft", config.procedure, suffix=student, student=student)

    def fine_tuned(self, main: Stage, source: str) -> Stage:
        """``main`` again, started from a trained network's weights (Figure 7)."""
        name = f"{main.name}-fine-tuned"
        stage = dataclasses.replace(main, name=name, label=f"{main.label}{_label(FINE_TUNED)}",
                                    config={**main.config, "name": name, "init_from": source},
                                    variant=FINE_TUNED, ablation_of=main.name)
        self.stages.append(stage)
        return stage

    def ablations(self, teacher: Stage, sft_teacher: Stage, first: bool) -> None:
        """The other procedure and SFT losses of this seed, and on the ``first`` seed the fine-tuning from
        one given network."""
        config = self.config
        if first:
            self.fine_tune(teacher, sft_teacher, per_seed=False)
        if config.procedure_ablation:
            other = next(p for p in PROCEDURES if p != config.procedure)
            for method in config.methods:
                self.distill(Role.STD_KD, method, teacher, "random", other, suffix=other, variant=other)
                self.distill(Role.SFT_KD, method, sft_teacher, "sft", other, suffix=other, variant=other)
        for preset in config.sft_preset_ablation:
            variant_teacher = self.sft_teacher(preset, preset)
            for method in config.methods:
                self.distill(Role.SFT_KD, method, variant_teacher, "sft", config.procedure, suffix=_short(preset),
                             variant=preset)


def _short(variant: str) -> str:
    return variant.removeprefix("sft-")


def _label(variant: str) -> str:
    return f" [{variant}]" if variant else ""


def build_stages(config: ExperimentConfig) -> list[Stage]:
    """Every stage of ``config`` for every seed, dependencies first; the ablations of the first
    ``ablation_seeds`` seeds last, seed by seed."""
    graphs = [_SeedGraph(config, seed) for seed in config.replicate_seeds]
    mains = [graph.main() for graph in graphs]
    stages = [stage for graph in graphs for stage in graph.stages]
    for index in range(config.ablation_seeds):
        seed_ablations = _SeedGraph(config, config.replicate_seeds[index], main_student=graphs[index].main_student)
        seed_ablations.ablations(*mains[index], first=index == 0)
        stages += seed_ablations.stages
    _refuse_unused_method_settings(config, {stage.method for stage in stages if stage.method})
    _refuse_unused_feature_stage(config, stages)
    return stages


def _refuse_unused_method_settings(config: ExperimentConfig, used: set[str]) -> None:
    """Settings for a method no stage distils with would be silently ignored: a typo or a wrong ``methods``."""
    for method in config.method_settings:
        if method not in used:
            raise ConfigError(f"method_settings.{method}: no stage of this experiment distils with {method} "
                              f"(its stages use {', '.join(sorted(used)) or 'no method'}); remove it, or "
                              "--set 'method_settings={}' to drop a preset's")


def _refuse_unused_feature_stage(config: ExperimentConfig, stages: list[Stage]) -> None:
    """``epochs.feature_stage`` counts the first stage of two-stage distillations; without one it would be ignored."""
    two_stage = config.procedure == "two-stage" or any(stage.config.get("procedure") == "two-stage" for stage in stages)
    if config.epochs.feature_stage is not None and not two_stage:
        raise ConfigError("epochs.feature_stage: no stage of this experiment distils with the two-stage procedure; "
                          "remove it (--set epochs.feature_stage=null), or set procedure: two-stage or an ablation that runs it")


def fingerprints(stages: list[Stage]) -> dict[str, str]:
    """A hash per stage id of its config and, recursively, of the stages it depends on."""
    result: dict[str, str] = {}
    for stage in stages:  # dependencies come first
        text = json.dumps({"config": stage.config, "depends_on": {d: result[d] for d in stage.depends_on}}, sort_keys=True)
        result[stage.id] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return result
