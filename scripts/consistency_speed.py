"""Data consistency as FFTs against its matrix form (kdrecon.mri.consistency), timed in alternation.

    python scripts/consistency_speed.py operator [--rounds 7]     # the operator alone, per image size
    python scripts/consistency_speed.py steps [--rounds 22]       # whole training steps on the sample

``operator``: a five-cascade network's data consistency (the operator built once, applied five
times; forward and backward as in training, and forward only) on random images with a line mask
of a quarter of the lines, at sizes from the sample's 150×150 to fastMRI's 640×368, with 2 threads
and with 1. ``steps``: the training steps of
`kdrecon bench` (teacher D5C5, SFT teacher D5C5/D3C5, AT distillation D5C5→D3C5 at batch 4, the
fast path) with the networks' data consistency switched between the two forms step by step.
Prints medians in milliseconds and FFT ÷ matrix. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import training_step
from kdrecon.models.cascade import use_matrix_consistency
from kdrecon.mri.consistency import DataConsistency

SIZES = ((150, 150, 4), (150, 150, 1), (256, 256, 4), (320, 320, 4), (640, 368, 4))


def median_ms(call, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e3


def operator_calls(height: int, width: int, batch: int) -> dict[str, callable]:
    """The four timed calls for one size: FFT and matrix, training (forward + backward) and inference."""
    cascades = 5
    rows = np.random.default_rng(0).random(height) < 0.25
    mask = torch.from_numpy(np.outer(rows, np.ones(width)).astype(np.float32))
    kspace = torch.fft.fft2(torch.rand(batch, height, width).to(torch.complex64), norm="ortho") * mask
    image = torch.randn(batch, 1, height, width, requires_grad=True)
    gradient = torch.randn(batch, 1, height, width)
    calls = {}
    for form in ("fft", "matrix"):
        def cascaded(form=form):
            consistency, out = DataConsistency(kspace, mask, matrix=form == "matrix"), image
            for _ in range(cascades):
                out = consistency(out)
            return out

        def train(cascaded=cascaded):
            cascaded().backward(gradient)

        def infer(cascaded=cascaded):
            with torch.no_grad():
                cascaded()
        calls[f"train {form}"], calls[f"infer {form}"] = train, infer
    return calls


def operator(rounds: int) -> None:
    for threads in (2, 1):
        torch.set_num_threads(threads)
        for height, width, batch in SIZES:
            calls = operator_calls(height, width, batch)
            times = {name: [] for name in calls}
            for _ in range(rounds):
                for name, call in calls.items():
                    times[name].append(median_ms(call, 10))
            ms = {name: statistics.median(values) for name, values in times.items()}
            print(f"{threads} threads, {height}×{width}, batch {batch}: "
                  + ", ".join(f"{name} {value:.3f} ms" for name, value in ms.items())
                  + f"; FFT ÷ matrix: training {ms['train fft'] / ms['train matrix']:.2f}, "
                  f"inference {ms['infer fft'] / ms['infer matrix']:.2f}")


def steps(rounds: int) -> None:
    data = load_sample("train")
    kinds = ("train", "sft-teacher", "distill")
    stages = {kind: training_step(kind, "D5C5", "D3C5", data, None, torch.device("cpu"), 4) for kind in kinds}
    times = {(kind, form): [] for kind in kinds for form in ("fft", "matrix")}
    for round_index in range(rounds):
        for kind, stage in stages.items():
            for form in ("fft", "matrix"):
                for module in stage.objective.modules().values():
                    use_matrix_consistency(module, form == "matrix")
                started = time.perf_counter()
                stage.step()
                if round_index >= 2:  # warm-up
                    times[(kind, form)].append(time.perf_counter() - started)
    for kind in kinds:
        fft, matrix = (statistics.median(times[(kind, form)]) * 1e3 for form in ("fft", "matrix"))
        print(f"{kind}: FFT {fft:.1f} ms, matrix {matrix:.1f} ms per step, FFT ÷ matrix {fft / matrix:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("operator", "steps"))
    parser.add_argument("--rounds", type=int, default=None)
    arguments = parser.parse_args()
    if arguments.what == "operator":
        operator(arguments.rounds or 7)
    else:
        steps(arguments.rounds or 22)


if __name__ == "__main__":
    main()
