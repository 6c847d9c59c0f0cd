"""A 3×3 convolution followed by an in-place ReLU (the models' ``ConvReLU``) against oneDNN's fused
convolution + ReLU (``torch.ops.mkldnn._convolution_pointwise``, what inductor emits), forward only.

    python scripts/fused_conv_relu.py --rounds 9

bf16, channels-last, batch 4 of 150×150, the student's 1→32 and 32→32 layers; alternated, medians of
``--rounds`` rounds of 10 calls. The fused form saves the ReLU's separate pass over the output; it has
no autograd formula, so training would need its own backward (the ReLU mask and the convolution's
gradients), which is why it was measured before being written.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from kdrecon.training.timing import interleaved_median_seconds


def layer_calls(in_channels: int) -> dict[str, object]:
    torch.manual_seed(0)
    x = torch.randn(4, in_channels, 150, 150).bfloat16().contiguous(memory_format=torch.channels_last)
    weight = torch.randn(32, in_channels, 3, 3).bfloat16().contiguous(memory_format=torch.channels_last)
    bias = torch.randn(32).bfloat16()

    def separate():
        return F.conv2d(x, weight, bias, padding=1).relu_()

    def fused():
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [None], "")

    if not torch.equal(separate(), fused()):
        raise SystemExit(f"{in_channels}→32: the fused form differs")
    return {f"{in_channels}→32 conv, then ReLU": separate, f"{in_channels}→32 conv + ReLU fused": fused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    for in_channels in (32, 1):
        calls = layer_calls(in_channels)
        tens = {name: (lambda call=call: [call() for _ in range(10)]) for name, call in calls.items()}
        for name, seconds in interleaved_median_seconds(tens, torch.device("cpu"), args.rounds, warmup=1).items():
            print(f"{name:28s} {seconds / 10 * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
