"""AT distillation steps with the teacher's attention maps cached, its features cached, or the
teacher run at every step, in alternation, on the embedded sample.

    python scripts/teacher_cache_speed.py --rounds 5
    python scripts/teacher_cache_speed.py --rounds 5 --dataset datasets/sunnybrook-4x   # the study's training split

Three distillation objectives of the bench (D5C5 → D3C5, AT on five layer pairs, batch 4, the
fast path's precision and layout; the embedded sample or a prepared dataset's training split):
the distiller's cache holding AT's teacher summaries (the
maps, the default), holding the teacher's features (as before summaries existed), and none (the
teacher runs every step, as when the features of a training split exceed ``teacher_cache_gib``).
Prints each one's median step time, the seconds spent filling its cache and the cache's size.
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse

import torch

from kdrecon.data.dataset import load_split
from kdrecon.distillation.losses.attention_transfer import AttentionTransfer
from kdrecon.evaluation.benchmark import training_step
from kdrecon.training.timing import interleaved_median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dataset", default="sample", help="a prepared dataset directory (4x), or sample")
    args = parser.parse_args()
    data, device = load_split(args.dataset, "train"), torch.device("cpu")
    summary = AttentionTransfer.teacher_summary
    steps = {"maps cached": training_step("distill", "D5C5", "D3C5", data, None, device, 4)}
    AttentionTransfer.teacher_summary = lambda self, features: None  # the distiller keeps the features
    try:
        steps["features cached"] = training_step("distill", "D5C5", "D3C5", data, None, device, 4)
        live = training_step("distill", "D5C5", "D3C5", data, None, device, 4)
    finally:
        AttentionTransfer.teacher_summary = summary
    live.objective.teacher_cache_bytes = 0
    live.objective.before_training(data)  # outputs only: the teacher runs for its features every step
    steps["teacher every step"] = live
    seconds = interleaved_median_seconds({name: step.step for name, step in steps.items()}, device, args.rounds, warmup=2)
    for name, step in steps.items():
        cached = step.objective._cached_features
        if cached is None:
            print(f"{name:20s} step {seconds[name]:.3f} s, no feature cache")
            continue
        size = sum(f.numel() * f.element_size() for f in cached) / 2**20
        print(f"{name:20s} step {seconds[name]:.3f} s, cache filled in {step.cache_seconds:.1f} s, "
              f"{size:.0f} MiB for {len(data)} slices")


if __name__ == "__main__":
    main()
