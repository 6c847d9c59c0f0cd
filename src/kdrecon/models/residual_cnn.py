"""The residual CNN of conventional SFT (SFT-KD-Recon Table 4): blocks that pass features.

``RnBm`` means ``n`` 3×3 convolutions in all, grouped into ``m`` blocks of ``n / m``. The first
convolution maps the image to ``channels`` features and the last maps them back to the image's
channels (one, or two for a complex image);
every other one is ``channels → channels``; ReLU follows every convolution but the last. A block
whose input and output are both features adds its input to its output (a residual unit in the
feature domain, as the ResNet stages Park et al.'s SFT groups into blocks), and the network adds
the zero-filled input to its output (global residual):

.. math::

    h_0 = x_{ZF}, \\qquad h_i = g_i(h_{i-1}) \\;(+\\, h_{i-1} \\text{ when both are features}),
    \\qquad \\hat x = x_{ZF} + h_N.

There are no intermediate images: a student-friendly teacher of this family branches into the
student with the teacher's *features*, which is what SFT-KD-Recon calls conventional SFT; the
paper's R25B5 teacher and R15B5 student have as many convolutions as D5C5 and D3C5. The paper
says "only residual layers", so there is no data consistency by default; ``data_consistency``
adds one hard DC layer at the end.

Parameters: ``320 + (n − 2)·9,248 + 289`` at 32 channels (R25B5: 213,313; R15B5: 120,833).

Example:
    >>> import torch
    >>> model = ResidualCNN(convolutions=6, blocks=3, channels=4)
    >>> x, k, m = torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.complex64), torch.zeros(8, 8)
    >>> model(x, k, m).shape, model.feature_layers(1)
    (torch.Size([1, 1, 8, 8]), ['blocks.1.layers.0'])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kdrecon.models.cascade import CascadeNetwork, middle_layer_paths
from kdrecon.models.dccnn import Conv3x3, ConvReLU
from kdrecon.models.family import ModelFamily


class FeatureBlock(nn.Module):
    """Consecutive convolutions ``layers.{j}``; a residual unit when input and output widths match.

    The block that ``outputs_image`` ends in a plain convolution (no ReLU) to the image channels.
    """

    def __init__(self, widths: list[int], outputs_image: bool = False) -> None:
        super().__init__()
        last = len(widths) - 2
        self.layers = nn.Sequential(*(
            Conv3x3(a, b) if index == last and outputs_image else ConvReLU(a, b)
            for index, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
        ))
        self.residual = widths[0] == widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out + x if self.residual else out


class ResidualCNN(CascadeNetwork):
    """``blocks`` feature blocks of ``convolutions / blocks`` convolutions, global residual, optional final DC."""

    state_kind = "features"

    def __init__(self, convolutions: int = 25, blocks: int = 5, channels: int = 32, data_consistency: bool = False,
                 image_channels: int = 1) -> None:
        super().__init__()
        if blocks < 1 or convolutions % blocks or convolutions < 2 * blocks:
            raise ValueError(f"{convolutions} convolutions do not split into {blocks} blocks of at least 2")
        widths = [image_channels] + [channels] * (convolutions - 1) + [image_channels]
        per_block = convolutions // blocks
        self.blocks = nn.ModuleList(FeatureBlock(widths[i * per_block : (i + 1) * per_block + 1], outputs_image=i == blocks - 1)
                                    for i in range(blocks))
        self.data_consistency = data_consistency

    def step(self, index: int, state: torch.Tensor, zero_filled: torch.Tensor,
             consistency: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Block ``index`` on the previous block's features; the last returns the image."""
        out = self.blocks[index](state)
        if index < self.cascades - 1:
            return out
        image = zero_filled + out
        return consistency(image) if self.data_consistency else image

    def feature_layers(self, cascade: int, count: int = 1) -> list[str]:
        """The middle layer of each block and the ones before it, as for the DC-CNN."""
        return middle_layer_paths(self, cascade, count)


FAMILY = ModelFamily(
    name="residual CNN",
    pattern=r"R(?P<convolutions>\d+)B(?P<blocks>\d+)",
    example="R25B5",
    build=ResidualCNN,
    options=("channels", "data_consistency", "image_channels"),
    summary="RnBm: n convolutions in m feature-domain residual blocks, no intermediate images (conventional SFT, Table 4)",
    blocks_group="blocks",
)
