"""Hard data consistency for one batch of measurements, as a product with a fixed matrix for line masks.

:func:`kdrecon.mri.undersample.data_consistency` computes ``x_DC = Re F⁻¹(M ⊙ k₀ + (1 − M) ⊙ F x)``
with two FFTs per call. A cascade network calls it after every block with the same ``k₀`` and ``M``,
and for the masks of the field, whole lines of k-space, it is a linear map with a small fixed
matrix. With the orthonormal DFT matrix ``W_N`` of :func:`dft_matrix` (symmetric, ``F x = W_H x W_W``)
and a mask of sampled rows ``R`` (every column of each), ``F⁻¹(M ⊙ F x) = A x`` with
``A = W̄_H[:, R] W_H[R, :]``, so for a real image

.. math::

    x_{DC} = P\\, x + \\operatorname{Re} F⁻¹ k₀, \\qquad P = I − \\operatorname{Re} A,

and for sampled columns ``x_DC = x Pᵀ + Re F⁻¹ k₀`` with ``P`` built from the columns. ``P`` depends
only on the mask (built once per mask), ``Re F⁻¹ k₀`` only on the batch (one inverse FFT per forward
pass instead of two FFTs per block). For images up to :data:`MATRIX_LENGTH_LIMIT` pixels across the
lines this is faster on a CPU than the FFTs, in training and inference (``docs/benchmarks.md``), and
equal to them up to float32 rounding.

Complex images (two channels, :mod:`kdrecon.mri.channels`) and masks of other shapes keep the FFT
form, which replaces the acquired samples exactly.

Example:
    >>> import torch
    >>> from kdrecon.mri.undersample import data_consistency
    >>> mask = torch.zeros(6, 4); mask[[0, 1, 4]] = 1
    >>> image = torch.rand(2, 1, 6, 4)
    >>> kspace = torch.randn(2, 6, 4, dtype=torch.complex64) * mask
    >>> consistency = DataConsistency(kspace, mask)
    >>> consistency.uses_matrix
    True
    >>> torch.allclose(consistency(image), data_consistency(image, kspace, mask), atol=1e-5)
    True
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from kdrecon.mri.channels import COMPLEX_CHANNELS
from kdrecon.mri.fft import ifft2
from kdrecon.mri.undersample import data_consistency

#: Longest side across the sampled lines for which the matrix form is used: its cost grows with the
#: cube of that length and the FFT's only as n log n, and between 320 and 640 pixels the FFT caught
#: up on the project's CPU (docs/benchmarks.md).
MATRIX_LENGTH_LIMIT = 384


def dft_matrix(size: int) -> np.ndarray:
    """The orthonormal DFT matrix ``W_N = C_N − i S_N`` of ``size``, complex128 (symmetric)."""
    index = np.arange(size)
    return np.exp(-2j * np.pi * np.outer(index, index) / size) / math.sqrt(size)


def sampled_projection(size: int, sampled: np.ndarray) -> np.ndarray:
    """``A = W̄[:, S] W[S, :]`` (complex128, ``size × size``): the projection of an image's lines onto the
    k-space lines ``S`` (indices along the undersampled axis), ``F⁻¹(M ⊙ F x) = A x`` for a row mask."""
    transform = torch.from_numpy(dft_matrix(size)[sampled])
    # The product in PyTorch, not NumPy: NumPy's OpenBLAS threads keep spinning for a while after a
    # call, and on a small CPU they slowed the network's next passes by up to a fifth (docs/benchmarks.md).
    return (transform.conj().T @ transform).numpy()


@dataclass(frozen=True)
class LineMask:
    """A mask of whole k-space lines: its complement projection ``P = I − Re A`` (float32, on the
    mask's device) and whether the lines are rows (``P x``) or columns (``x Pᵀ``)."""

    complement: torch.Tensor
    rows: bool


@torch.compiler.disable
def line_mask(mask: torch.Tensor) -> LineMask | None:
    """``mask`` as a :class:`LineMask`, or ``None`` if it is not a 2-D mask of whole lines short enough
    for the matrix form. Cached per mask tensor (rebuilt if it was changed in place).

    Never traced by ``torch.compile``: the cache is Python state, and a projection built inside a
    network compiled into CUDA graphs would be a graph output, overwritten by the next replay while
    the cache still holds it (``kdrecon train --compile`` on a GPU failed so in session 24)."""
    key = id(mask)
    cached = _LINE_MASKS.get(key)
    if cached is not None and cached[0]() is mask and cached[1] == mask._version:
        return cached[2]
    result = _build_line_mask(mask)
    _LINE_MASKS[key] = (weakref.ref(mask, lambda _, key=key: _LINE_MASKS.pop(key, None)), mask._version, result)
    return result


_LINE_MASKS: dict[int, tuple[weakref.ref, int, LineMask | None]] = {}


def _build_line_mask(mask: torch.Tensor) -> LineMask | None:
    if mask.dim() != 2:
        return None
    sampled = mask.detach().cpu().numpy() > 0
    rows, columns = sampled.any(axis=1), sampled.any(axis=0)
    if columns.all() and np.array_equal(sampled, np.outer(rows, columns)):
        along_rows, indices = True, np.flatnonzero(rows)
    elif rows.all() and np.array_equal(sampled, np.outer(rows, columns)):
        along_rows, indices = False, np.flatnonzero(columns)
    else:
        return None
    size = sampled.shape[0 if along_rows else 1]
    if size > MATRIX_LENGTH_LIMIT:
        return None
    complement = np.eye(size) - sampled_projection(size, indices).real
    return LineMask(torch.from_numpy(complement).to(device=mask.device, dtype=torch.float32), along_rows)


class DataConsistency:
    """Hard data consistency with one batch's measurements: ``consistency(image) → image``.

    Built once per forward pass from un-centred ``kspace`` ``(B, H, W)`` (``M ⊙ k₀``) and the 0/1
    ``mask``; every block's output then goes through it. A real image ``(B, 1, H, W)`` or ``(B, H, W)``
    of a line mask takes the matrix form of the module docstring (in float32, also under autocast);
    anything else, or ``matrix=False``, :func:`~kdrecon.mri.undersample.data_consistency`. The
    result is float32 with the image's shape.
    """

    def __init__(self, kspace: torch.Tensor, mask: torch.Tensor, matrix: bool = True) -> None:
        self.kspace, self.mask = kspace, mask
        self.line_mask = line_mask(mask) if matrix else None
        self._measured: torch.Tensor | None = None

    @property
    def uses_matrix(self) -> bool:
        """Whether real images take the matrix form."""
        return self.line_mask is not None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.line_mask is None or (image.dim() == 4 and image.shape[1] == COMPLEX_CHANNELS):
            return data_consistency(image, self.kspace, self.mask)
        if self._measured is None:
            self._measured = ifft2(self.kspace).real  # Re F⁻¹ k₀, shared by every block
        with torch.autocast(image.device.type, enabled=False):
            flat = image.float().reshape(self._measured.shape)
            complement = self.line_mask.complement
            projected = complement @ flat if self.line_mask.rows else flat @ complement.T
            return (projected + self._measured).reshape(image.shape)
