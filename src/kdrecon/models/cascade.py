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

import torch
from torch import nn

from kdrecon.mri.undersample import data_consistency


class CascadeNetwork(nn.Module):
    """Base of the cascaded networks: ``blocks`` (an :class:`~torch.nn.ModuleList`) with DC after each."""

    blocks: nn.ModuleList

    def forward(self, zero_filled: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        state = zero_filled
        for index in range(self.cascades):
            state = self.step(index, state, zero_filled, kspace, mask)
        return state

    def step(self, index: int, state: torch.Tensor, zero_filled: torch.Tensor, kspace: torch.Tensor,
             mask: torch.Tensor) -> torch.Tensor:
        """Block ``index`` applied to ``state`` (the previous block's output): here the block, then
        data consistency (kept in float32)."""
        return self.consistency(self.blocks[index](state), kspace, mask)

    #: The data-consistency operator every step calls, ``(image, kspace, mask) → image``: the FFT
    #: one here; an export replaces it by one in real arithmetic (:mod:`kdrecon.deployment.export`).
    consistency = staticmethod(data_consistency)

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


def middle_layer_paths(network: CascadeNetwork, cascade: int, count: int) -> list[str]:
    """``blocks.{cascade}.layers.{j}`` for the middle layer ``(n − 1) // 2`` of a block of ``n`` and the ``count − 1`` before it."""
    middle = (len(network.blocks[cascade].layers) - 1) // 2
    return [f"blocks.{cascade}.layers.{max(middle - offset, 0)}" for offset in reversed(range(count))]
