"""The unit every data source yields: one volume of magnitude or complex slices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Volume:
    """One volume read from a source format, before cropping, scaling and undersampling.

    Attributes:
        name: file stem of the prepared h5 file; unique within a dataset.
        subject: the unit of the train/validation split (a patient); several volumes
            (e.g. cardiac phases) may share one subject and always land in the same split.
        images: slices ``(S, H, W)`` (slices first, as read): float32 magnitude, or complex64
            images with their phase for sources that read raw k-space.
    """

    name: str
    subject: str
    images: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3:
            raise ValueError(f"volume {self.name!r}: expected images of shape (S, H, W), got {self.images.shape}")
        if not np.isfinite(self.images).all():
            raise ValueError(f"volume {self.name!r}: images contain NaN or infinite values")

    @property
    def is_complex(self) -> bool:
        return np.iscomplexobj(self.images)
