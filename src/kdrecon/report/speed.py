"""The speed claim, measured when the report is built: teacher and student timed in alternation.

Each network's time measured at the end of its own stage depends on whatever else the machine
did at that moment, so a report comparing them could show a student slower than its teacher.
Here the two trained networks run on the same validation batch in alternating rounds
(:func:`kdrecon.evaluation.benchmark.interleaved_seconds`); each round gives one ratio
teacher time / student time, and the report states their median and the 2.5–97.5 percentile
range over rounds as the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdrecon.data.dataset import SliceData
from kdrecon.evaluation.benchmark import inference_call, interleaved_seconds
from kdrecon.report.run_layout import StageFiles
from kdrecon.training.checkpoint import load_model
from kdrecon.training.trainer import prepare_module


@dataclass(frozen=True)
class SpeedComparison:
    teacher_ms: float
    student_ms: float
    ratio: float
    ratio_range: tuple[float, float]
    rounds: int
    setting: str


def time_teacher_and_student(
    teacher: StageFiles, student: StageFiles, data: SliceData, batch_size: int, rounds: int, device: torch.device
) -> SpeedComparison:
    """Median ms per slice of each network, and the per-round teacher/student ratio, float32."""
    batch = data.to(device).batch(torch.arange(min(batch_size, len(data)), device=device))
    calls = {}
    for role, files in (("teacher", teacher), ("student", student)):
        model = prepare_module(load_model(files.directory)[0], device, channels_last=True).eval()
        calls[role] = inference_call(model, batch, device, "fp32")
    times = interleaved_seconds(calls, device, rounds, warmup=3)
    teacher_s, student_s = np.asarray(times["teacher"]), np.asarray(times["student"])
    ratios = teacher_s / student_s
    per_slice = len(batch.target)
    return SpeedComparison(
        teacher_ms=float(np.median(teacher_s)) * 1e3 / per_slice,
        student_ms=float(np.median(student_s)) * 1e3 / per_slice,
        ratio=float(np.median(ratios)),
        ratio_range=(float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))),
        rounds=rounds,
        setting=f"{device.type} float32, batch {per_slice}, {rounds} alternating rounds after 3 warm-up, "
        f"{torch.get_num_threads()} threads",
    )
