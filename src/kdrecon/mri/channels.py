"""Complex images as two real channels, the form the complex (2-channel) networks see.

A complex image ``z = a + ib`` of shape ``(B, H, W)`` is the real tensor ``(B, 2, H, W)`` with
channels ``(a, b)``; a magnitude image is ``(B, 1, H, W)``. Convolutions mix the two channels
freely, and data consistency works on the complex image itself
(:func:`kdrecon.mri.undersample.data_consistency`), so the phase of acquired k-space survives.
Whatever is scored or written (metrics, figures, output files) is the :func:`magnitude`.

Example:
    >>> import torch
    >>> z = torch.tensor([[[3 + 4j]]], dtype=torch.complex64)
    >>> to_channels(z).shape, magnitude(to_channels(z)).item()
    (torch.Size([1, 2, 1, 1]), 5.0)
    >>> torch.equal(to_complex(to_channels(z)), z)
    True
"""

from __future__ import annotations

import torch

#: Channels of a magnitude image and of a complex image ``(real, imaginary)``.
MAGNITUDE_CHANNELS, COMPLEX_CHANNELS = 1, 2


def to_channels(image: torch.Tensor) -> torch.Tensor:
    """Complex ``(..., H, W)`` → real ``(..., 2, H, W)`` with channels (real, imaginary)."""
    return torch.stack((image.real, image.imag), dim=-3)


def to_complex(channels: torch.Tensor) -> torch.Tensor:
    """Real ``(..., 2, H, W)`` → complex ``(..., H, W)``, in at least single precision."""
    if channels.shape[-3] != COMPLEX_CHANNELS:
        raise ValueError(f"a complex image has {COMPLEX_CHANNELS} channels (real, imaginary), got shape {tuple(channels.shape)}")
    real = channels[..., 0, :, :]
    dtype = torch.float64 if real.dtype == torch.float64 else torch.float32
    return torch.complex(real.to(dtype), channels[..., 1, :, :].to(dtype))


def magnitude(image: torch.Tensor) -> torch.Tensor:
    """The image to score or write, ``(B, C, H, W)`` → ``(B, H, W)``.

    Two channels: ``√(a² + b²)``. One channel: the image as it is, since the papers' real networks
    output a real image that is scored without taking its absolute value.
    """
    if image.shape[1] == MAGNITUDE_CHANNELS:
        return image[:, 0]
    if image.shape[1] == COMPLEX_CHANNELS:
        return torch.hypot(image[:, 0], image[:, 1])
    raise ValueError(f"an image has 1 (magnitude) or 2 (complex) channels, got shape {tuple(image.shape)}")
