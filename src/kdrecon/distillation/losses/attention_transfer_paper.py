"""Attention transfer as the KD-MRI code computed it ("at-paper"; Murugesan et al., MIDL 2020).

The KD-MRI slides write the loss (eq. 1) as::

    L_AT = Σ_{j∈I} ‖ Q_S^j / ‖Q_S^j‖₂ − Q_T^j / ‖Q_T^j‖₂ ‖,     Q = vec(Σ_c |A_c|²)

i.e. a channel **sum** of squared activations. The public code that produced the published
numbers (``reconstruction/train_feature.py``, pairs teacher layer 3 ↔ student layer 2 of every
cascade) computes, for each pair, on maps ``Q`` of shape ``(B, H, W)``::

    Q = Σ_c F_c²                                   (B, H, W)
    Q̂ = F.normalize(Q, dim=0)                      i.e. Q̂_{b,h,w} = Q_{b,h,w} / ‖Q_{:,h,w}‖₂
    ℓ = mean_{b,h,w} |Q̂^S − Q̂^T|                  (F.l1_loss)

and averages (not sums) ``ℓ`` over the layer pairs. This module reproduces that code exactly, so
"at-paper" is the loss behind the papers' AT numbers. Note what it really does: the L2
normalisation runs along the **batch axis, separately at every pixel** (each pixel's vector of
``B`` values is scaled to unit norm), not per sample and not by the norm of the whole batch
tensor; and the distance is a mean absolute difference, not the ‖·‖₂ of the slide. Consequences:
the loss depends on which slices share a batch, and with ``B = 1`` every non-zero pixel maps to
1, so the loss carries only the support of the maps. Spec §4 asks for this only as a named
variant; :class:`~kdrecon.distillation.losses.attention_transfer.AttentionTransfer` ("at") is
the default.

Default weight 1: the KD-MRI code trains the student on this loss alone (step 2 of its
procedure; ``loss = mean of the per-pair L1 terms``, no β).

Example:
    >>> import torch
    >>> t = torch.rand(4, 32, 8, 8)
    >>> paper_attention_map(t).shape
    torch.Size([4, 8, 8])
    >>> float(paper_attention_transfer_loss(t, t))
    0.0
    >>> loss = PaperAttentionTransfer([32], [32])
    >>> bool(loss([torch.rand(4, 32, 8, 8)], [t]) > 0), loss.default_weight
    (True, 1.0)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from kdrecon.distillation.losses.attention_transfer import ChannelEnergy
from kdrecon.distillation.losses.base import FeatureLoss


def paper_attention_map(feature: Tensor) -> Tensor:
    """``(B, C, H, W) → (B, H, W)``: ``Σ_c F²``, L2-normalised along the batch axis per pixel.

    ``Σ_c F²`` is :class:`~kdrecon.distillation.losses.attention_transfer.ChannelEnergy` (no squared copy).
    """
    return F.normalize(ChannelEnergy.apply(feature), dim=0)


def paper_attention_transfer_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """One layer pair: ``mean |Q̂_S − Q̂_T|`` over ``B·H·W`` (the code's ``F.l1_loss``)."""
    return (paper_attention_map(student) - paper_attention_map(teacher)).abs().mean()


class PaperAttentionTransfer(FeatureLoss):
    """KD-MRI code's AT: batch-axis normalised channel-sum maps, L1, averaged over pairs."""

    name: ClassVar[str] = "at-paper"
    label: ClassVar[str] = "AT (KD-MRI code)"
    default_weight: ClassVar[float] = 1.0
    takes_low_precision_features: ClassVar[bool] = True  # ChannelEnergy sums them in float32

    def __init__(self, student_channels, teacher_channels, **options: Any) -> None:
        super().__init__(student_channels, teacher_channels, **options)

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        terms = [paper_attention_transfer_loss(s, t) for s, t in zip(student, teacher)]
        return torch.stack(terms).mean()
