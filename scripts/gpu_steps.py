"""Training steps on a GPU: each stage kind in float32 and bf16, eager and compiled, and where a step's time goes.

    python scripts/gpu_steps.py --device cuda --batch-sizes 4 16 --output steps.md
    python scripts/gpu_steps.py --device cuda --batch-sizes 4 --compile fp32 bf16 --kinds train distill --output compiled.md

The step is the bench's fast path (``training_step``: in-memory data, teacher cache, channels-last),
D5C5 teacher and D3C5 student, 150×150 slices of the embedded sample. The variants of one batch size
and kind are timed in alternation (the median of ``--steps`` rounds after warm-up), with the
channels-last 32→32 3×3 convolution of each precision as the peak. ``--compile [PRECISION ...]``
adds steps with the trained network's forward under ``torch.compile`` (on a GPU in CUDA graphs, as
``kdrecon train --compile`` runs it). Each eager step is then profiled: device (kernel) time by operator group, and the rest of
the wall time, when the device waits for Python, dispatch and kernel launches.

Issue 15's GPU item; ``scripts/gpu_session.sh`` runs it on the lent machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import (convolution_peak_calls, count_macs, split_peak, training_flops_per_slice,
                                         training_step)
from kdrecon.experiment.estimate import compile_training_step
from kdrecon.models.registry import build_model
from kdrecon.training.timing import interleaved_median_seconds, synchronise
from step_profile import group_of  # this script's folder: the CPU profile's operator groups

KINDS = ("train", "sft-teacher", "distill")
PRECISIONS = ("fp32", "bf16")

def flops_per_slice(kind: str, device: torch.device) -> float:
    """The step's convolution FLOPs per slice, counted as ``kdrecon bench`` counts them."""
    example = load_sample("train").to(device).batch(torch.arange(1, device=device))
    models = {}
    for role, name in (("teacher", "D5C5"), ("student", "D3C5")):
        model = build_model(name).to(device)
        models[role] = {"macs_per_slice": count_macs(model, example), "cascades": model.cascades}
    return training_flops_per_slice({"models": models}, kind)


def step_variants(kind: str, batch_size: int, device: torch.device, compiled: list[str]) -> dict[str, Callable[[], None]]:
    """The eager steps in both precisions, and a compiled step in each precision of ``compiled``."""
    data = load_sample("train").to(device)
    variants = {}
    for precision in PRECISIONS:
        variants[f"{precision} eager"] = training_step(kind, "D5C5", "D3C5", data, None, device, batch_size,
                                                       precision=precision, channels_last=True).step
    for precision in compiled:
        timed = training_step(kind, "D5C5", "D3C5", data, None, device, batch_size, precision=precision,
                              channels_last=True)
        started = time.perf_counter()
        compile_training_step(timed, data, batch_size, device)
        print(f"  {kind} batch {batch_size} {precision}: compile and first steps {time.perf_counter() - started:.1f} s",
              flush=True)
        variants[f"{precision} compiled"] = timed.step
    return variants


def breakdown(step: Callable[[], None], device: torch.device, steps: int) -> tuple[float, dict[str, float]]:
    """Wall seconds per step under the profiler, and seconds per step by operator group: device
    (kernel) time on a GPU, the operators' own CPU time on a CPU."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronise(device)
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        synchronise(device)
    wall = (time.perf_counter() - started) / steps
    groups: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        if not event.key.startswith("aten::"):
            continue
        if device.type == "cuda":
            microseconds = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        else:
            microseconds = event.self_cpu_time_total
        groups[group_of(event.key)] += microseconds / 1e6 / steps
    return wall, dict(groups)


def measure(kind: str, batch_size: int, device: torch.device, steps: int, compiled: list[str]) -> list[str]:
    variants = step_variants(kind, batch_size, device, compiled)
    peaks = {}
    for precision in PRECISIONS:
        peaks.update({f"{key}/{precision}": call for key, call in convolution_peak_calls(device, 150, precision).items()})
    seconds = interleaved_median_seconds({**variants, **peaks}, device, steps, warmup=2)
    peak = {p: split_peak({k.rsplit("/", 1)[0]: v for k, v in seconds.items() if k.endswith(f"/{p}")}, 150).peak_flops
            for p in PRECISIONS}
    flops = flops_per_slice(kind, device) * batch_size
    lines = []
    for name, call in variants.items():
        precision = name.split()[0]
        lines.append(f"| {kind} | {batch_size} | {name} | {seconds[name] * 1e3:.2f} | {batch_size / seconds[name]:.0f} | "
                     f"{flops / seconds[name] / 1e12:.2f} | {flops / seconds[name] / peak[precision]:.0%} |")
    for name in (n for n in variants if n.endswith("eager")):
        wall, groups = breakdown(variants[name], device, max(3, steps // 3))
        parts = ", ".join(f"{group} {value * 1e3:.2f}" for group, value in sorted(groups.items(), key=lambda item: -item[1]))
        lines.append(f"|  |  | ↳ {name} under the profiler: {wall * 1e3:.2f} ms, of which {parts}; "
                     f"not accounted (waiting for Python, dispatch, launches) {(wall - sum(groups.values())) * 1e3:.2f} |  |  |  |  |")
    lines.append(f"|  |  | peak 32→32 conv, fp32 / bf16 (TFLOP/s) | | | {peak['fp32'] / 1e12:.1f} / {peak['bf16'] / 1e12:.1f} | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", nargs="*", choices=PRECISIONS, default=None,
                        help="add compiled steps in these precisions (default, with the flag alone: bf16)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    compiled = [] if args.compile is None else args.compile or ["bf16"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = [f"Device: {name}, torch {torch.__version__}; 150×150 slices, D5C5 teacher, D3C5 student, channels-last; "
             f"median of {args.steps} alternated steps. Times in ms per step.", "",
             "| stage kind | batch | variant | ms per step | slices/s | TFLOP/s | % of the precision's conv peak |",
             "|---|---|---|---|---|---|---|"]
    for batch_size in args.batch_sizes:
        for kind in args.kinds:
            lines += measure(kind, batch_size, device, args.steps, compiled)
            args.output.write_text("\n".join(lines) + "\n")  # what is measured so far survives a time-out
            print("\n".join(lines[-4:]), flush=True)


if __name__ == "__main__":
    main()
