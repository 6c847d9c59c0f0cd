"""Trained models shipped inside the package, by name (``kdrecon models`` lists them).

Each is ``resources/models/{name}.safetensors`` (weights and description, see
:mod:`kdrecon.models.weights`) with its model card ``{name}.md`` beside it: data, command, commit,
seed, validation PSNR/SSIM and licence. ``scripts/ship_models.py`` writes both from a finished
study; nothing is downloaded at run time.

Example:
    >>> "sunnybrook-4x-sft-kd-at" in shipped_models()
    True
"""

from __future__ import annotations

from pathlib import Path

from kdrecon.data.package_files import package_resource
from kdrecon.models.weights import SUFFIX

#: Where shipped models live in the installed package.
SHIPPED_DIRECTORY = package_resource("models")
CARD_SUFFIX = ".md"


def shipped_models() -> list[str]:
    """Names of the shipped models, sorted."""
    return sorted(path.name.removesuffix(SUFFIX) for path in SHIPPED_DIRECTORY.glob(f"*{SUFFIX}"))


def shipped_weights(name: str) -> Path:
    """The weights file of shipped model ``name``; an unknown name is an error listing them."""
    if name not in shipped_models():
        raise ValueError(f"no shipped model {name!r}; shipped: {', '.join(shipped_models()) or 'none'}")
    return SHIPPED_DIRECTORY / f"{name}{SUFFIX}"


def model_card(name: str) -> Path:
    """The model card of shipped model ``name``."""
    return shipped_weights(name).with_suffix(CARD_SUFFIX)
