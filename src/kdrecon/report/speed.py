"""Speed, measured when the report is built: every network architecture timed in alternation.

Each network's time measured at the end of its own stage depends on whatever else the machine
did at that moment, so a report comparing them could show a student slower than its teacher.
Here one trained network per architecture (the teacher, each student size) runs on the same
validation batch in alternating rounds (:func:`kdrecon.training.timing.interleaved_seconds`);
each round gives one ratio per pair, e.g. teacher time / student time, and the report states the
median over rounds with the 2.5–97.5 percentile range as the spread. Networks of one
architecture (a student and its distilled versions) cost the same by construction, so the
architecture's time stands for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from kdrecon.data.dataset import SliceData
from kdrecon.evaluation.benchmark import inference_call
from kdrecon.report.run_layout import StageFiles
from kdrecon.training.checkpoint import load_model
from kdrecon.training.timing import interleaved_seconds
from kdrecon.training.trainer import prepare_module


@dataclass(frozen=True)
class SpeedComparison:
    """One network against another: median ms per slice of each, and their per-round ratio."""

    teacher_ms: float
    student_ms: float
    ratio: float
    ratio_range: tuple[float, float]
    rounds: int
    setting: str


@dataclass(frozen=True)
class NetworkTimes:
    """Seconds per slice of each timed architecture, one entry per alternating round."""

    seconds: Mapping[str, np.ndarray]
    rounds: int
    setting: str

    def milliseconds(self, model: str) -> float:
        """Median ms per slice of architecture ``model``."""
        return float(np.median(self.seconds[model])) * 1e3

    def comparison(self, slower: str, faster: str) -> SpeedComparison:
        """``slower`` (e.g. the teacher) against ``faster``: ratio of their times, round by round."""
        ratios = self.seconds[slower] / self.seconds[faster]
        return SpeedComparison(
            teacher_ms=self.milliseconds(slower),
            student_ms=self.milliseconds(faster),
            ratio=float(np.median(ratios)),
            ratio_range=(float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))),
            rounds=self.rounds,
            setting=self.setting,
        )


def time_networks(
    networks: Mapping[str, StageFiles], data: SliceData, batch_size: int, rounds: int, device: torch.device
) -> NetworkTimes:
    """Seconds per slice of each of ``networks`` (keyed by architecture), float32, in alternation."""
    batch = data.to(device).batch(torch.arange(min(batch_size, len(data)), device=device))
    calls = {}
    for model, files in networks.items():
        network = prepare_module(load_model(files.directory)[0], device, channels_last=True).eval()
        calls[model] = inference_call(network, batch, device, "fp32")
    times = interleaved_seconds(calls, device, rounds, warmup=3)
    per_slice = len(batch.target)
    return NetworkTimes(
        seconds={model: np.asarray(values) / per_slice for model, values in times.items()},
        rounds=rounds,
        setting=f"{device.type} float32, batch {per_slice}, {rounds} alternating rounds after 3 warm-up, "
        f"{torch.get_num_threads()} threads",
    )
