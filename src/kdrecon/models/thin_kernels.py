"""CPU kernels for the two thin convolutions of a DC-CNN block, for bf16 inference.

Every DC-CNN block starts with a 1→32 convolution and its ReLU and ends with a 32→1 convolution
(3×3, zero padding 1):

.. math::

    h_c(p) = \\max\\Big(0,\\ b_c + \\sum_{t} w_{c,t}\\, x(p + t)\\Big), \\qquad
    y(p) = b' + \\sum_{t} \\sum_{c=1}^{32} w'_{c,t}\\, h_c(p + t),

``t`` over the nine offsets of the 3×3 kernel. They cost a tenth of the 32→32 convolution's
multiply-adds, yet at batch 1 oneDNN spent about as long on the pair as on a 32→32 convolution
(docs/benchmarks.md): fixed work that does not shrink with a block's depth and so held the student's
deployed speed-up over its teacher below its FLOP ratio. The kernels in ``thin_kernels.cpp`` compute
them with AVX-512 BF16's dot products (``vdpbf16ps``: products of bf16 pairs, added in float32, as
oneDNN's bf16 kernels accumulate), reading the image once and the 32-channel features in place, in
the channels-last layout the 32→32 convolutions use.

They are PyTorch operators, ``torch.ops.kdrecon.image_convolution_relu(image, weight, bias)`` (its
output channels-last) and ``torch.ops.kdrecon.feature_to_image_convolution(features, weight, bias)``,
so an AOTInductor package calls them like any other operator; :func:`substitute_thin_kernels` puts
them into a network. On a CPU without AVX-512 BF16, and for dtypes or widths other than bf16 and 32,
each is the same computation through ATen's convolution.

The library is compiled from its source on first use with the C++ compiler AOTInductor needs
anyway (:mod:`torch.utils.cpp_extension`, cached in ``TORCH_EXTENSIONS_DIR``); a process that loads
a package using them must :func:`load` it first (``kdrecon.models.export.load_ahead_of_time``
does).

Example:
    >>> import torch
    >>> if load():
    ...     image, weight, bias = torch.rand(1, 1, 8, 8), torch.randn(32, 1, 3, 3), torch.randn(32)
    ...     expected = torch.nn.functional.conv2d(image, weight, bias, padding=1).relu()
    ...     print(torch.allclose(torch.ops.kdrecon.image_convolution_relu(image, weight, bias), expected, atol=1e-5))
    ... else:
    ...     print(True)
    True
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch import nn

#: Hidden width the kernels handle (the papers' DC-CNN blocks); other widths keep oneDNN's convolutions.
CHANNELS = 32
SOURCE = Path(__file__).with_suffix(".cpp")
LIBRARY = "kdrecon_thin_kernels"


@functools.cache
def load() -> bool:
    """Build (once per source version, then from the cache) and load the kernels' library; ``False``,
    with a warning, where it cannot be built (no C++ compiler, no PyTorch headers)."""
    from torch.utils import cpp_extension

    try:
        cpp_extension.load(name=LIBRARY, sources=[str(SOURCE)], extra_cflags=["-O3"], is_python_module=False)
    except (RuntimeError, OSError, ImportError) as error:
        warnings.warn(f"kdrecon's thin-convolution kernels could not be built ({str(error).splitlines()[0]}); "
                      "exported packages keep oneDNN's convolutions", stacklevel=2)
        return False
    _register_shapes()
    return True


def _register_shapes() -> None:
    """What ``torch.export`` needs to trace the operators: their outputs' shapes, dtypes and layouts."""

    @torch.library.register_fake("kdrecon::image_convolution_relu")
    def _(image, weight, bias):
        shape = (image.shape[0], weight.shape[0], *image.shape[2:])
        return image.new_empty(shape).contiguous(memory_format=torch.channels_last)

    @torch.library.register_fake("kdrecon::feature_to_image_convolution")
    def _(features, weight, bias):
        return features.new_empty((features.shape[0], weight.shape[0], *features.shape[2:]))


def fast_kernels_available() -> bool:
    """Whether the library loads and this CPU runs its AVX-512 BF16 kernels."""
    return load() and torch.ops.kdrecon.fast_thin_kernels()


class _FrozenConvolution(nn.Module):
    """A trained convolution's weight and bias as buffers, for inference."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().clone())
        self.register_buffer("bias", conv.bias.detach().clone())


class ImageConvolutionReLU(_FrozenConvolution):
    """A 1→32 3×3 convolution and its ReLU through ``kdrecon::image_convolution_relu``."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.ops.kdrecon.image_convolution_relu(image, self.weight, self.bias)


class FeatureToImageConvolution(_FrozenConvolution):
    """A 32→1 3×3 convolution through ``kdrecon::feature_to_image_convolution``."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.ops.kdrecon.feature_to_image_convolution(features, self.weight, self.bias)


def _is_3x3(module: nn.Module, in_channels: int, out_channels: int) -> bool:
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3) and module.padding == (1, 1)
            and module.stride == (1, 1) and module.dilation == (1, 1) and module.groups == 1
            and module.bias is not None and (module.in_channels, module.out_channels) == (in_channels, out_channels))


def _is_image_convolution_relu(module: nn.Module) -> bool:
    """A convolution 1→32 and a ReLU, as the first layer of a DC-CNN block (``ConvReLU``)."""
    children = list(module.children())
    return (isinstance(module, nn.Sequential) and len(children) == 2 and _is_3x3(children[0], 1, CHANNELS)
            and isinstance(children[1], nn.ReLU))


def substitute_thin_kernels(network: nn.Module) -> int:
    """Replace, in place, every 1→32 convolution-and-ReLU and every 32→1 3×3 convolution of ``network``
    by the kernels' modules; returns how many were replaced. The library must be :func:`load`-ed."""
    replaced = 0
    for parent in list(network.modules()):
        for name, child in parent.named_children():
            if _is_image_convolution_relu(child):
                setattr(parent, name, ImageConvolutionReLU(child[0]))
            elif _is_3x3(child, CHANNELS, 1):
                setattr(parent, name, FeatureToImageConvolution(child))
            else:
                continue
            replaced += 1
    return replaced
