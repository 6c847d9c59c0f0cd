"""Probabilistic knowledge transfer, PKT (Passalis & Tefas, ECCV 2018).

Each feature ``(B, C, H, W)`` becomes one vector per sample — flattened to ``C·H·W`` values
(default) or globally average-pooled to ``C`` values (``pool=True``, as RepDistiller applies
PKT to the pooled penultimate feature). Vectors are L2-normalised (``x / (‖x‖₂ + ε)``), the
cosine-similarity kernel is rescaled to ``[0, 1]`` and turned into conditional probabilities
row by row; the loss is the KL divergence teacher ‖ student, averaged over the ``B²`` entries
(the authors' code, ``eps = 1e-7``), summed over layer pairs::

    K_ij = (x̂_i·x̂_j + 1) / 2,        P_{j|i} = K_ij / Σ_j K_ij        (B × B, per network)
    L_PKT = Σ_pairs mean_{i,j} P^T_{j|i} · log( (P^T_{j|i} + ε) / (P^S_{j|i} + ε) )

Student and teacher may differ in width and spatial size; batch sizes must match.

Default weight 30000: RepDistiller ``scripts/run_cifar_distill.sh`` (``--distill pkt -b 30000``)
and mdistiller ``CFG.PKT.LOSS.FEAT_WEIGHT = 30000.0``.

Example:
    >>> import torch
    >>> t = torch.rand(4, 32, 8, 8)
    >>> abs(float(probabilistic_transfer_loss(t.flatten(1), t.flatten(1)))) < 1e-7
    True
    >>> loss = ProbabilisticTransfer([16], [32])
    >>> bool(loss([torch.rand(4, 16, 8, 8)], [t]) > 0), loss.default_weight
    (True, 30000.0)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from kdrecon.distillation.losses.base import FeatureLoss


def conditional_probabilities(vectors: Tensor, eps: float = 1e-7) -> Tensor:
    """``(B, D) → (B, B)``: row-normalised ``(cos + 1)/2`` kernel of the vectors."""
    unit = torch.nan_to_num(vectors / (vectors.norm(dim=1, keepdim=True) + eps))
    kernel = (unit @ unit.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


def probabilistic_transfer_loss(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    """One pair of ``(B, D)`` vectors: ``mean(P_T · log((P_T + ε) / (P_S + ε)))`` (scalar)."""
    p_s = conditional_probabilities(student, eps)
    p_t = conditional_probabilities(teacher, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


class ProbabilisticTransfer(FeatureLoss):
    """PKT loss summed over layer pairs; options ``pool`` (False) and ``eps`` (1e-7)."""

    name: ClassVar[str] = "pkt"
    label: ClassVar[str] = "PKT"
    default_weight: ClassVar[float] = 30000.0
    requires_equal_spatial_size: ClassVar[bool] = False

    def __init__(
        self, student_channels, teacher_channels, *, pool: bool = False, eps: float = 1e-7, **options: Any
    ) -> None:
        super().__init__(student_channels, teacher_channels, **options)
        self.pool, self.eps = bool(pool), float(eps)

    def vectors(self, feature: Tensor) -> Tensor:
        """``(B, C, H, W) → (B, C·H·W)``, or ``(B, C)`` when pooling."""
        return feature.mean(dim=(2, 3)) if self.pool else feature.flatten(1)

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        terms = [
            probabilistic_transfer_loss(self.vectors(s), self.vectors(t), self.eps)
            for s, t in zip(student, teacher)
        ]
        return torch.stack(terms).sum()
