"""A cascade network with its data-consistency layer as a graph for other runtimes (ONNX, ``torch.export``).

Complex tensors cannot cross an ONNX graph's boundary and the FFT has no portable ONNX form
(opset 17's ``DFT`` is slow at sizes such as 150 in ONNX Runtime), so the exported graph computes
the orthonormal DFT exactly in real arithmetic, as products with precomputed matrices of the
image size: ``W_N = C_N − i S_N`` with ``C_N[k, n] = cos(2πkn/N)/√N`` and ``S_N[k, n] = sin(2πkn/N)/√N``
(both symmetric), ``F x = W_H x W_W`` and ``F⁻¹ K = W̄_H K W̄_W``.

Hard data consistency, ``F⁻¹(M ⊙ k₀ + (1 − M) ⊙ F x)`` as :func:`kdrecon.mri.undersample.data_consistency`
computes it with the FFT, is rewritten as a correction on the sampled samples only. A Cartesian
mask is an outer product of sampled rows ``R`` and columns ``Q`` (all columns for a line mask), so

.. math::

    x_{DC} = x + W̄_H[:, R]\\, \\big(k₀[R, Q] − W_H[R, :]\\, x\\, W_W[:, Q]\\big)\\, W̄_W[Q, :],

of which a real image keeps the real part. At 4x that is about a quarter of the products of the
full transforms. A complex image (two channels) goes through the same products with its
imaginary part and keeps both parts.

The one other change is a kernel substitution: a 3×3 convolution to one or two channels (the last
of every DC-CNN block) runs as a 1×1 convolution to its nine taps and a sum of the nine shifted
tap images (:class:`TapSumConvolution`), which ONNX Runtime runs several times faster than its
kernel for so few output channels (docs/benchmarks.md). Both are exact up to float32 rounding.

The exported graph takes ``zero_filled (B, C, H, W)``, ``kspace_real`` and ``kspace_imag (B, H, W)``
(un-centred) and returns the image ``(B, C, H, W)``, ``C`` = 1 or 2; the mask is built in and the
image size fixed to the model's.

Example:
    >>> import torch
    >>> from kdrecon.mri.undersample import data_consistency
    >>> m = torch.zeros(6, 4); m[[0, 1, 4]] = 1
    >>> layer = RealDataConsistency(m.numpy())
    >>> x, k = torch.rand(2, 1, 6, 4), torch.randn(2, 6, 4, dtype=torch.complex64) * m
    >>> torch.allclose(layer(x, (k.real, k.imag)), data_consistency(x, k, m), atol=1e-5)
    True
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdrecon.data.layout import atomic_path, remove_debris
from kdrecon.models.cascade import CascadeNetwork
from kdrecon.mri.channels import COMPLEX_CHANNELS

FORMATS = ("onnx", "torch-export")
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2"}
#: ONNX opset of the exported graphs (MatMul, Conv, Relu, Where: any runtime of the last years).
OPSET = 17


def dft_matrices(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, S)``: the real and negated imaginary parts of the orthonormal DFT matrix of ``size``."""
    index = np.arange(size)
    angle = 2 * np.pi * np.outer(index, index) / size
    scale = 1 / math.sqrt(size)
    return (torch.from_numpy(np.cos(angle) * scale).float(), torch.from_numpy(np.sin(angle) * scale).float())


class RealDataConsistency(nn.Module):
    """Hard data consistency with k-space given as ``(real, imaginary)``, in products with DFT matrices
    restricted to the sampled rows and columns of ``mask`` (see the module docstring).

    Works on a real image ``(B, 1, H, W)`` (the real part is kept, as the FFT operator does) or, with
    ``image_channels`` 2, a complex one as two channels ``(B, 2, H, W)`` (:mod:`kdrecon.mri.channels`).
    """

    def __init__(self, mask: np.ndarray, image_channels: int = 1) -> None:
        super().__init__()
        rows, columns = mask.any(axis=1), mask.any(axis=0)
        if not np.array_equal(mask > 0, np.outer(rows, columns)):
            raise ValueError("the mask is not an outer product of sampled rows and columns (a Cartesian mask)")
        self.complex_image = image_channels == COMPLEX_CHANNELS
        rows, columns = torch.from_numpy(np.flatnonzero(rows)), torch.from_numpy(np.flatnonzero(columns))
        cos_h, sin_h = dft_matrices(mask.shape[0])
        cos_w, sin_w = dft_matrices(mask.shape[1])
        self.register_buffer("rows", rows)
        self.register_buffer("columns", columns)
        # W_H[R, :] and W_W[:, Q] for the forward transform; their transposes for the inverse.
        for name, matrix in (("cos_rows", cos_h[rows]), ("sin_rows", sin_h[rows]),
                             ("cos_columns", cos_w[:, columns]), ("sin_columns", sin_w[:, columns])):
            self.register_buffer(name, matrix.contiguous())
            self.register_buffer(f"{name}_t", matrix.t().contiguous())

    def forward(self, image: torch.Tensor, kspace: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` is ignored: the layer's own, built in, is the one the network was trained with."""
        real = image[:, 0].float()
        imaginary = image[:, 1].float() if self.complex_image else None
        sampled_real, sampled_imaginary = self._sampled_dft(real, imaginary)
        measured = [part.index_select(-2, self.rows).index_select(-1, self.columns) for part in kspace]
        correction = self._inverse_dft(measured[0] - sampled_real, measured[1] - sampled_imaginary)
        if self.complex_image:
            return torch.stack((real + correction[0], imaginary + correction[1]), dim=1)
        return (real + correction[0]).unsqueeze(1)

    def _sampled_dft(self, real: torch.Tensor, imaginary: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``W_H[R, :] x W_W[:, Q]`` with ``W = C − iS`` (``imaginary`` None: a real image)."""
        rows_real, rows_imaginary = self.cos_rows @ real, -(self.sin_rows @ real)
        if imaginary is not None:
            rows_real, rows_imaginary = rows_real + self.sin_rows @ imaginary, rows_imaginary + self.cos_rows @ imaginary
        return (rows_real @ self.cos_columns + rows_imaginary @ self.sin_columns,
                rows_imaginary @ self.cos_columns - rows_real @ self.sin_columns)

    def _inverse_dft(self, real: torch.Tensor, imaginary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``W̄_H[:, R] D W̄_W[Q, :]`` with ``W̄ = C + iS``; the imaginary part only for a complex image."""
        rows_real = self.cos_rows_t @ real - self.sin_rows_t @ imaginary
        rows_imaginary = self.cos_rows_t @ imaginary + self.sin_rows_t @ real
        out_real = rows_real @ self.cos_columns_t - rows_imaginary @ self.sin_columns_t
        if not self.complex_image:
            return out_real, None
        return out_real, rows_imaginary @ self.cos_columns_t + rows_real @ self.sin_columns_t


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
        weight = conv.weight.detach()  # (out, in, 3, 3) → taps ordered (i, j, out)
        self.register_buffer("taps", weight.permute(2, 3, 0, 1).reshape(9 * self.outputs, conv.in_channels, 1, 1).contiguous())
        self.register_buffer("bias", conv.bias.detach().view(1, self.outputs, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        taps = nn.functional.pad(nn.functional.conv2d(x, self.taps), (1, 1, 1, 1))
        total = self.bias
        for tap in range(9):
            i, j = divmod(tap, 3)
            total = total + taps[:, tap * self.outputs : (tap + 1) * self.outputs, i : i + height, j : j + width]
        return total


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


class ExportableNetwork(nn.Module):
    """A cascade network whose data consistency runs in real arithmetic, with its mask built in."""

    def __init__(self, network: CascadeNetwork, mask: np.ndarray, image_channels: int = 1) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).eval()
        substitute_thin_convolutions(self.network)
        self.data_consistency = RealDataConsistency(mask, image_channels)
        # An instance attribute, so it shadows the class's FFT operator (a module assignment
        # would only register it); the layer's matrices are registered on this wrapper.
        object.__setattr__(self.network, "consistency", self.data_consistency)
        self.register_buffer("mask", torch.from_numpy(mask).float())

    def forward(self, zero_filled: torch.Tensor, kspace_real: torch.Tensor, kspace_imag: torch.Tensor) -> torch.Tensor:
        return self.network(zero_filled, (kspace_real, kspace_imag), self.mask)


def export_network(network: CascadeNetwork, mask: np.ndarray, output: Path, export_format: str, example: tuple) -> None:
    """Write ``network`` (with DC, ``mask`` built in) as ONNX or a ``torch.export`` program; ``example``
    (``zero_filled``, ``kspace_real``, ``kspace_imag``, batch ≥ 2) fixes the image size."""
    if export_format not in FORMATS:
        raise ValueError(f"format {export_format!r}: choose {' or '.join(FORMATS)}")
    exportable = ExportableNetwork(network, mask, image_channels=example[0].shape[1])
    remove_debris(Path(output).parent, Path(output).name, recursive=False)  # of an interrupted export
    with atomic_path(Path(output)) as temporary:
        if export_format == "onnx":
            torch.onnx.export(exportable, example, str(temporary), input_names=["zero_filled", "kspace_real", "kspace_imag"],
                              output_names=["image"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={name: {0: "batch"} for name in ("zero_filled", "kspace_real", "kspace_imag", "image")})
        else:
            batch = torch.export.Dim("batch", min=1)
            program = torch.export.export(exportable, example, dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
            named = temporary.with_name(temporary.name + SUFFIXES[export_format])  # torch.export.save wants .pt2
            torch.export.save(program, str(named))
            named.replace(temporary)


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


def run_exported(path: Path, export_format: str, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """The exported network's output: ONNX Runtime for ONNX, the loaded program for ``torch.export``."""
    if export_format == "onnx":
        session = inference_session(path)
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs)})[0]
    with torch.no_grad():
        return torch.export.load(str(path)).module()(*inputs).numpy()
