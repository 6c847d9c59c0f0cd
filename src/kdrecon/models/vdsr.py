"""VDSR (Kim, Lee & Lee, CVPR 2016), the super-resolution network of both papers, in blocks.

``VDSRnBm`` means ``n`` 3×3 convolutions in all: ``1 → C``, ``(n − 2) × (C → C)``, ``C → 1``, a
ReLU after every one but the last, and a global residual from the (interpolated) low-resolution
input to the output:

.. math::

    \\hat x = x_{LR} + g_n(\\cdots g_1(x_{LR})).

The convolutions are grouped into ``m`` consecutive blocks of as equal a size as they allow (the
first ones take one more when ``m`` does not divide ``n``) so that a student-friendly teacher can
pair blocks one to one, as for the DC-CNN: SFT-KD-Recon's teacher of 12 layers and student of 4
are ``VDSR12B4`` (blocks of 3) and ``VDSR4B4`` (blocks of 1), so every SFT branch starts from the
teacher's features after 3, 6 or 9 layers and runs the student's remaining 3, 2 or 1 layers. The
blocks pass features (``state_kind = "features"``) and are plain chains, without the residual
units of the residual CNN. There is no data consistency: the task has no measured lines to keep.

Feature distillation compares the features at the block boundaries, which are exactly what an SFT
branch receives from the teacher: the output of every block but the last (whose output is the
image correction, trained by the reconstruction loss itself), so ``m − 1`` pairs.

Parameters at ``C`` channels: ``10C + (n − 2)(9C² + C) + 9C + 1``; at the papers' 64 channels
VDSR11 has 333,569 and VDSR7 185,857 (the KD-MRI code's pair), VDSR12 370,497 and VDSR4 75,073.

Example:
    >>> import torch
    >>> model = VDSR(layers=4, blocks=4, channels=8)
    >>> x, k, m = torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.complex64), torch.zeros(8, 8)
    >>> model(x, k, m).shape, model.feature_layers(0), model.feature_layers(3)
    (torch.Size([1, 1, 8, 8]), ['blocks.0.layers.0'], [])
    >>> [len(block.layers) for block in VDSR(layers=11, blocks=4, channels=8).blocks]
    [3, 3, 3, 2]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kdrecon.models.cascade import CascadeNetwork
from kdrecon.models.dccnn import Conv3x3, ConvReLU
from kdrecon.models.family import ModelFamily

#: The papers' width.
VDSR_CHANNELS = 64


class ConvolutionChain(nn.Module):
    """Consecutive convolutions ``layers.{j}`` between the given widths; no ReLU after a 1-channel output."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(
            Conv3x3(a, b) if b == 1 else ConvReLU(a, b) for a, b in zip(widths[:-1], widths[1:])
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def block_sizes(layers: int, blocks: int) -> list[int]:
    """``layers`` split into ``blocks`` consecutive groups, the first ones one larger when uneven."""
    if blocks < 1 or layers < max(blocks, 2):
        raise ValueError(f"VDSR needs at least 2 layers and one per block, got {layers} layers in {blocks} blocks")
    size, extra = divmod(layers, blocks)
    return [size + (index < extra) for index in range(blocks)]


class VDSR(CascadeNetwork):
    """``layers`` convolutions in ``blocks`` blocks, global residual from the input."""

    state_kind = "features"

    def __init__(self, layers: int = 12, blocks: int = 4, channels: int = VDSR_CHANNELS) -> None:
        super().__init__()
        widths = [1] + [channels] * (layers - 1) + [1]
        starts = [0]
        for size in block_sizes(layers, blocks):
            starts.append(starts[-1] + size)
        self.blocks = nn.ModuleList(ConvolutionChain(widths[a : b + 1]) for a, b in zip(starts[:-1], starts[1:]))

    def step(self, index: int, state: torch.Tensor, zero_filled: torch.Tensor,
             consistency: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Block ``index`` on the previous block's features; the last adds the input (global residual)."""
        out = self.blocks[index](state)
        return out + zero_filled if index == self.cascades - 1 else out

    def feature_layers(self, cascade: int, count: int = 1) -> list[str]:
        """The last ``count`` layers up to the end of block ``cascade`` (the features it passes on); none for the last."""
        if cascade == self.cascades - 1:
            return []
        paths = [f"blocks.{b}.layers.{j}" for b in range(cascade + 1) for j in range(len(self.blocks[b].layers))]
        if len(paths) < count:
            raise ValueError(f"block {cascade} ends layer {len(paths)} of the network; {count} layers up to it asked for")
        return paths[-count:]


FAMILY = ModelFamily(
    name="VDSR",
    pattern=r"VDSR(?P<layers>\d+)B(?P<blocks>\d+)",
    example="VDSR12B4",
    build=VDSR,
    options=("channels",),
    summary="VDSRnBm: super-resolution VDSR of n convolutions in m blocks, global residual, no data consistency",
    blocks_group="blocks",
)
