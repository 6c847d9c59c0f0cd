"""Orthonormal 2-D Fourier transforms in the two k-space layouts of the field.

Two layouts exist and are never mixed silently:

* **un-centred** (the papers' layout): ``k = fft2(x, norm="ortho")``, the DC term at index
  ``[0, 0]`` and low frequencies wrapping around the array edges. The papers' masks are stored
  this way.
* **centred** (fastMRI's layout): ``k = fftshift(fft2(ifftshift(x)))``, the DC term in the
  middle of the array.

All functions transform the last two axes and accept complex or real tensors; real input is
promoted to complex. They always compute in at least single precision, so callers under
``torch.autocast`` still get float32 FFTs.

Example:
    >>> import torch
    >>> from kdrecon.mri.fft import fft2, ifft2
    >>> x = torch.rand(3, 8, 8)
    >>> torch.allclose(ifft2(fft2(x)).real, x, atol=1e-6)
    True
"""

from __future__ import annotations

import torch

_DIMS = (-2, -1)


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    """Promote to complex64 (or complex128 for float64), never to a half-precision type."""
    if x.is_complex():
        return x if x.dtype != torch.complex32 else x.to(torch.complex64)
    if x.dtype == torch.float64:
        return x.to(torch.complex128)
    return x.to(torch.float32).to(torch.complex64)


def fft2(x: torch.Tensor) -> torch.Tensor:
    """Un-centred orthonormal 2-D FFT over the last two axes: ``F x`` with ``F`` unitary."""
    return torch.fft.fft2(_as_complex(x), dim=_DIMS, norm="ortho")


def ifft2(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2`: un-centred orthonormal 2-D inverse FFT over the last two axes."""
    return torch.fft.ifft2(_as_complex(k), dim=_DIMS, norm="ortho")


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT: ``fftshift(fft2(ifftshift(x)))`` over the last two axes."""
    shifted = torch.fft.ifftshift(_as_complex(x), dim=_DIMS)
    return torch.fft.fftshift(torch.fft.fft2(shifted, dim=_DIMS, norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c`: ``fftshift(ifft2(ifftshift(k)))`` over the last two axes."""
    shifted = torch.fft.ifftshift(_as_complex(k), dim=_DIMS)
    return torch.fft.fftshift(torch.fft.ifft2(shifted, dim=_DIMS, norm="ortho"), dim=_DIMS)


def mirrored(k: torch.Tensor) -> torch.Tensor:
    """Un-centred k-space at the opposite frequencies, ``k(−u)`` (indices ``−u mod N``) over the last two axes."""
    return torch.roll(torch.flip(k, dims=_DIMS), shifts=(1, 1), dims=_DIMS)


def hermitian_mismatch(k: torch.Tensor, mask: torch.Tensor) -> float:
    """How far un-centred k-space is from that of real images, relative to its largest sample.

    A real image's transform is Hermitian, :math:`k(-u) = \\overline{k(u)}`, so

    .. math::

        \\frac{\\max_u |k(u) - \\overline{k(-u)}|}{\\max_u |k(u)|},

    over the frequencies ``u`` that ``mask`` samples together with their mirror ``−u``, is zero up
    to rounding for real images and of order one for images with phase. 0 where no sampled
    frequency has its mirror sampled (nothing to compare).

    Example:
        >>> import torch
        >>> image = torch.rand(2, 8, 8)
        >>> hermitian_mismatch(fft2(image), torch.ones(8, 8)) < 1e-5
        True
        >>> hermitian_mismatch(fft2(image * torch.exp(1j * image)), torch.ones(8, 8)) > 0.01
        True
    """
    pairs = (mask != 0) & (mirrored(mask) != 0)
    largest = k.abs().max()
    if not pairs.any() or largest == 0:
        return 0.0
    difference = (k - mirrored(k).conj()).abs()[..., pairs]
    return float(difference.max() / largest)
