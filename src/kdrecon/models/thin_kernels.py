"""CPU kernels for the two thin convolutions of a DC-CNN block in bf16: inference and training.

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
output channels-last; ``image_convolution`` without the ReLU) and
``torch.ops.kdrecon.feature_to_image_convolution(features, weight, bias)``, so an AOTInductor package
calls them like any other operator; :func:`substitute_thin_kernels` puts them into a network for
export. Training needs a third, ``tap_channel_sums(features, image)``: ``Σ_p f_c(p) x(p + t)`` and
``Σ_p f_c(p)`` in float32, both convolutions' weight and bias gradients; their input gradients are
each other's kernel with the taps flipped (:class:`ImageConvolution`, :class:`FeatureConvolution`,
which :class:`kdrecon.models.dccnn.Conv3x3` runs where :func:`runs_in_kernels`). On a CPU without
AVX-512 BF16, and for dtypes or widths other than bf16 and 32, each operator is the same computation
through ATen. The library also holds ``channel_energy(features)``, ``Σ_c F_c²`` of a bf16 32-channel
feature in float32 (attention transfer's map, :class:`kdrecon.distillation.losses.attention_transfer.ChannelEnergy`),
read once where ATen's float32 reduction first copied the feature to float32.

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
import time
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

#: Hidden width the kernels handle (the papers' DC-CNN blocks); other widths keep oneDNN's convolutions.
CHANNELS = 32
SOURCE = Path(__file__).with_suffix(".cpp")
LIBRARY = "kdrecon_thin_kernels"


#: A build lock older than this was left by a build that was killed; cpp_extension would wait on it for ever.
STALE_LOCK_SECONDS = 600


@functools.cache
def load() -> bool:
    """Build (once per source version, then from the cache) and load the kernels' library; ``False``,
    with a warning, where it cannot be built (no C++ compiler, no ninja, a build lock left by a killed build)."""
    from torch.utils import cpp_extension

    lock = Path(cpp_extension._get_build_directory(LIBRARY, verbose=False)) / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
        warnings.warn(f"kdrecon's thin-convolution kernels not loaded: {lock} was left by a build that did not "
                      "finish; remove it to build them again", stacklevel=2)
        return False
    built = _build(cpp_extension, openmp=True)
    if built is not True:
        built = _build(cpp_extension, openmp=False)
    if built is not True:
        warnings.warn(f"kdrecon's thin-convolution kernels could not be built ({built}); oneDNN's convolutions "
                      "run instead", stacklevel=2)
        return False
    _register_shapes()
    return True


def _openmp_link_flags() -> list[str]:
    """Link to the OpenMP runtime torch ships in its ``lib`` folder (whatever its file is named), so the
    process runs one runtime; plain ``-fopenmp`` where torch ships none."""
    bundled = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    return [str(bundled[0]), f"-Wl,-rpath,{bundled[0].parent}"] if bundled else ["-fopenmp"]


def _build(cpp_extension, openmp: bool) -> bool | str:
    """Build and load the library: ``True``, or why not. With ``openmp``, ATen's ``parallel_for``
    (OpenMP inlined from its header, serial when compiled without it) runs on every thread; without,
    where the compiler has no OpenMP, on one, with a warning."""
    flags = ["-O3", "-fopenmp"] if openmp else ["-O3"]
    try:
        cpp_extension.load(name=LIBRARY, sources=[str(SOURCE)], extra_cflags=flags,
                           extra_ldflags=_openmp_link_flags() if openmp else [], is_python_module=False)
    except (RuntimeError, OSError, ImportError) as error:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        return next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else
                    type(error).__name__)
    if not openmp:
        warnings.warn("kdrecon's thin-convolution kernels were built without OpenMP (the compiler has none): "
                      "their loops run on one thread", stacklevel=3)
    return True


def _register_shapes() -> None:
    """What ``torch.export`` needs to trace the operators: their outputs' shapes, dtypes and layouts."""

    # The operators' outputs have exactly these strides (thin_kernels.cpp), size-1 dimensions included.
    def image_features(image, weight, bias):
        shape = (image.shape[0], weight.shape[0], *image.shape[2:])
        return torch.empty(shape, dtype=image.dtype, device=image.device, memory_format=torch.channels_last)

    torch.library.register_fake("kdrecon::image_convolution_relu", image_features)
    torch.library.register_fake("kdrecon::image_convolution", image_features)

    @torch.library.register_fake("kdrecon::feature_to_image_convolution")
    def _(features, weight, bias):
        shape = (features.shape[0], weight.shape[0], *features.shape[2:])
        return torch.empty(shape, dtype=features.dtype, device=features.device)

    @torch.library.register_fake("kdrecon::channel_energy")
    def _(features):
        return features.new_empty((features.shape[0], *features.shape[2:]), dtype=torch.float32)

    @torch.library.register_fake("kdrecon::tap_channel_sums")
    def _(features, image):
        sums = features.new_empty((features.shape[1], 3, 3), dtype=torch.float32)
        return sums, features.new_empty((features.shape[1],), dtype=torch.float32)


#: How an AOTInductor package's graph names the operators it calls from this library.
OPERATOR_PREFIX = b"kdrecon::"


def package_calls_kernels(package: Path) -> bool:
    """Whether the AOTInductor package at ``package`` calls these kernels (its graphs' descriptions name them)."""
    with zipfile.ZipFile(package) as archive:
        return any(OPERATOR_PREFIX in archive.read(name) for name in archive.namelist() if name.endswith(".json"))


@functools.cache
def fast_kernels_available() -> bool:
    """Whether the library loads and this CPU runs its AVX-512 BF16 kernels; on a CPU PyTorch already knows
    to lack AVX-512 BF16 the library is not built at all."""
    cpu_has_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    return cpu_has_bf16() and load() and torch.ops.kdrecon.fast_thin_kernels()


def _flipped(weight: torch.Tensor) -> torch.Tensor:
    """The kernels of the convolution that gives a 3×3 convolution's input gradient: taps flipped, in and out swapped."""
    return weight.flip(2, 3).transpose(0, 1)


class ImageConvolution(torch.autograd.Function):
    """The 1→32 convolution (no ReLU) for training, all of it in the kernels: the input gradient
    ``∂L/∂x = Σ_c flip(w_c) ⋆ ∂L/∂y_c`` is a 32→1 convolution of the output gradient
    (``feature_to_image_convolution``); the weight and bias gradients ``Σ_p ∂L/∂y_c(p) x(p + t)`` and
    ``Σ_p ∂L/∂y_c(p)`` are ``tap_channel_sums``, accumulated in float32. ``image`` bf16, ``weight`` and
    ``bias`` in any float dtype (cast to bf16 in the kernel; gradients in theirs)."""

    @staticmethod
    def forward(ctx, image: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(image, weight)
        return torch.ops.kdrecon.image_convolution(image, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        image, weight = ctx.saved_tensors
        grad_image = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_image = torch.ops.kdrecon.feature_to_image_convolution(grad, _flipped(weight), grad.new_zeros(1))
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            sums, totals = torch.ops.kdrecon.tap_channel_sums(grad, image)
            grad_weight, grad_bias = sums.view_as(weight).to(weight.dtype), totals.to(weight.dtype)
        return grad_image, grad_weight, grad_bias


class FeatureConvolution(torch.autograd.Function):
    """The 32→1 convolution for training, all of it in the kernels: the input gradient
    ``∂L/∂h_c = flip(w_c) ⋆ ∂L/∂y`` is a 1→32 convolution of the output gradient (``image_convolution``);
    the weight gradient ``Σ_p ∂L/∂y(p) h_c(p + t)`` is ``tap_channel_sums`` of the features against the
    output gradient with the taps flipped. ``features`` bf16; ``weight``, ``bias`` as :class:`ImageConvolution`."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        return torch.ops.kdrecon.feature_to_image_convolution(features, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        features, weight = ctx.saved_tensors
        grad_features = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_features = torch.ops.kdrecon.image_convolution(grad, _flipped(weight), grad.new_zeros(weight.shape[1]))
        if ctx.needs_input_grad[1]:
            sums, _ = torch.ops.kdrecon.tap_channel_sums(features, grad)
            grad_weight = sums.flip(1, 2).unsqueeze(0).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.float().sum().view(1).to(weight.dtype)
        return grad_features, grad_weight, grad_bias


def channel_energy_in_kernel(feature: torch.Tensor) -> bool:
    """Whether ``kdrecon::channel_energy`` reads ``feature`` in place on its fast path: bf16, 32 channels,
    channels-last, on a CPU that runs the kernels."""
    return (feature.dtype == torch.bfloat16 and feature.device.type == "cpu" and feature.dim() == 4
            and feature.shape[1] == CHANNELS and feature.is_contiguous(memory_format=torch.channels_last)
            and fast_kernels_available())


def runs_in_kernels(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv`` (3×3, zero padding 1) on ``x`` is one of the kernels' thin convolutions, on the CPU
    in bf16 (``x`` bf16, or float32 under bf16 autocast); whether this CPU runs the kernels is
    :func:`fast_kernels_available`, asked once by whoever enables them."""
    if (conv.in_channels, conv.out_channels) not in ((1, CHANNELS), (CHANNELS, 1)) or x.device.type != "cpu":
        return False
    if x.dtype == torch.bfloat16:
        return True
    return x.dtype == torch.float32 and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def thin_convolution(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` through the kernels, differentiable; ``x`` is cast to bf16 as autocast would
    (:func:`runs_in_kernels` must hold)."""
    function = ImageConvolution if conv.in_channels == 1 else FeatureConvolution
    return function.apply(x.to(torch.bfloat16), conv.weight, conv.bias)


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
