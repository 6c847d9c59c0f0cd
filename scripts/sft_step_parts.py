"""The SFT teacher's training step against the steps of its parts, a D5C5 teacher and a D3C5 student, alternated.

    python scripts/sft_step_parts.py --rounds 6

The SFT step (:mod:`kdrecon.distillation.student_friendly`) runs the teacher's five D5 blocks and
ten D3 blocks of student branches (4 + 3 + 2 + 1), forward and backward: about one teacher step
and two student steps. The bench's fast path at batch 4 on the embedded sample; medians in ms
and the ratio SFT / (teacher + 2 × student). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import training_step
from kdrecon.training.timing import interleaved_median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    data, device = load_sample("train"), torch.device("cpu")
    steps = {"SFT teacher (D5C5 + D3C5 branches)": training_step("sft-teacher", "D5C5", "D3C5", data, None, device, 4),
             "teacher D5C5 on L1": training_step("train", "D5C5", "D3C5", data, None, device, 4),
             "student D3C5 on L1": training_step("train", "D3C5", "D3C5", data, None, device, 4)}
    medians = interleaved_median_seconds({name: step.step for name, step in steps.items()}, device, args.rounds,
                                         warmup=2)
    for name, seconds in medians.items():
        print(f"{name:<36}{seconds * 1e3:8.1f} ms")
    sft, teacher, student = medians.values()
    print(f"SFT / (teacher + 2 × student) = {sft / (teacher + 2 * student):.3f}")


if __name__ == "__main__":
    main()
