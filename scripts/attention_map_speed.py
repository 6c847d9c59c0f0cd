"""The AT attention map through ChannelEnergy against the squared copy it replaced, in alternation.

    python scripts/attention_map_speed.py --rounds 5

Times (1) the AT loss alone, forward and backward, on five channels-last (4, 32, 150, 150)
student features against cached teacher maps, and (2) whole AT distillation steps of the bench
(D5C5 → D3C5, batch 4, embedded sample, the fast path), each with the map computed either way:
``ChannelEnergy(F)/C`` (kdrecon's: the squared channel norm, gradient ``2F·g`` in one pass) or
``mean_c F²`` (before). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F

from kdrecon.data.dataset import load_sample
from kdrecon.distillation.losses import attention_transfer
from kdrecon.evaluation.benchmark import training_step
from kdrecon.training.timing import interleaved_median_seconds

NORM_MAP = attention_transfer.attention_map


def squared_copy_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """The map as computed before: the mean over channels of a squared copy of the feature."""
    return F.normalize(feature.square().mean(dim=1).flatten(1), dim=1)


@contextlib.contextmanager
def using(map_function):
    attention_transfer.attention_map = map_function
    try:
        yield
    finally:
        attention_transfer.attention_map = NORM_MAP


def timed_with(map_function, call):
    def run() -> None:
        with using(map_function):
            call()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(4, 32, 150, 150, generator=generator).relu().contiguous(memory_format=torch.channels_last)
                .requires_grad_() for _ in range(5)]
    teacher_maps = [F.normalize(torch.rand(4, 150 * 150, generator=generator), dim=1) for _ in range(5)]
    loss = attention_transfer.AttentionTransfer([32] * 5, [32] * 5)

    def loss_alone() -> None:
        loss(features, teacher_maps, summarised=True).backward()
        for feature in features:
            feature.grad = None

    data, device = load_sample("train"), torch.device("cpu")
    steps = {"distillation step": (training_step("distill", "D5C5", "D3C5", data, None, device, 4).step,
                                   training_step("distill", "D5C5", "D3C5", data, None, device, 4).step),
             "AT loss of 5 layers": (loss_alone, loss_alone)}
    calls = {}
    for name, (norm_call, copy_call) in steps.items():
        calls[(name, "energy")] = timed_with(NORM_MAP, norm_call)
        calls[(name, "squared copy")] = timed_with(squared_copy_map, copy_call)
    seconds = interleaved_median_seconds(calls, device, args.rounds, warmup=2)
    for name in steps:
        energy, copy = seconds[(name, "energy")], seconds[(name, "squared copy")]
        print(f"{name:22s} channel energy {energy * 1e3:7.1f} ms, squared copy {copy * 1e3:7.1f} ms, "
              f"ratio {copy / energy:.2f}")


if __name__ == "__main__":
    main()
