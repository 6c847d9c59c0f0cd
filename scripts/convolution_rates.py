"""GFLOP/s of one 32→32 3×3 convolution (forward, 150×150) in each precision and layout, alternated.

    python scripts/convolution_rates.py --rounds 3

The networks' hot loop: what the CPU gives float32 and bf16, in NCHW and channels-last, at
batch 1, 4 and 16. Each round times every variant (3 warm-up calls, then the mean of 10), so a
drifting machine slows them alike. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import torch

VARIANTS = {"fp32 NCHW": ("fp32", False), "fp32 channels-last": ("fp32", True),
            "bf16 NCHW": ("bf16", False), "bf16 channels-last": ("bf16", True)}


def rate(convolution: torch.nn.Conv2d, precision: str, channels_last: bool, batch: int, calls: int = 10) -> float:
    """GFLOP/s of ``convolution`` on a (batch, 32, 150, 150) input."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    features = torch.randn(batch, 32, 150, 150).contiguous(memory_format=layout)
    convolution = convolution.to(memory_format=layout)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for _ in range(3):
            convolution(features)
        started = time.perf_counter()
        for _ in range(calls):
            convolution(features)
        seconds = (time.perf_counter() - started) / calls
    return 2 * 32 * 32 * 9 * 150 * 150 * batch / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    convolution = torch.nn.Conv2d(32, 32, 3, padding=1)
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, (precision, channels_last) in VARIANTS.items():
            for batch in (1, 4, 16):
                rates.setdefault((name, batch), []).append(rate(convolution, precision, channels_last, batch))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}")
    for (name, batch), values in rates.items():
        print(f"{name:20s} batch {batch:2d}: " + ", ".join(f"{v:.0f}" for v in values) + " GFLOP/s")


if __name__ == "__main__":
    main()
