"""Training steps of each stage kind with the C→1 convolutions plain and in their depthwise form.

    python scripts/depthwise_step_timing.py --steps 10

The bench's fast path (``training_step``: float32 NCHW on this CPU, in-memory data, teacher
cache), D5C5 teacher and D3C5 student, batch 4 of the embedded sample. For each stage kind the
two forms alternate step by step after two warm-up steps; prints the medians and their ratio.
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import training_step
from kdrecon.training.config import STAGE_KINDS
from kdrecon.models.dccnn import use_depthwise_single_output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    data = load_sample("train")
    for kind in STAGE_KINDS:
        steps = {}
        for form, depthwise in (("plain", False), ("depthwise", True)):
            timed = training_step(kind, "D5C5", "D3C5", data, None, torch.device("cpu"), 4)
            for module in timed.objective.modules().values():
                use_depthwise_single_output(module, depthwise)
            steps[form] = timed.step
        times: dict[str, list[float]] = {form: [] for form in steps}
        for round_ in range(args.steps + 2):
            for form, step in steps.items():
                started = time.perf_counter()
                step()
                if round_ >= 2:
                    times[form].append(time.perf_counter() - started)
        plain, depthwise = (statistics.median(times[form]) * 1e3 for form in ("plain", "depthwise"))
        print(f"{kind:12s} plain {plain:7.1f} ms  depthwise {depthwise:7.1f} ms  plain/depthwise {plain / depthwise:.3f}")


if __name__ == "__main__":
    main()
