"""How ``auto`` precision and layout resolve for every stage of one experiment on a CPU.

A CPU's fast path is measured (:func:`kdrecon.training.fast_path.cpu_training_path`), once per
process, and two processes can measure differently when bf16 and float32, or two layouts, run
at similar speeds. An experiment's stages run in several processes (a resumed ``kdrecon run``,
``--parallel`` workers, ``torchrun`` ranks), and stages trained in different precisions are not
comparable to the 0.05 dB the papers' effects need. So the first process records its path in
``RUN/cpu-training-path.json`` and every later one adopts it
(:func:`kdrecon.training.fast_path.adopted_cpu_path`).

A run directory made before the file existed gets one built from what its finished stages
recorded (``stage.json``), measured only for what they leave open. A recorded bf16 is not
adopted on a CPU that only emulates bf16 (many times slower): there stages resolve ``auto`` to
float32, in the recorded layout.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, replace

import torch

from kdrecon.evaluation.evaluate import write_json
from kdrecon.experiment.config import ExperimentConfig
from kdrecon.experiment.stages import Stage
from kdrecon.report.run_layout import RunLayout, is_finished, read_json
from kdrecon.training.fast_path import (AUTO_LAYOUT, AUTO_PRECISION, CpuTrainingPath, adopted_cpu_path,
                                        current_cpu_path, native_bf16)
from kdrecon.training.trainer import resolve_device

_CPU = torch.device("cpu")


def recorded_cpu_path(layout: RunLayout) -> CpuTrainingPath | None:
    """The path recorded in ``layout``'s run directory, checked; None where none is."""
    recorded = read_json(layout.cpu_training_path)
    if recorded is None:
        return None
    precision, channels_last = recorded.get("precision"), recorded.get("float32_channels_last")
    seconds = recorded.get("seconds", {})
    if precision not in ("fp32", "bf16") or not isinstance(channels_last, bool) or not isinstance(seconds, dict):
        raise ValueError(f"{layout.cpu_training_path}: not a recorded CPU training path (precision fp32 or bf16, "
                         f"float32_channels_last true or false); remove it to measure again")
    return CpuTrainingPath(precision, channels_last, seconds)


def resolves_by_measurement(config: ExperimentConfig) -> bool:
    """Whether any setting of ``config`` is left to a CPU measurement."""
    on_cpu = resolve_device(config.device).type == "cpu"
    return on_cpu and AUTO_PRECISION in (config.precision, config.channels_last)


def _from_finished_stages(config: ExperimentConfig, layout: RunLayout, stages: list[Stage],
                          prints: dict[str, str]) -> CpuTrainingPath | None:
    """The path finished stages trained in, where their settings were ``auto``: stages of the
    current settings (fingerprint), trained on a CPU; measured for the part they do not tell
    (the float32 layout of stages that all ran in bf16)."""
    states = {stage.id: layout.stage(stage.id).state() for stage in stages}
    trained = [s for identifier, s in states.items()
               if is_finished(s, prints[identifier])
               and s.get("device") == "cpu" and s.get("precision") in ("fp32", "bf16")]
    if not trained:
        return None
    precision = trained[0]["precision"] if config.precision == AUTO_PRECISION else None
    float32 = [s for s in trained if s["precision"] == "fp32" and isinstance(s.get("channels_last"), bool)]
    layout_known = config.channels_last == AUTO_LAYOUT and float32
    measured = None if precision and layout_known else current_cpu_path()
    return CpuTrainingPath(precision or measured.precision,
                           float32[0]["channels_last"] if layout_known else measured.float32_channels_last,
                           {} if measured is None else measured.seconds)


def experiment_cpu_path(config: ExperimentConfig, layout: RunLayout, stages: list[Stage],
                        prints: dict[str, str]) -> CpuTrainingPath | None:
    """The path this experiment's stages train in on a CPU (None where nothing is measured):
    recorded, else from its finished stages (``prints``: their current fingerprints), else
    measured now; written to the run directory the first time. On a CPU that only emulates bf16
    a recorded bf16 becomes float32, the recorded layout kept, alike in every process there. Call
    on one process (rank 0) and share the result."""
    if not resolves_by_measurement(config):
        return None
    path = recorded_cpu_path(layout)
    if path is None:
        path = _from_finished_stages(config, layout, stages, prints) or current_cpu_path()
        write_json(layout.cpu_training_path, asdict(path))
    if path.precision == "bf16" and not native_bf16(_CPU):
        path = replace(path, precision="fp32")
    return path


def adopted(path: CpuTrainingPath | None) -> contextlib.AbstractContextManager:
    """A block in which ``auto`` resolves as ``path`` says (no change for None)."""
    return contextlib.nullcontext() if path is None else adopted_cpu_path(path)


def copy_recorded_path(layout: RunLayout, source: RunLayout) -> None:
    """With ``--reuse-from``: stages copied in trained as ``source`` recorded; new ones follow it."""
    if not layout.cpu_training_path.exists() and source.cpu_training_path.exists():
        layout.root.mkdir(parents=True, exist_ok=True)
        write_json(layout.cpu_training_path, asdict(recorded_cpu_path(source)))
