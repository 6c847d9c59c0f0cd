"""DC-UNet: a cascade of small U-Nets, each followed by hard data consistency (SFT-KD-Recon Table 6).

``UlCm`` means ``m`` cascades, each a U-Net with ``l`` 2× down-samplings whose full-resolution
level is ``channels`` wide, doubling per level (``c, 2c, …, 2^l·c``). Each level of the encoder
is two 3×3 convolutions with ReLU, then 2×2 max pooling; the bottom level is two more; each
decoder level up-samples with a 2×2 transposed convolution (halving the width), concatenates
the encoder's output of that level and applies two 3×3 convolutions with ReLU; a 1×1
convolution returns the image. This is the U-Net of Ronneberger et al. as fastMRI's baseline
builds it, at a size near the DC-CNN teacher's. The input is zero-padded to a multiple of
``2^l`` and the output cropped back, so any image size works.

Parameters per block (``c`` = channels, ``w_k = 2^k·c``), counted with biases::

    encoder k:   (9·w_{k-1}·w_k + w_k) + (9·w_k² + w_k)        (w_{-1} = 1)
    bottom:      (9·w_{l-1}·w_l + w_l) + (9·w_l² + w_l)
    up k:        4·w_{k+1}·w_k + w_k
    decoder k:   (9·2w_k·w_k + w_k) + (9·w_k² + w_k)
    output:      c + 1

``U2C5`` with the default 32 channels: 465,953 per block, 2,329,765 in all; with 16 channels
(about the D5C5 teacher's convolution work per pixel): 116,753 per block, 583,765 in all.

Feature distillation taps the last full-resolution layer of each block (``blocks.{i}.features.1``:
decoder level 0's second layer, after its ReLU, cropped to the image): the D3C5 student's feature
maps are full-resolution and image-sized too, so spatial maps (AT, SP, CC) compare like with like,
and the zero padding never enters a loss; FSP takes both layers of that level (``features.0`` and
``features.1``, equal widths).

Example:
    >>> import torch
    >>> model = DCUNet(levels=1, cascades=2, channels=4)
    >>> x, k, m = torch.rand(1, 1, 9, 9), torch.zeros(1, 9, 9, dtype=torch.complex64), torch.zeros(9, 9)
    >>> model(x, k, m).shape
    torch.Size([1, 1, 9, 9])
    >>> model.feature_layers(1)
    ['blocks.1.features.1']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdrecon.models.cascade import CascadeNetwork
from kdrecon.models.dccnn import ConvReLU
from kdrecon.models.family import ModelFamily


#: The most down-samplings: eight halve a 256-pixel image to one pixel, and each level doubles
#: the width, so deeper U-Nets only add parameters.
MAX_LEVELS = 8


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(ConvReLU(in_channels, out_channels), ConvReLU(out_channels, out_channels))


class CropToImage(nn.Module):
    """``(B,C,H',W') → (B,C,H,W)``: drops the rows and columns the U-Net padded on (a view, no copy).

    Args:
        out_channels: ``C``, declared so that a feature loss can be built for this tap point.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, features: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return features[..., :height, :width]


class UNetBlock(nn.Module):
    """A U-Net, image in and image out: ``(B,C,H,W) → (B,C,H,W)``, ``C`` image channels (1 or 2).

    Args:
        levels: number of 2× down-samplings (≥ 1).
        channels: width of the full-resolution level; level ``k`` is ``2^k·channels`` wide.
        residual: add the block input to its output (off, as in the DC-CNN).
    """

    def __init__(self, levels: int = 2, channels: int = 32, residual: bool = False, image_channels: int = 1) -> None:
        super().__init__()
        if not 1 <= levels <= MAX_LEVELS:
            raise ValueError(f"a U-Net block has 1 to {MAX_LEVELS} levels of down-sampling, got {levels}")
        widths = [channels * 2**level for level in range(levels + 1)]
        self.encoder = nn.ModuleList(_double_conv(([image_channels] + widths)[k], widths[k]) for k in range(levels))
        self.bottom = _double_conv(widths[levels - 1], widths[levels])
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in range(levels))
        self.decoder = nn.ModuleList(_double_conv(2 * widths[k], widths[k]) for k in range(levels))
        self.output = nn.Conv2d(channels, image_channels, 1)
        # Parameter-free tap points: the two full-resolution decoder layers, cropped to the image.
        self.features = nn.ModuleList(CropToImage(channels) for _ in range(2))
        self.residual = residual

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        multiple = 2 ** len(self.encoder)
        x = F.pad(image, [0, -width % multiple, 0, -height % multiple])
        skips = []
        for encoder in self.encoder:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for level in reversed(range(1, len(self.decoder))):
            x = self.decoder[level](torch.cat([self.upsample[level](x), skips[level]], dim=1))
        full_resolution = self.decoder[0]
        x = full_resolution[0](torch.cat([self.upsample[0](x), skips[0]], dim=1))
        self.features[0](x, height, width)  # read only by forward hooks (FSP's first layer)
        x = self.features[1](full_resolution[1](x), height, width)
        # The 1×1 output convolution commutes with the crop: the same image as cropping after it.
        out = self.output(x)
        return out + image if self.residual else out


class DCUNet(CascadeNetwork):
    """Cascade of :class:`UNetBlock`, each followed by hard data consistency."""

    def __init__(self, levels: int = 2, cascades: int = 5, channels: int = 32, residual: bool = False,
                 image_channels: int = 1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(UNetBlock(levels, channels, residual, image_channels) for _ in range(cascades))

    def feature_layers(self, cascade: int, count: int = 1) -> list[str]:
        """The last ``count`` layers of the full-resolution decoder level (at most 2)."""
        if count > 2:
            raise ValueError(f"a U-Net decoder level has 2 layers; {count} asked for")
        return [f"blocks.{cascade}.features.{index}" for index in range(2 - count, 2)]


FAMILY = ModelFamily(
    name="DC-UNet",
    pattern=r"U(?P<levels>\d+)C(?P<cascades>\d+)",
    example="U2C5",
    build=DCUNet,
    options=("channels", "residual", "image_channels"),
    summary="UlCm: m cascades of a U-Net with l down-samplings (SFT-KD-Recon Table 6)",
)
