"""A model family: how its names are parsed and how a network is built from one.

Each network module declares one :class:`ModelFamily` (``FAMILY``); :mod:`kdrecon.models.registry`
collects them, and every other place (config validation, the CLI, the benchmark, the SFT
teacher, default layer pairs) asks the registry instead of spelling a model name.

Example:
    >>> family = ModelFamily("toy", r"T(?P<depth>\\d+)", "T3", dict, ("width",), "a toy")
    >>> family.parse("t3")
    {'depth': 3}
    >>> family.parse("D5C5") is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelFamily:
    """One kind of network, addressed by names that carry its shape (``D5C5``, ``U2C5``).

    Attributes:
        name: the family's name in messages and documentation (``DC-CNN``).
        pattern: a regular expression a model name matches in full (case-insensitive); its
            named groups are integer arguments of ``build``.
        example: a valid model name, shown in error messages and help.
        build: the constructor, called with the parsed groups and the options.
        options: the keyword options ``build`` accepts besides the parsed ones.
        summary: one line for ``--help`` and the README.
        blocks_group: the group of ``pattern`` that counts the blocks (cascades).
    """

    name: str
    pattern: str
    example: str
    build: Callable[..., nn.Module]
    options: tuple[str, ...]
    summary: str
    blocks_group: str = "cascades"

    def parse(self, model_name: str) -> dict[str, int] | None:
        """The integer shape parameters in ``model_name``, or ``None`` if it is not of this family."""
        match = re.fullmatch(self.pattern, model_name, re.IGNORECASE)
        return {key: int(value) for key, value in match.groupdict().items()} if match else None

    def create(self, model_name: str, **options: Any) -> nn.Module:
        """Build ``model_name`` with ``options``; an option the family lacks is an error naming it."""
        shape = self.parse(model_name)
        if shape is None:
            raise ValueError(f"model {model_name!r} is not a {self.name} name such as {self.example}")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"model {model_name}: {self.name} has no option {unknown[0]!r} (it has {', '.join(self.options)})")
        return self.build(**shape, **options)
