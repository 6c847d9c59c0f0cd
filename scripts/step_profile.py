"""Where a training step's time goes: torch.profiler over steps of one stage kind, by operator group.

    python scripts/step_profile.py distill --steps 10
    python scripts/step_profile.py sft-teacher --steps 5

The step is the bench's fast path (``training_step``: in-memory data, teacher cache, the layout
and precision training picks), D5C5 teacher and D3C5 student, batch 4, 150×150 slices of the
embedded sample, after 2 warm-up steps. CPU time of the profiled operators is grouped (kdrecon's
thin-convolution kernels, oneDNN's convolution forward and backward, FFTs, feature loss and other
element-wise work, the teacher cache's look-ups, the optimizer) and the rest of the wall time is
reported as Python and dispatch overhead. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import training_step

#: Operator name fragments → group, first match wins (aten names as the profiler reports them).
GROUPS = (
    ("thin convolutions (kdrecon's kernels)", ("kdrecon::",)),
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("convolution", "_nnpack", "thnn_conv", "_slow_conv2d", "conv2d")),
    ("FFT (data consistency)", ("_fft_",)),
    ("optimizer (Adam)", ("_foreach", "_fused_adam", "adam")),
    ("teacher cache look-ups", ("index_select", "index", "gather", "take")),
)


def group_of(name: str) -> str:
    for group, fragments in GROUPS:
        if any(fragment in name for fragment in fragments):
            return group
    return "element-wise, losses and the rest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("train", "sft-teacher", "distill"))
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    timed = training_step(args.kind, "D5C5", "D3C5", load_sample("train"), None, torch.device("cpu"), 4)
    for _ in range(2):
        timed.step()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(args.steps):
            timed.step()
    wall = (time.perf_counter() - started) / args.steps
    groups: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        if event.key.startswith(("aten::", "kdrecon::")):
            groups[group_of(event.key)] += event.self_cpu_time_total / 1e6 / args.steps
    accounted = sum(groups.values())
    print(f"{args.kind}: {wall * 1e3:.0f} ms per step (wall, under the profiler)")
    for group, seconds in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"  {group:36s} {seconds * 1e3:7.1f} ms  {seconds / wall:5.1%}")
    print(f"  {'Python, dispatch, autograd engine':36s} {(wall - accounted) * 1e3:7.1f} ms  {(wall - accounted) / wall:5.1%}")


if __name__ == "__main__":
    main()
