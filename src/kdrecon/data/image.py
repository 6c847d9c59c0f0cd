"""What a dataset's images are: magnitude (the papers' data) or complex (phase kept from raw k-space).

* ``magnitude`` — real images; the networks see one channel and data consistency keeps the real
  part (the papers' setting).
* ``complex`` — complex images made from acquired k-space (fastMRI's ``kspace``, a scanner's raw
  data); the networks see two channels (real, imaginary, :mod:`kdrecon.mri.channels`) and data
  consistency keeps the complex image. Metrics are computed on the magnitude.

A dataset's manifest records its kind; a configuration whose ``data.image`` names another kind
is refused, as for the task (:mod:`kdrecon.data.task`).

Example:
    >>> image_kind_of({"format": "kdrecon-dataset"}), channels_of("complex")
    ('magnitude', 2)
"""

from __future__ import annotations

from typing import Literal, get_args

from kdrecon.mri.channels import COMPLEX_CHANNELS, MAGNITUDE_CHANNELS

ImageKind = Literal["magnitude", "complex"]
IMAGE_KINDS: tuple[str, ...] = get_args(ImageKind)
MAGNITUDE, COMPLEX = IMAGE_KINDS
#: Key of the image kind in a dataset manifest; manifests written before it existed are magnitude.
MANIFEST_KEY = "image"


def image_kind_of(manifest: dict) -> str:
    """The kind of images a dataset holds (``magnitude`` when its manifest predates complex data)."""
    kind = manifest.get(MANIFEST_KEY, MAGNITUDE)
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown image kind {kind!r} in the dataset manifest; expected one of {', '.join(IMAGE_KINDS)}")
    return kind


def channels_of(kind: str) -> int:
    """The number of network input channels for images of ``kind``."""
    return COMPLEX_CHANNELS if kind == COMPLEX else MAGNITUDE_CHANNELS


def check_image_kind(dataset: object, found: str, expected: str) -> None:
    """Refuse data of another image kind than the configuration says."""
    if found != expected:
        raise ValueError(f"{dataset}: holds {found} images, but the configuration's data.image is {expected}; "
                         f"set data.image: {found}")
