"""Training steps in each precision and layout, on the embedded sample, in alternation.

    python scripts/training_layout_speed.py --rounds 5
    python scripts/training_layout_speed.py --rounds 5 --variants fp32-channels-last fp32-nchw

Each stage kind's objective is built by the bench's ``training_step`` (in-memory data, teacher
cache) in channels-last and, for an ``nchw`` variant, converted to NCHW with the plain 32→1
convolution; every step of every variant alternates call by call (2 warm-up steps, median of
``--rounds``). The first variant is the one the others are divided by. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import training_step
from kdrecon.models.dccnn import use_depthwise_forms
from kdrecon.training.timing import interleaved_median_seconds

KINDS = (("train", "D5C5", "D3C5"), ("train", "D3C5", "D3C5"), ("distill", "D5C5", "D3C5"), ("sft-teacher", "D5C5", "D3C5"))
VARIANTS = ("fp32-channels-last", "fp32-nchw", "bf16-channels-last", "bf16-nchw")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    data, device = load_sample("train"), torch.device("cpu")
    steps = {}
    for kind, teacher, student in KINDS:
        label = f"{kind} {teacher}" if kind == "train" else f"{kind} {teacher}->{student}"
        for variant in args.variants:
            precision, layout = variant.split("-", 1)
            timed = training_step(kind, teacher, student, data, None, device, 4, precision=precision, channels_last=True)
            if layout == "nchw":
                for module in timed.objective.modules().values():
                    module.to(memory_format=torch.contiguous_format)
                    use_depthwise_forms(module, False)
            steps[(label, variant)] = timed.step
    seconds = interleaved_median_seconds(steps, device, args.rounds, warmup=2)
    first = args.variants[0]
    for label in dict.fromkeys(label for label, _ in steps):
        cells = [f"{variant} {seconds[(label, variant)]:.3f} s ({seconds[(label, variant)] / seconds[(label, first)]:.2f})"
                 for variant in args.variants]
        print(f"{label:28s} " + ", ".join(cells))


if __name__ == "__main__":
    main()
