"""Training steps in channels-last against NCHW, float32, on the embedded sample, in alternation.

    python scripts/training_layout_speed.py --rounds 5

Each stage kind's objective is built by the bench's ``training_step`` (in-memory data, teacher
cache), once left in channels-last and once converted to NCHW with the plain 32→1 convolution;
the eight steps alternate call by call (2 warm-up steps, median of ``--rounds``). Run it on a
quiet machine.
"""

from __future__ import annotations

import argparse

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import interleaved_median_seconds, training_step
from kdrecon.models.dccnn import use_depthwise_single_output

KINDS = (("train", "D5C5", "D3C5"), ("train", "D3C5", "D3C5"), ("distill", "D5C5", "D3C5"), ("sft-teacher", "D5C5", "D3C5"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data, device = load_sample("train"), torch.device("cpu")
    steps = {}
    for kind, teacher, student in KINDS:
        label = f"{kind} {teacher}" if kind == "train" else f"{kind} {teacher}->{student}"
        for layout in ("channels-last", "NCHW"):
            timed = training_step(kind, teacher, student, data, None, device, 4, precision="fp32", channels_last=True)
            if layout == "NCHW":
                for module in timed.objective.modules().values():
                    module.to(memory_format=torch.contiguous_format)
                    use_depthwise_single_output(module, False)
            steps[(label, layout)] = timed.step
    seconds = interleaved_median_seconds(steps, device, args.rounds, warmup=2)
    for label in dict.fromkeys(label for label, _ in steps):
        last, plain = seconds[(label, "channels-last")], seconds[(label, "NCHW")]
        print(f"{label:28s} channels-last {last:.3f} s, NCHW {plain:.3f} s, ratio {last / plain:.2f}")


if __name__ == "__main__":
    main()
