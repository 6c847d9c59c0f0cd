"""Similarity-preserving KD, SP (Tung & Mori, ICCV 2019).

Each feature ``(B, C, H, W)`` is reshaped to ``Q ∈ R^{B × C·H·W}``; its batch similarity
matrix is ``G = Q Qᵀ`` (``B × B``) with every **row** L2-normalised (the paper's
``G̃_[i,:] / ‖G̃_[i,:]‖₂``). The loss of a pair is the squared Frobenius distance divided by
``B²``, summed over layer pairs::

    G_S = rownorm(Q_S Q_Sᵀ),  G_T = rownorm(Q_T Q_Tᵀ)
    L_SP = Σ_pairs ‖G_T − G_S‖²_F / B²

Student and teacher may differ in width and even in spatial size (only the ``B × B`` matrices
are compared); the batch sizes must match. Needs ``B ≥ 2`` to carry information.

Default weight γ = 3000: RepDistiller ``scripts/run_cifar_distill.sh`` (``--distill similarity
-b 3000``, "verified by original author") and mdistiller ``CFG.SP.LOSS.FEAT_WEIGHT = 3000.0``.

Example:
    >>> import torch
    >>> t = torch.rand(4, 32, 8, 8)
    >>> similarity_matrix(t).shape
    torch.Size([4, 4])
    >>> float(similarity_preserving_loss(t, t))
    0.0
    >>> SimilarityPreserving([16], [32])([torch.rand(4, 16, 8, 8)], [t]).shape
    torch.Size([])
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from kdrecon.distillation.losses.base import FeatureLoss


def similarity_matrix(feature: Tensor) -> Tensor:
    """``(B, C, H, W) → (B, B)``: ``Q Qᵀ`` of the flattened features, rows L2-normalised."""
    q = feature.flatten(1)
    return F.normalize(q @ q.t(), dim=1)


def similarity_preserving_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """One layer pair: ``‖G_T − G_S‖²_F / B²`` (scalar)."""
    batch = student.shape[0]
    return (similarity_matrix(teacher) - similarity_matrix(student)).pow(2).sum() / batch**2


class SimilarityPreserving(FeatureLoss):
    """SP loss summed over layer pairs; no options, no connectors."""

    name: ClassVar[str] = "sp"
    label: ClassVar[str] = "SP"
    default_weight: ClassVar[float] = 3000.0
    requires_equal_spatial_size: ClassVar[bool] = False

    def __init__(self, student_channels, teacher_channels, **options: Any) -> None:
        super().__init__(student_channels, teacher_channels, **options)

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        terms = [similarity_preserving_loss(s, t) for s, t in zip(student, teacher)]
        return torch.stack(terms).sum()
