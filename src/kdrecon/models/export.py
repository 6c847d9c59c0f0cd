"""A cascade network with its data-consistency layer as a graph for other runtimes (ONNX, ``torch.export``).

Complex tensors cannot cross an ONNX graph's boundary and the FFT has no portable ONNX form
(opset 17's ``DFT`` is slow at sizes such as 150 in ONNX Runtime), so the exported graph computes
the orthonormal DFT exactly in real arithmetic, as products with precomputed matrices of the
image size. With ``W_N = C_N − i S_N``, ``C_N[k, n] = cos(2πkn/N)/√N``, ``S_N[k, n] = sin(2πkn/N)/√N``
(both symmetric) and a real image ``x``:

.. math::

    F x = (C_H x C_W − S_H x S_W) − i (S_H x C_W + C_H x S_W), \\qquad
    \\mathrm{Re}\\, F^{-1} K = C_H K_r C_W − S_H K_i C_W − C_H K_i S_W − S_H K_r S_W,

and hard data consistency merges ``K = M ⊙ k₀ + (1 − M) ⊙ F x`` before the inverse, as
:func:`kdrecon.mri.undersample.data_consistency` does with the FFT; a complex image (two channels)
goes through the same products with its imaginary part, and keeps both parts of the inverse. The
exported graph takes ``zero_filled (B, C, H, W)``, ``kspace_real`` and ``kspace_imag (B, H, W)``
(un-centred) and returns the image ``(B, C, H, W)``, ``C`` = 1 or 2; the mask is built in. Its size is fixed to the model's image size.

Example:
    >>> import torch
    >>> from kdrecon.mri.undersample import data_consistency
    >>> layer = RealDataConsistency(6, 4)
    >>> x, k, m = torch.rand(2, 1, 6, 4), torch.randn(2, 6, 4, dtype=torch.complex64), (torch.rand(6, 1) > 0.5).float()
    >>> expected = data_consistency(x, k * m, m)
    >>> torch.allclose(layer(x, (k.real * m, k.imag * m), m), expected, atol=1e-5)
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
    """Hard data consistency with k-space given as ``(real, imaginary)``, in matrix products.

    Works on a real image ``(B, 1, H, W)`` (the real part is kept, as the FFT operator does) or, with
    ``image_channels`` 2, a complex one as two channels ``(B, 2, H, W)`` (:mod:`kdrecon.mri.channels`).
    """

    def __init__(self, height: int, width: int, image_channels: int = 1) -> None:
        super().__init__()
        self.complex_image = image_channels == COMPLEX_CHANNELS
        for name, size in (("h", height), ("w", width)):
            cos, sin = dft_matrices(size)
            self.register_buffer(f"cos_{name}", cos)
            self.register_buffer(f"sin_{name}", sin)

    def forward(self, image: torch.Tensor, kspace: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        complex_image = self.complex_image
        real, imaginary = self._dft(image[:, 0].float(), image[:, 1].float() if complex_image else None)
        sampled = mask > 0
        real, imaginary = torch.where(sampled, kspace[0], real), torch.where(sampled, kspace[1], imaginary)
        out_real, out_imaginary = self._inverse_dft(real, imaginary, real_only=not complex_image)
        return torch.stack((out_real, out_imaginary), dim=1) if complex_image else out_real.unsqueeze(1)

    def _dft(self, real: torch.Tensor, imaginary: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``W_H x W_W`` with ``W = C − iS``, first over rows, then columns (``imaginary`` None: a real image)."""
        ch, sh, cw, sw = self.cos_h, self.sin_h, self.cos_w, self.sin_w
        rows_real, rows_imaginary = ch @ real, -(sh @ real)
        if imaginary is not None:
            rows_real, rows_imaginary = rows_real + sh @ imaginary, rows_imaginary + ch @ imaginary
        return rows_real @ cw + rows_imaginary @ sw, rows_imaginary @ cw - rows_real @ sw

    def _inverse_dft(self, real: torch.Tensor, imaginary: torch.Tensor,
                     real_only: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``W̄_H K W̄_W`` with ``W̄ = C + iS``; with ``real_only`` the imaginary part is not computed."""
        ch, sh, cw, sw = self.cos_h, self.sin_h, self.cos_w, self.sin_w
        rows_real, rows_imaginary = ch @ real - sh @ imaginary, ch @ imaginary + sh @ real
        out_real = rows_real @ cw - rows_imaginary @ sw
        return out_real, None if real_only else rows_imaginary @ cw + rows_real @ sw


class ExportableNetwork(nn.Module):
    """A cascade network whose data consistency runs in real arithmetic, with its mask built in."""

    def __init__(self, network: CascadeNetwork, mask: np.ndarray, image_channels: int = 1) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).eval()
        self.data_consistency = RealDataConsistency(*mask.shape, image_channels)
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


def run_exported(path: Path, export_format: str, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """The exported network's output: ONNX Runtime for ONNX, the loaded program for ``torch.export``."""
    if export_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs)})[0]
    with torch.no_grad():
        return torch.export.load(str(path)).module()(*inputs).numpy()
