"""Time `kdrecon evaluate` per slice, split into its parts, on the embedded sample's validation split.

    python scripts/evaluation_speed.py RUN_DIR [--repeats 3] [--precision as-trained|fp32|bf16]

Prints milliseconds per slice for: the network's reconstructions, scoring them (five metrics
per slice and per volume), scoring the zero-filled baseline the first time and again (a second
evaluation in the same process, as every stage after the first in `kdrecon run`), and the whole
`evaluate` call (reconstruction, scores, files), loading the split itself or given it (as every
stage of `kdrecon run` is). Medians over the repeats. Compare versions by
running it in alternation on a quiet machine; record ratios in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdrecon.data.dataset import load_split
from kdrecon.evaluation import evaluate as evaluation
from kdrecon.training.checkpoint import load_model
from kdrecon.training.config import AS_TRAINED, INFERENCE_PRECISIONS
from kdrecon.training.fast_path import inference_precision


def median_ms(function, slices: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e3 / slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default=AS_TRAINED, choices=INFERENCE_PRECISIONS)
    args = parser.parse_args()
    data = load_split("sample", "validation")
    model, payload = load_model(args.run_dir)
    device = torch.device("cpu")
    precision = inference_precision(args.precision, payload.get("precision"), device)
    prediction = evaluation.reconstruct(model, data, device, precision=precision)
    zero_filled = evaluation.baselines(data)[evaluation.ZERO_FILLED]
    slices, rows = len(data), {}
    rows["reconstruction"] = median_ms(lambda: evaluation.reconstruct(model, data, device, precision=precision),
                                       slices, args.repeats)
    rows["scores of the network"] = median_ms(lambda: evaluation.score(data, prediction), slices, args.repeats)
    rows["scores of the zero-filled input"] = median_ms(lambda: evaluation.score(data, zero_filled), slices, args.repeats)
    with tempfile.TemporaryDirectory() as directory:
        run = lambda: evaluation.evaluate(args.run_dir, Path(directory) / "evaluation", dataset="sample", device="cpu",
                                          precision=precision)
        given = lambda: evaluation.evaluate(args.run_dir, Path(directory) / "evaluation", dataset="sample",
                                            device="cpu", precision=precision, data=data)
        run()  # the first evaluation in a process scores the baseline; later ones reuse it
        ends = {"evaluate, end to end": [], "evaluate, split loaded once": []}
        for _ in range(args.repeats):  # the two in alternation
            for name, call in zip(ends, (run, given)):
                ends[name].append(median_ms(call, slices, 1))
        rows |= {name: statistics.median(values) for name, values in ends.items()}
    print(f"{slices} slices of 150×150, {precision}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, value in rows.items():
        print(f"{name:<34}{value:8.2f} ms/slice")


if __name__ == "__main__":
    main()
