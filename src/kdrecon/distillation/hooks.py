"""Tap intermediate features by module path with forward hooks, without editing the model.

Example:
    >>> import torch
    >>> from kdrecon.models import build_model
    >>> model = build_model("D3C5")
    >>> tap = FeatureTap(model, ["blocks.0.layers.1", "blocks.4.layers.1"])
    >>> x, k, m = torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.complex64), torch.zeros(8, 8)
    >>> _ = model(x, k, m)
    >>> [tuple(f.shape) for f in tap.features()]
    [(1, 32, 8, 8), (1, 32, 8, 8)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FeatureTap:
    """Keeps the latest output of each named submodule of ``model``, in the order given."""

    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        missing = [path for path in paths if path not in modules]
        if missing:
            raise ValueError(f"no module {missing[0]!r} in {type(model).__name__} (e.g. 'blocks.0.layers.2')")
        self.paths = list(paths)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[path].register_forward_hook(self._keeper(path)) for path in self.paths]

    def _keeper(self, path: str):
        def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self._outputs[path] = output

        return keep

    def features(self) -> list[torch.Tensor]:
        """The tapped outputs of the last forward pass, in the order of ``paths``."""
        missing = [path for path in self.paths if path not in self._outputs]
        if missing:
            raise RuntimeError(f"module {missing[0]!r} did not run in the last forward pass")
        features = [self._outputs[path] for path in self.paths]
        self._outputs.clear()
        return features

    def remove(self) -> None:
        """Detach the hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
