"""Neuron selectivity transfer, NST (Huang & Wang, 2017): MMD with a polynomial kernel.

Each channel ``c`` of a feature ``(B, C, H, W)`` is one sample of a distribution: its spatial
activation pattern ``f_c ∈ R^{H·W}``, L2-normalised, ``f̂_c = f_c / ‖f_c‖₂``. With the
polynomial kernel ``k(x, y) = (xᵀy + c)^d``, ``d = 2``, ``c = 0`` (the paper's choice and
RepDistiller's), the squared MMD between the teacher's ``C_T`` and the student's ``C_S``
channel patterns of sample ``b`` is::

    MMD²_b = (1/C_T²) Σ_{i,i'} k(t̂_i, t̂_i') + (1/C_S²) Σ_{j,j'} k(ŝ_j, ŝ_j') − (2/(C_T C_S)) Σ_{i,j} k(t̂_i, ŝ_j)

averaged over the batch and summed over layer pairs (``L_NST = Σ_pairs mean_b MMD²_b``). The
teacher-only term is a constant for the student; it is kept (RepDistiller's ``full_loss``, with
that term detached) so that the loss is exactly 0 when the student reproduces the teacher.
Widths may differ; spatial sizes must match.

Default weight λ = 50: RepDistiller ``scripts/run_cifar_distill.sh`` (``--distill nst -b 50``)
and mdistiller ``CFG.NST.LOSS.FEAT_WEIGHT = 50.0``.

Example:
    >>> import torch
    >>> t = torch.rand(2, 32, 8, 8)
    >>> abs(float(neuron_selectivity_loss(t, t))) < 1e-6
    True
    >>> loss = NeuronSelectivity([16], [32])
    >>> bool(loss([torch.rand(2, 16, 8, 8)], [t]) > 0), loss.default_weight
    (True, 50.0)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from kdrecon.distillation.losses.base import FeatureLoss


def polynomial_kernel(a: Tensor, b: Tensor, degree: int = 2, constant: float = 0.0) -> Tensor:
    """``(B, Ca, N), (B, Cb, N) → (B, Ca, Cb)``: ``(aᵢ·bⱼ + c)^d`` per sample."""
    return (a @ b.transpose(1, 2) + constant).pow(degree)


def neuron_selectivity_loss(student: Tensor, teacher: Tensor, degree: int = 2, constant: float = 0.0) -> Tensor:
    """One layer pair: batch mean of the squared MMD between channel patterns (scalar)."""
    s = F.normalize(student.flatten(2), dim=2)
    t = F.normalize(teacher.flatten(2), dim=2)
    return (
        polynomial_kernel(t, t, degree, constant).mean().detach()
        + polynomial_kernel(s, s, degree, constant).mean()
        - 2 * polynomial_kernel(s, t, degree, constant).mean()
    )


class NeuronSelectivity(FeatureLoss):
    """NST loss summed over layer pairs; options ``degree`` (2) and ``constant`` (0)."""

    name: ClassVar[str] = "nst"
    label: ClassVar[str] = "NST"
    default_weight: ClassVar[float] = 50.0

    def __init__(
        self, student_channels, teacher_channels, *, degree: int = 2, constant: float = 0.0, **options: Any
    ) -> None:
        super().__init__(student_channels, teacher_channels, **options)
        if degree < 1:
            raise ValueError(f"{self.name}: degree must be >= 1, got {degree}")
        self.degree, self.constant = int(degree), float(constant)

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        terms = [
            neuron_selectivity_loss(s, t, self.degree, self.constant) for s, t in zip(student, teacher)
        ]
        return torch.stack(terms).sum()
