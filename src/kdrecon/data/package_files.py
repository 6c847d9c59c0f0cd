"""The files shipped inside the package, below ``kdrecon/resources/``: the embedded sample, the
papers' masks, the experiment presets and the trained models."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_resource(*parts: str) -> Path:
    """A file or folder below the package's ``resources/``, e.g. ``package_resource("experiments")``.

    Example:
        >>> package_resource("experiments", "demo.yaml").is_file()
        True
    """
    return Path(str(resources.files("kdrecon").joinpath("resources", *parts)))
