"""DC-CNN (Schlemper et al. 2017) as the papers configure it: DnCm cascades with hard DC.

``DnCm`` means ``m`` cascades, each a CNN block of ``n`` 3×3 convolutions (1→32, (n−2)×32→32,
32→1, bias, ReLU between layers and none after the last) followed by a data-consistency layer
(:func:`kdrecon.mri.undersample.data_consistency`). Per block that is
``320 + (n−2)·9,248 + 289`` parameters: D5C5 141,765, D4C5 95,525, D3C5 49,285, D2C5 3,045.

Module paths are stable so features can be tapped by forward hooks: the output of the j-th
convolution (after its ReLU) of cascade i is ``blocks.{i}.layers.{j}``.

Example:
    >>> import torch
    >>> model = DCCNN(convs_per_block=3, cascades=5)
    >>> sum(p.numel() for p in model.parameters())
    49285
    >>> x, k, m = torch.rand(2, 1, 8, 8), torch.zeros(2, 8, 8, dtype=torch.complex64), torch.zeros(8, 8)
    >>> model(x, k, m).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdrecon.models import thin_kernels
from kdrecon.models.cascade import CascadeNetwork, middle_layer_paths
from kdrecon.models.family import ModelFamily


class Conv3x3(nn.Conv2d):
    """3×3 zero-padded convolution; its thin forms (one input or one output channel) can run depthwise.

    A convolution with one output channel, ``y = Σ_c w_c ⋆ x_c + b``, equals a depthwise
    (``groups = C``) convolution followed by a sum over channels. With :attr:`depthwise_forms` on,
    the C→1 convolution that ends each block runs in that form, which oneDNN runs faster on CPU
    than its kernel for a single output channel, in inference and training, bf16 and float32
    (``docs/benchmarks.md``). The 1→C convolution that starts each block keeps oneDNN's forward
    kernel (its depthwise form, the image repeated C times, was slightly slower), but where
    gradients are recorded (training) its input gradient, ``∂L/∂x = Σ_c flip(w_c) ⋆ ∂L/∂y_c``, is itself a convolution with one
    output channel and runs in the depthwise form too (:class:`_ImageInputConvolution`; oneDNN's
    backward-data kernel for one input channel was about three times slower). In bf16 each
    channel's result is rounded before the sum, so these carry somewhat more rounding error than
    the plain kernels. With :attr:`thin_kernels` on, a 1→32 or 32→1 convolution in bf16 on a CPU
    that runs kdrecon's own kernels uses them instead, forward and backward
    (:func:`kdrecon.models.thin_kernels.thin_convolution`; weight gradients accumulated in float32).
    The parameters and the state dict are the same either way.

    Example:
        >>> import torch
        >>> conv = Conv3x3(32, 1)
        >>> x = torch.rand(2, 32, 8, 8)
        >>> plain = conv(x)
        >>> conv.depthwise_forms = True
        >>> torch.allclose(conv(x), plain, atol=1e-5)
        True
    """

    depthwise_forms: bool = False
    thin_kernels: bool = False

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.thin_kernels and thin_kernels.runs_in_kernels(self, x):
            return thin_kernels.thin_convolution(self, x)
        if not self.depthwise_forms:
            return super().forward(x)
        if self.out_channels == 1:
            per_channel = F.conv2d(x, self.weight.transpose(0, 1), None, padding=1, groups=self.in_channels)
            summed = per_channel.sum(1, keepdim=True)
            return summed + self.bias.to(summed.dtype).view(1, 1, 1, 1)
        if self.in_channels == 1 and torch.is_grad_enabled():
            image, weight, bias = (_as_autocast_hands_it(t) for t in (x, self.weight, self.bias))
            return _ImageInputConvolution.apply(image, weight, bias)
        return super().forward(x)


def _as_autocast_hands_it(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as autocast passes it to a convolution: float32 cast to the autocast dtype where autocast
    is on, anything else unchanged (so mismatched dtypes fail as they would in the plain kernel); the
    autograd function's backward then sees its inputs in the dtypes the forward ran in."""
    device = tensor.device.type
    if tensor.dtype == torch.float32 and torch.is_autocast_enabled(device):
        return tensor.to(torch.get_autocast_dtype(device))
    return tensor


class _ImageInputConvolution(torch.autograd.Function):
    """A zero-padded 1→C 3×3 convolution whose input gradient runs as a depthwise convolution of the
    output gradient with the flipped kernels and a sum over its C channels; the weight and bias
    gradients are oneDNN's (through ``aten.convolution_backward``)."""

    @staticmethod
    def forward(ctx, image: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(image, weight)
        return F.conv2d(image, weight, bias, padding=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        image, weight = ctx.saved_tensors
        grad_image = None
        if ctx.needs_input_grad[0]:
            per_channel = F.conv2d(grad, weight.flip(2, 3), None, padding=1, groups=weight.shape[0])
            grad_image = per_channel.sum(1, keepdim=True)
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, image, weight, [weight.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
            [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grad_image, grad_weight, grad_bias


def use_depthwise_forms(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every :class:`Conv3x3` of ``model`` to (or back from) its thin convolutions' depthwise forms."""
    for module in model.modules():
        if isinstance(module, Conv3x3):
            module.depthwise_forms = enabled
    return model


def use_thin_kernels(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Let every :class:`Conv3x3` of ``model`` run its thin convolution in kdrecon's kernels where it can
    (``enabled`` and this CPU runs them: :func:`kdrecon.models.thin_kernels.fast_kernels_available`), or not."""
    enabled = enabled and thin_kernels.fast_kernels_available()
    for module in model.modules():
        if isinstance(module, Conv3x3):
            module.thin_kernels = enabled
    return model


class ConvReLU(nn.Sequential):
    """A 3×3 convolution followed by ReLU (a hidden layer of a CNN block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        # In place: faster training on CPU (one tensor less per layer; docs/benchmarks.md). A forward hook on this
        # layer sees the activated output; one on ``.conv`` alone would see it overwritten.
        self.relu = nn.ReLU(inplace=True)


class CNNBlock(nn.Module):
    """``n`` 3×3 convolutions, image in and image out: ``(B,C,H,W) → (B,C,H,W)``, ``C`` image channels.

    Args:
        convs: number of convolutions ``n ≥ 2``.
        channels: width of the hidden layers (32 in the papers).
        residual: add the block input to its output (drawn in the papers' figure, absent in
            their code; off by default).
        padding: zero-pad the input by this many pixels and crop the output back (the
            SFT-KD-Recon code used 5).
        image_channels: 1 for a magnitude image, 2 for a complex one (:mod:`kdrecon.mri.channels`).
    """

    def __init__(self, convs: int, channels: int = 32, residual: bool = False, padding: int = 0,
                 image_channels: int = 1) -> None:
        super().__init__()
        if convs < 2:
            raise ValueError(f"a CNN block needs at least 2 convolutions, got {convs}")
        widths = [image_channels] + [channels] * (convs - 1)
        hidden = [ConvReLU(a, b) for a, b in zip(widths[:-1], widths[1:])]
        self.layers = nn.Sequential(*hidden, Conv3x3(channels, image_channels))
        self.residual = residual
        self.padding = padding

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.pad(image, [self.padding] * 4) if self.padding else image
        out = self.layers(x)
        if self.padding:
            out = out[..., self.padding : -self.padding, self.padding : -self.padding]
        return out + image if self.residual else out


class DCCNN(CascadeNetwork):
    """Cascade of CNN blocks, each followed by hard data consistency.

    ``forward(zero_filled (B,C,H,W), kspace (B,H,W) complex, mask (H,W)) → (B,C,H,W)``, with ``C`` =
    ``image_channels``: 1 for the papers' magnitude images, 2 for complex ones (real, imaginary),
    whose data consistency keeps the phase (:func:`kdrecon.mri.undersample.data_consistency`).
    """

    def __init__(
        self,
        convs_per_block: int = 5,
        cascades: int = 5,
        channels: int = 32,
        residual: bool = False,
        padding: int = 0,
        image_channels: int = 1,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            CNNBlock(convs_per_block, channels, residual, padding, image_channels) for _ in range(cascades)
        )

    def feature_layers(self, cascade: int, count: int = 1) -> list[str]:
        """The middle hidden layer ``(n − 1) // 2`` of a block of ``n`` convolutions, and the ones before it.

        D5C5 → ``blocks.{i}.layers.2``, D3C5 → ``blocks.{i}.layers.1``: the papers' pairs (spec §4).
        """
        return middle_layer_paths(self, cascade, count)


FAMILY = ModelFamily(
    name="DC-CNN",
    pattern=r"D(?P<convs_per_block>\d+)C(?P<cascades>\d+)",
    example="D5C5",
    build=DCCNN,
    options=("channels", "residual", "padding", "image_channels"),
    summary="DnCm: m cascades of n 3×3 convolutions (Schlemper et al. 2017)",
)
