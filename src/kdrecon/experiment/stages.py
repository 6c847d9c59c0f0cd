"""The graph of stages an experiment runs, each with a fingerprint of everything it depends on.

Stages (``RUN/stages/{name}/``):

========================  ==========  ===================================================
name                      role        what
========================  ==========  ===================================================
teacher                   teacher     the DnCm teacher on L1
student                   student     the baseline DnCm student on L1
sft-teacher               sft-teacher the student-friendly teacher (SFT step)
std-kd-{method}           std-kd      student distilled from ``teacher``
sft-kd-{method}           sft-kd      student initialised from and distilled by ``sft-teacher``
sft-kd-{method}-random    sft-kd-random  the same with a random initialisation (ablation)
student-{DnCm}            sweep       more baseline students (compression sweep)
========================  ==========  ===================================================

A stage's fingerprint hashes its own config together with the fingerprints of the stages it
depends on, so changing one stage's settings changes exactly its own fingerprint and those of
the stages downstream of it — and only those are rerun.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from kdrecon.experiment.config import ExperimentConfig

#: Placeholder for a dependency's run directory inside a stage config (resolved when run).
STAGE_REFERENCE = "stage:"

METHOD_LABELS = {"at": "AT", "fitnets": "FitNets", "sp": "SP", "fsp": "FSP", "cc": "CC",
                 "at-paper": "AT (KD-MRI code)", "nst": "NST", "ft": "FT", "pkt": "PKT"}


@dataclass(frozen=True)
class Stage:
    name: str
    kind: Literal["train", "distill"]
    role: str
    label: str
    config: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    method: str | None = None
    model: str = ""

    def planned_epochs(self) -> int:
        epochs = self.config["optimization"]["epochs"]
        if self.kind == "distill" and self.config.get("procedure") == "two-stage":
            epochs += self.config.get("feature_epochs") or epochs
        return epochs


def build_stages(config: ExperimentConfig) -> list[Stage]:
    """Every stage of ``config``, dependencies first."""
    common = {
        "seed": config.seed,
        "device": config.device,
        "precision": config.precision,
        "channels_last": config.channels_last,
        "data": config.data.model_dump(mode="json"),
    }
    epochs = config.epochs

    def optimization(value: int | None) -> dict[str, Any]:
        return {**config.optimization.model_dump(mode="json"), "epochs": value or config.optimization.epochs}

    def train(name: str, role: str, label: str, model: dict[str, Any], stage_epochs: int | None, **more) -> Stage:
        data = {"name": name, **common, "model": {"channels": config.channels, **model}, "optimization": optimization(stage_epochs), **more}
        return Stage(name, "train", role, label, data, model=model["name"])

    stages = [
        train("teacher", "teacher", f"Teacher {config.teacher}", {"name": config.teacher}, epochs.teacher),
        train("student", "student", f"Student {config.student}", {"name": config.student}, epochs.student),
        train(
            "sft-teacher", "sft-teacher", f"SFT teacher {config.teacher}",
            {"name": "sft-teacher", "teacher": config.teacher, "student": config.student}, epochs.sft_teacher,
            sft=config.sft.model_dump(mode="json"),
        ),
    ]

    def distill(name: str, role: str, label: str, teacher: str, method: str, init: str) -> Stage:
        data = {
            "name": name, **common,
            "teacher": STAGE_REFERENCE + teacher,
            "student": {"name": config.student, "channels": config.channels},
            "method": method, "procedure": config.procedure, "alpha": config.alpha, "init": init,
            "optimization": optimization(epochs.distillation),
        }
        if epochs.feature_stage is not None:
            data["feature_epochs"] = epochs.feature_stage
        return Stage(name, "distill", role, label, data, (teacher,), method, config.student)

    for method in config.methods:
        label = METHOD_LABELS[method]
        stages.append(distill(f"std-kd-{method}", "std-kd", f"{label} Std-KD", "teacher", method, "random"))
        stages.append(distill(f"sft-kd-{method}", "sft-kd", f"{label} SFT-KD", "sft-teacher", method, "sft"))
        if config.random_init_ablation:
            stages.append(
                distill(f"sft-kd-{method}-random", "sft-kd-random", f"{label} SFT-KD (random init)", "sft-teacher", method, "random")
            )
    for model in config.compression_sweep:
        if model not in (config.teacher, config.student):
            stages.append(train(f"student-{model}", "sweep", f"Student {model}", {"name": model}, epochs.student))
    return stages


def fingerprints(stages: list[Stage]) -> dict[str, str]:
    """A hash per stage of its config and, recursively, of the stages it depends on."""
    result: dict[str, str] = {}
    for stage in stages:  # dependencies come first
        text = json.dumps({"config": stage.config, "depends_on": {d: result[d] for d in stage.depends_on}}, sort_keys=True)
        result[stage.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return result
