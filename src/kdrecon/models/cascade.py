"""What every block-structured reconstruction network shares: blocks run one after another.

A cascade network maps ``(zero_filled (B,1,H,W), kspace (B,H,W) complex, mask (H,W))`` to an
image ``(B,1,H,W)`` through ``N`` blocks, one :meth:`CascadeNetwork.step` each. In the cascades
of the papers every step is an image-to-image block ``f_i`` followed by hard data consistency:

.. math::

    x_0 = x_{ZF}, \\qquad x_i = \\mathrm{DC}(f_i(x_{i-1})), \\quad i = 1..N,

and families differ only in their blocks (a plain CNN in the DC-CNN, a U-Net in the DC-UNet).
A network whose blocks pass features instead (the residual CNN of conventional SFT) overrides
:meth:`~CascadeNetwork.step`. Any two networks with the same number of blocks whose steps pass
the same kind of state can be paired block by block: a student-friendly teacher branches into the
student after any teacher block, and a feature loss compares one chosen layer per block.

A family says which layer of a block stands for it in feature distillation
(:meth:`CascadeNetwork.feature_layers`); module paths are ``blocks.{i}.…`` so forward hooks
can tap them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kdrecon.mri.consistency import DataConsistency


class CascadeNetwork(nn.Module):
    """Base of the cascaded networks: ``blocks`` (an :class:`~torch.nn.ModuleList`) with DC after each."""

    blocks: nn.ModuleList

    #: Whether :class:`~kdrecon.mri.consistency.DataConsistency` may use its matrix form (off: the
    #: FFT form of the papers' code, which the benchmark's reference path times).
    matrix_consistency = True

    def forward(self, zero_filled: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(zero_filled, self.consistency_for(kspace, mask))

    def consistency_for(self, kspace: torch.Tensor, mask: torch.Tensor) -> DataConsistency:
        """The data-consistency operator of one batch's measurements, built once per forward pass."""
        return DataConsistency(kspace, mask, matrix=self.matrix_consistency)

    def reconstruct(self, zero_filled: torch.Tensor, consistency: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The blocks from ``zero_filled``, each step's image made consistent by ``consistency``
        (``image → image``; an export passes its own, in real arithmetic)."""
        state = zero_filled
        for index in range(self.cascades):
            state = self.step(index, state, zero_filled, consistency)
        return state

    def step(self, index: int, state: torch.Tensor, zero_filled: torch.Tensor,
             consistency: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Block ``index`` applied to ``state`` (the previous block's output): here the block, then
        data consistency (float32 out)."""
        return consistency(self.blocks[index](state))

    #: What :meth:`step` passes from block to block: ``image`` or ``features``.
    state_kind = "image"

    @property
    def cascades(self) -> int:
        return len(self.blocks)

    def feature_layers(self, cascade: int, count: int = 1) -> list[str]:
        """Module paths of ``count`` consecutive layers of block ``cascade`` used by feature losses.

        The last of them is the block's representative layer; a loss over the flow between
        layers (FSP) takes ``count = 2``.
        """
        raise NotImplementedError(f"{type(self).__name__} declares no feature layers")


def use_matrix_consistency(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Let every cascade network in ``model`` use (or not) the matrix form of data consistency."""
    for module in model.modules():
        if isinstance(module, CascadeNetwork):
            module.matrix_consistency = enabled
    return model


def middle_layer_paths(network: CascadeNetwork, cascade: int, count: int) -> list[str]:
    """``blocks.{cascade}.layers.{j}`` for the middle layer ``(n − 1) // 2`` of a block of ``n`` and the ``count − 1`` before it."""
    size = len(network.blocks[cascade].layers)
    middle = (size - 1) // 2
    if middle + 1 < count:  # fewer hidden layers up to the middle than asked: a pair of one layer with itself
        raise ValueError(f"a block of {size} convolutions has {middle + 1} hidden layer(s) up to its middle; "
                         f"{count} asked for")
    return [f"blocks.{cascade}.layers.{middle - offset}" for offset in reversed(range(count))]
