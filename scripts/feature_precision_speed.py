"""AT distillation steps with the student's bf16 features handed to the loss as they are, or as float32 copies.

    python scripts/feature_precision_speed.py --rounds 10

Two distillation objectives of the bench (D5C5 → D3C5, AT on five layer pairs, batch 4, the
fast path's precision and layout, the teacher's maps cached) alternate: one as the distiller runs
it (AT takes the bf16 features and sums them in float32 itself), one with the loss marked as not
taking them, so the distiller converts every feature to float32 and casts its gradient back, as
it did for every method before. Medians in ms. Meaningful where training runs in bf16; run it on
a quiet machine.
"""

from __future__ import annotations

import argparse

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import training_step
from kdrecon.training.timing import interleaved_median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    data, device = load_sample("train"), torch.device("cpu")
    as_tapped = training_step("distill", "D5C5", "D3C5", data, None, device, 4)
    copies = training_step("distill", "D5C5", "D3C5", data, None, device, 4)
    copies.objective.feature_loss.takes_low_precision_features = False
    medians = interleaved_median_seconds({"features as tapped": as_tapped.step, "float32 copies": copies.step},
                                         device, args.rounds, warmup=2)
    print(f"precision {as_tapped.precision}, median of {args.rounds}")
    for name, seconds in medians.items():
        print(f"{name:<22}{seconds * 1e3:8.1f} ms")
    print(f"float32 copies / as tapped = {medians['float32 copies'] / medians['features as tapped']:.3f}")


if __name__ == "__main__":
    main()
