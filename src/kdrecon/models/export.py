"""A cascade network with its data-consistency layer as a graph for other runtimes (ONNX,
``torch.export``, and AOTInductor: the ``torch.export`` program compiled ahead of time for this CPU).

Complex tensors cannot cross an ONNX graph's boundary and the FFT has no portable ONNX form
(opset 17's ``DFT`` is slow at sizes such as 150 in ONNX Runtime), so the exported graph computes
the orthonormal DFT exactly in real arithmetic, as products with precomputed matrices of the
image size: ``W_N = C_N − i S_N`` with ``C_N[k, n] = cos(2πkn/N)/√N`` and ``S_N[k, n] = sin(2πkn/N)/√N``
(both symmetric), ``F x = W_H x W_W`` and ``F⁻¹ K = W̄_H K W̄_W``.

Hard data consistency, ``F⁻¹(M ⊙ k₀ + (1 − M) ⊙ F x)`` as :func:`kdrecon.mri.undersample.data_consistency`
computes it with the FFT, is rewritten as a projection. A Cartesian mask is an outer product of
sampled rows ``R`` and columns ``Q`` (all columns for a line mask), so removing the sampled part
of ``F x`` and putting the measurements there is

.. math::

    x_{DC} = x − A_H\\, x\\, A_W + F⁻¹ k₀, \\qquad
    A_H = W̄_H[:, R]\\, W_H[R, :], \\quad A_W = W_W[:, Q]\\, W̄_W[Q, :],

of which a real image keeps the real part. ``A_H`` and ``A_W`` are constant and ``F⁻¹ k₀`` is the
same in every cascade, so it is computed once per call; for a line mask ``A_W = I`` and each
cascade's data consistency is a single product with the fixed matrix ``I − Re A_H`` (its
``2H × 2H`` real form for a complex image, two channels) and an addition.

The other changes are kernel substitutions: a 3×3 convolution to one or two channels (the last
of every DC-CNN block) runs as a 1×1 convolution to its nine taps and a sum of the nine shifted
tap images (:class:`TapSumConvolution`), which ONNX Runtime runs several times faster than its
kernel for so few output channels (docs/benchmarks.md); in a bf16 AOTInductor package on a CPU with
AVX-512 BF16, a block's 1→32 convolution and ReLU and its 32→1 convolution run as kdrecon's own
kernels instead (:mod:`kdrecon.models.thin_kernels`). All are exact up to float32 rounding (in a
bf16 package, up to bf16 rounding: its blocks and, for a line mask, data consistency's product run
in bf16).

The exported graph takes ``zero_filled (B, C, H, W)``, ``kspace_real`` and ``kspace_imag (B, H, W)``
(un-centred) and returns the image ``(B, C, H, W)``, ``C`` = 1 or 2; the mask is built in and the
image size fixed to the model's. A network without data consistency (VDSR) takes only the image,
which a super-resolution export names ``low_resolution``; inputs the network does not use are
dropped from an ONNX graph.

Example:
    >>> import torch
    >>> from kdrecon.mri.undersample import data_consistency
    >>> m = torch.zeros(6, 4); m[[0, 1, 4]] = 1
    >>> layer = RealDataConsistency(m.numpy())
    >>> x, k = torch.rand(2, 1, 6, 4), torch.randn(2, 6, 4, dtype=torch.complex64) * m
    >>> torch.allclose(layer(x, layer.measured(k.real, k.imag)), data_consistency(x, k, m), atol=1e-5)
    True
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdrecon.data.layout import atomic_path, remove_debris
from kdrecon.models import dccnn, thin_kernels
from kdrecon.models.cascade import CascadeNetwork
from kdrecon.mri.channels import COMPLEX_CHANNELS
from kdrecon.mri.consistency import dft_matrix, sampled_projection

FORMATS = ("onnx", "torch-export", "aot-inductor")
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2", "aot-inductor": ".pt2"}
#: The formats that can hold a bf16 network (the others are float32).
BF16_FORMATS = ("aot-inductor",)
#: ONNX opset of the exported graphs (MatMul, Conv, Relu, Where: any runtime of the last years).
OPSET = 17


class RealDataConsistency(nn.Module):
    """Hard data consistency in real arithmetic, as a projection (see the module docstring):
    ``x_DC = x − A_H x A_W + F⁻¹ k₀`` with the constant matrices ``A_H = W̄_H[:, R] W_H[R, :]`` and
    ``A_W = W_W[:, Q] W̄_W[Q, :]``.

    :meth:`measured` computes ``F⁻¹ k₀`` once per call of the network from the sampled k-space given
    as ``(real, imaginary)``; every cascade then applies :meth:`forward`. For a line mask
    (``A_W = I``) that is one product with a fixed matrix: ``(I − Re A_H) x + Re F⁻¹ k₀`` for a real
    image (the real part is kept, as the FFT operator does), and for a complex one as two channels
    ``(B, 2, H, W)`` (:mod:`kdrecon.mri.channels`) the same with the ``2H × 2H`` real form of
    ``I − A_H`` acting on the stacked real and imaginary parts.
    """

    def __init__(self, mask: np.ndarray, image_channels: int = 1, product_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        rows, columns = mask.any(axis=1), mask.any(axis=0)
        if not np.array_equal(mask > 0, np.outer(rows, columns)):
            raise ValueError("the mask is not an outer product of sampled rows and columns (a Cartesian mask)")
        self.complex_image = image_channels == COMPLEX_CHANNELS
        self.line_mask = bool(columns.all())
        self.image_shape = tuple(mask.shape)
        rows, columns = np.flatnonzero(rows), np.flatnonzero(columns)
        transform_h, transform_w = dft_matrix(mask.shape[0]), dft_matrix(mask.shape[1])
        self.register_buffer("rows", torch.from_numpy(rows))
        rows_projection = sampled_projection(mask.shape[0], rows)  # A_H
        if self.line_mask:
            complement = np.eye(mask.shape[0]) - rows_projection
            if self.complex_image:  # [[Re, −Im], [Im, Re]] of I − A_H, on (real; imaginary) stacked
                complement = np.block([[complement.real, -complement.imag], [complement.imag, complement.real]])
            self.register_buffer("complement", torch.from_numpy(np.ascontiguousarray(complement.real)).to(product_dtype))
            self.sampled_rows = len(rows)  # a constant of the graph, not read from a tensor
            self._register_real_forms(transform_h[rows].conj().T, transform_w.conj().T)
        else:
            self.register_buffer("columns", torch.from_numpy(columns))
            # The inverse transform of the sampled k-space, W̄_H[:, R] and W̄_W[Q, :], for measured().
            self._register_complex("inverse_rows", transform_h[rows].conj().T)
            self._register_complex("inverse_columns", transform_w[:, columns].conj().T)
            height, width = mask.shape  # multiply-adds of W̄_H[:, R] (k₀ W̄_W[Q, :]) against (W̄_H[:, R] k₀) W̄_W[Q, :]
            self.columns_first = len(rows) * width * (len(columns) + height) < height * len(columns) * (len(rows) + width)
            self._register_complex("rows_projection", rows_projection)
            self._register_complex("columns_projection", sampled_projection(mask.shape[1], columns).T)  # A_W = A_Qᵀ

    def _register_real_forms(self, inverse_rows: np.ndarray, inverse_columns: np.ndarray) -> None:
        """For a line mask, ``F⁻¹ k₀`` as two real products (:meth:`measured`): the columns' transform of
        the sampled rows ``[Re k₀[R] | Im k₀[R]] [[Re W̄_W, Im W̄_W], [−Im W̄_W, Re W̄_W]]`` gives
        ``[Re P | Im P]`` with ``P = k₀[R] W̄_W``; stacked as ``[Re P; Im P]``, the rows' transform
        ``[Re W̄_H[:, R], −Im W̄_H[:, R]]`` gives ``Re F⁻¹ k₀`` (and ``[[Re, −Im], [Im, Re]]`` of
        ``W̄_H[:, R]`` gives the real and imaginary parts stacked, for a complex image)."""
        real, imag = inverse_columns.real, inverse_columns.imag
        self.register_buffer("columns_real_form", torch.from_numpy(np.block([[real, imag], [-imag, real]])).float())
        real, imag = inverse_rows.real, inverse_rows.imag
        rows_form = np.block([[real, -imag], [imag, real]]) if self.complex_image else np.hstack([real, -imag])
        self.register_buffer("rows_real_form", torch.from_numpy(np.ascontiguousarray(rows_form)).float())

    def _register_complex(self, name: str, matrix: np.ndarray) -> None:
        self.register_buffer(f"{name}_real", torch.from_numpy(np.ascontiguousarray(matrix.real)).float())
        self.register_buffer(f"{name}_imag", torch.from_numpy(np.ascontiguousarray(matrix.imag)).float())

    def measured(self, kspace_real: torch.Tensor, kspace_imag: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``F⁻¹ k₀ = W̄_H[:, R] k₀[R, Q] W̄_W[Q, :]`` in the form :meth:`forward` takes; samples of the
        k-space outside the mask are not read. For a line mask, ``Re F⁻¹ k₀`` ``(B, H, W)`` (real and
        imaginary parts stacked, ``(B, 2H, W)``, for a complex image) by two real products, the
        columns' transform first, on the sampled rows only (:meth:`_register_real_forms`); otherwise
        ``(real, imaginary)`` ``(B, H, W)``, the two complex products in the cheaper order."""
        if self.line_mask:
            sampled_rows, width = self.sampled_rows, self.image_shape[1]
            sampled = torch.cat([part.index_select(-2, self.rows) for part in (kspace_real, kspace_imag)], dim=-1)
            transformed = (sampled @ self.columns_real_form).reshape(-1, sampled_rows, 2, width)
            return self.rows_real_form @ transformed.transpose(1, 2).reshape(-1, 2 * sampled_rows, width)
        sampled = [part.index_select(-2, self.rows).index_select(-1, self.columns) for part in (kspace_real, kspace_imag)]
        inverse_rows = (self.inverse_rows_real, self.inverse_rows_imag)
        inverse_columns = (self.inverse_columns_real, self.inverse_columns_imag)
        if self.columns_first:
            return _complex_product(inverse_rows, _complex_product(sampled, inverse_columns))
        return _complex_product(_complex_product(inverse_rows, sampled), inverse_columns)

    def forward(self, image: torch.Tensor, measured: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``image`` ``(B, C, H, W)`` made consistent with ``measured`` (from :meth:`measured`) under the
        layer's built-in mask, the one the network was trained with; float32 out. For a line mask the
        product with ``I − Re A_H`` runs in the layer's ``product_dtype`` and the measurements are added
        in float32."""
        if self.line_mask:
            # Reshapes to constant shapes (the image size is fixed): an exported graph computes no shapes.
            height, width = self.image_shape
            channels = COMPLEX_CHANNELS if self.complex_image else 1
            product = self.complement @ image.to(self.complement.dtype).reshape(-1, channels * height, width)
            return (product.float() + measured).reshape(-1, channels, height, width)
        return self._box_consistency(image.float(), measured)

    def _box_consistency(self, image: torch.Tensor, measured: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``x − A_H x A_W + F⁻¹ k₀`` for a mask of sampled rows and columns (super-resolution's box)."""
        parts = (image[:, 0], image[:, 1] if self.complex_image else torch.zeros_like(image[:, 0]))
        left = _complex_product((self.rows_projection_real, self.rows_projection_imag), parts)
        projected = _complex_product(left, (self.columns_projection_real, self.columns_projection_imag))
        out = [part - projection + value for part, projection, value in zip(parts, projected, measured)]
        return torch.stack(out, dim=1) if self.complex_image else out[0].unsqueeze(1)


def _complex_product(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``a @ b`` of complex matrices given as ``(real, imaginary)``."""
    return a[0] @ b[0] - a[1] @ b[1], a[0] @ b[1] + a[1] @ b[0]


class TapSumConvolution(nn.Module):
    """A zero-padded 3×3 convolution as a 1×1 convolution to its nine taps and a sum of shifted taps.

    ``y = b + Σ_{i,j} shift_{i,j}(w_{:, :, i, j} ⋆ x)``: the same result as ``conv`` for few output
    channels, where a runtime's 3×3 kernel is slow (see the module docstring).

    Example:
        >>> import torch
        >>> conv = torch.nn.Conv2d(8, 1, 3, padding=1)
        >>> x = torch.rand(2, 8, 5, 7)
        >>> torch.allclose(TapSumConvolution(conv)(x), conv(x), atol=1e-6)
        True
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.outputs = conv.out_channels
        weight = conv.weight.detach()  # (out, in, 3, 3) → taps ordered (j, i, out)
        self.register_buffer("taps", weight.permute(3, 2, 0, 1).reshape(9 * self.outputs, conv.in_channels, 1, 1).contiguous())
        self.register_buffer("bias", conv.bias.detach().view(1, self.outputs, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The 1×1 convolution's own zero padding gives the taps a zero border (no separate pad), and
        # slices ending at -2, -1 or the end need no image size: an exported graph computes no shapes.
        columns = nn.functional.conv2d(x, self.taps, padding=1).split(3 * self.outputs, dim=1)
        # Shift each column of taps j along the width, all rows i at once, then each row i along the height.
        shifted = columns[0][..., :-2] + columns[1][..., 1:-1] + columns[2][..., 2:]
        rows = shifted.split(self.outputs, dim=1)
        return self.bias + rows[0][..., :-2, :] + rows[1][..., 1:-1, :] + rows[2][..., 2:, :]


def _is_thin_convolution(module: nn.Module) -> bool:
    """A zero-padded 3×3 convolution to the image's one or two channels."""
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3) and module.padding == (1, 1)
            and module.stride == (1, 1) and module.groups == 1 and module.bias is not None
            and module.out_channels <= COMPLEX_CHANNELS)


def substitute_thin_convolutions(network: nn.Module) -> int:
    """Replace, in place, every 3×3 convolution to one or two channels by a :class:`TapSumConvolution`;
    returns how many were replaced."""
    replaced = 0
    for parent in list(network.modules()):
        for name, child in parent.named_children():
            if _is_thin_convolution(child):
                setattr(parent, name, TapSumConvolution(child))
                replaced += 1
    return replaced


class BlockInBfloat16(nn.Module):
    """A block whose weights are bf16, its input cast to bf16 (what autocast does for its convolutions);
    data consistency after it (:class:`RealDataConsistency`) returns float32."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block.to(torch.bfloat16)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.block(state.to(torch.bfloat16))


class ExportableNetwork(nn.Module):
    """A cascade network whose data consistency runs in real arithmetic, with its mask built in; with
    ``precision="bf16"`` its blocks run in bf16 (:class:`BlockInBfloat16`) and, for a line mask, so
    does data consistency's product with ``I − Re A_H``, the measurements added in float32 (the
    block's output is bf16 already; scores unchanged, docs/benchmarks.md); a box mask's data
    consistency stays float32. ``use_thin_kernels`` runs the blocks' thin convolutions as kdrecon's
    operators (:mod:`kdrecon.models.thin_kernels`; their library must be loaded)."""

    def __init__(self, network: CascadeNetwork, mask: np.ndarray, image_channels: int = 1, precision: str = "fp32",
                 use_thin_kernels: bool = False) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).eval()
        dccnn.use_thin_kernels(self.network, False)  # a training run's switch: the substitution below decides
        #: How many convolutions run in kdrecon's kernels.
        self.thin_kernel_convolutions = thin_kernels.substitute_thin_kernels(self.network) if use_thin_kernels else 0
        substitute_thin_convolutions(self.network)
        if precision == "bf16":
            for index, block in enumerate(self.network.blocks):
                self.network.blocks[index] = BlockInBfloat16(block)
        product_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.data_consistency = RealDataConsistency(mask, image_channels, product_dtype)

    def forward(self, zero_filled: torch.Tensor, kspace_real: torch.Tensor, kspace_imag: torch.Tensor) -> torch.Tensor:
        # F⁻¹ k₀ is the same for every cascade: computed once, bound into every step's operator.
        measured = self.data_consistency.measured(kspace_real, kspace_imag)
        return self.network.reconstruct(zero_filled, functools.partial(self.data_consistency, measured=measured))


def export_network(network: CascadeNetwork, mask: np.ndarray, output: Path, export_format: str, example: tuple,
                   precision: str = "fp32", image_input: str = "zero_filled",
                   metadata: dict[str, str] | None = None, thin_kernels_allowed: bool = True) -> int:
    """Write ``network`` (with DC, ``mask`` built in) as ONNX, a ``torch.export`` program or an
    AOTInductor package; ``example`` (``zero_filled``, ``kspace_real``, ``kspace_imag``) fixes the image
    size. ONNX and ``torch.export`` take any batch (give an example batch ≥ 2: ``torch.export``
    specialises a batch of 1 to a constant); an AOTInductor package is compiled for the example's
    batch (with a dynamic batch it ran slower), in ``precision`` (``fp32`` or ``bf16``). An ONNX
    graph names its image input ``image_input`` and carries ``metadata`` as its model properties
    (ONNX's ``metadata_props``, which any ONNX reader shows). A bf16 AOTInductor package uses kdrecon's
    thin-convolution kernels where this CPU runs them (:func:`thin_kernels_apply`) unless not
    ``thin_kernels_allowed``; such a package loads where their library is loaded (:func:`load_ahead_of_time`)."""
    if export_format not in FORMATS:
        raise ValueError(f"format {export_format!r}: choose {', '.join(FORMATS)}")
    if precision != "fp32" and export_format not in BF16_FORMATS:
        raise ValueError(f"precision {precision}: a {export_format} export is float32; bf16 needs {' or '.join(BF16_FORMATS)}")
    use_kernels = thin_kernels_allowed and thin_kernels_apply(export_format, precision)
    exportable = ExportableNetwork(network, mask, example[0].shape[1], precision, use_thin_kernels=use_kernels)
    remove_debris(Path(output).parent, Path(output).name, recursive=False)  # of an interrupted export
    with atomic_path(Path(output)) as temporary:
        if export_format == "onnx":
            names = [image_input, "kspace_real", "kspace_imag"]
            torch.onnx.export(exportable, example, str(temporary), input_names=names, output_names=["image"],
                              opset_version=OPSET, dynamo=False,
                              dynamic_axes={name: {0: "batch"} for name in (*names, "image")})
            if metadata:
                _set_onnx_metadata(temporary, metadata)
            return exportable.thin_kernel_convolutions
        named = temporary.with_name(temporary.name + SUFFIXES[export_format])  # torch.export.save wants .pt2
        if export_format == "torch-export":
            batch = torch.export.Dim("batch", min=1)
            torch.export.save(torch.export.export(exportable, example, dynamic_shapes=({0: batch}, {0: batch}, {0: batch})), str(named))
        else:
            _compile_ahead_of_time(exportable, example, named)
        named.replace(temporary)
    return exportable.thin_kernel_convolutions


def thin_kernels_apply(export_format: str, precision: str) -> bool:
    """Whether an export in ``export_format`` and ``precision`` runs a DC-CNN's thin convolutions as kdrecon's
    kernels on this CPU: bf16 AOTInductor packages, where the CPU has AVX-512 BF16 and the library builds
    (networks without 1→32 or 32→1 convolutions, such as a complex DC-CNN's, have none to replace)."""
    return export_format == "aot-inductor" and precision == "bf16" and thin_kernels.fast_kernels_available()


def _set_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Store ``metadata`` in the ONNX model at ``path`` as its ``metadata_props``."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))


def _compile_ahead_of_time(exportable: ExportableNetwork, example: tuple, path: Path) -> None:
    """The AOTInductor package of ``exportable`` for ``example``'s shapes, its weights frozen in (which lets
    inductor fuse each convolution with its ReLU and pre-pack the weights for oneDNN)."""
    from torch import _inductor  # AOTInductor's entry points (PyTorch's documented API lives here)

    with torch.no_grad():
        program = torch.export.export(exportable, example)
        _inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs={"freezing": True})


def inference_session(path: Path):
    """An ONNX Runtime CPU session for an exported graph, its threads not spinning between calls.

    By default a session's threads busy-wait after every call, taking the cores from whatever runs
    next (PyTorch, another session): in alternated timings that made every path slower and the
    student's relatively more (docs/benchmarks.md).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_ahead_of_time(path: Path) -> Callable[..., torch.Tensor]:
    """An AOTInductor package, callable as the network: ``package(zero_filled, kspace_real, kspace_imag)``.

    A process of one's own that calls it many times should first keep freed memory mapped
    (``kdrecon.training.allocator.retain_freed_memory()``, which kdrecon's commands apply): with glibc's
    defaults the teacher's package page-faulted thousands of times per call in some processes
    (``scripts/package_page_faults.py``, docs/benchmarks.md).

    A package built with kdrecon's thin-convolution kernels (:func:`export_network`) calls them: their
    library is loaded first, and a package that needs it where it cannot be built is refused."""
    from torch import _inductor

    if thin_kernels.package_calls_kernels(Path(path)) and not thin_kernels.load():
        raise ValueError(f"{path}: the package calls kdrecon's thin-convolution kernels, which cannot be built here "
                         "(see the warning above); export it again with --no-thin-kernels")
    return _inductor.aoti_load_package(str(path))


def run_exported(path: Path, export_format: str, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """The exported network's output: ONNX Runtime for ONNX, the loaded program for ``torch.export``,
    the loaded package for AOTInductor (compiled for batch 1: fed one slice at a time)."""
    if export_format == "onnx":
        session = inference_session(path)
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs)})[0]
    with torch.no_grad():
        if export_format == "torch-export":
            return torch.export.load(str(path)).module()(*inputs).numpy()
        package = load_ahead_of_time(path)
        return np.concatenate([package(*(t[start : start + 1] for t in inputs)).float().numpy()
                               for start in range(len(inputs[0]))])
