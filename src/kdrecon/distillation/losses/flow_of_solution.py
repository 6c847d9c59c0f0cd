"""Flow of solution procedure, FSP (Yim et al., CVPR 2017).

The FSP matrix of two features of **one** network, ``F¹ (B, C₁, H, W)`` and ``F² (B, C₂, H, W)``,
is their Gram matrix over the spatial positions, averaged over ``H·W`` (per sample)::

    G_{b,i,j} = (1/(H·W)) Σ_{h,w} F¹_{b,i,h,w} · F²_{b,j,h,w}          (B, C₁, C₂)

and the loss is the squared difference between the teacher's and the student's matrices,
averaged over all ``B·C₁·C₂`` entries (RepDistiller's ``FSP.compute_loss``,
``(s − t).pow(2).mean()``; the paper's ``(1/N) Σ_x λ_i ‖G_T − G_S‖²₂`` up to the constant
``C₁·C₂`` absorbed in β), summed over the FSP matrices::

    L_FSP = Σ_k mean_{b,i,j} (G^T_k − G^S_k)²

Feature layout: features come in consecutive pairs from the same network,
``[f0, f1, f2, f3, …]`` → matrices ``G(f0, f1), G(f2, f3), …`` (an even number of features); the
student and teacher lists pair up position by position. With ``chain=True`` every neighbouring
pair is used, ``G(f0, f1), G(f1, f2), …`` (what RepDistiller's ``compute_fsp`` does along the
network's stages). Student and teacher widths must be equal at every position (the FSP matrices
are compared entry by entry; RepDistiller raises too) — DC-CNN hidden layers are all 32 wide, so
e.g. teacher ``(blocks.i.layers.1, blocks.i.layers.2)`` ↔ student ``(blocks.i.layers.0,
blocks.i.layers.1)``. The two features of a pair must share ``H×W``.

Default weight β = 50: RepDistiller ``scripts/run_cifar_distill.sh`` (``--distill fsp -b 50``).
(RepDistiller trains FSP in an initialisation stage first; here the loss is a plain term.)

Example:
    >>> import torch
    >>> a, b = torch.rand(2, 32, 8, 8), torch.rand(2, 32, 8, 8)
    >>> fsp_matrix(a, b).shape
    torch.Size([2, 32, 32])
    >>> loss = FlowOfSolution([32, 32], [32, 32])
    >>> float(loss([a, b], [a, b]))
    0.0
    >>> FlowOfSolution([16, 32], [32, 32])
    Traceback (most recent call last):
    ...
    ValueError: fsp: FSP matrices need equal student and teacher widths, got student [16, 32] and teacher [32, 32]
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from kdrecon.distillation.losses.base import FeatureLoss


def fsp_matrix(first: Tensor, second: Tensor) -> Tensor:
    """``(B, C₁, H, W), (B, C₂, H, W) → (B, C₁, C₂)``: ``F¹ F²ᵀ / (H·W)`` per sample."""
    h, w = first.shape[2:]
    return torch.einsum("bihw,bjhw->bij", first, second) / (h * w)


def fsp_loss(student_pair: tuple[Tensor, Tensor], teacher_pair: tuple[Tensor, Tensor]) -> Tensor:
    """One FSP matrix: ``mean((G_T − G_S)²)`` over ``B·C₁·C₂`` entries (scalar)."""
    return (fsp_matrix(*teacher_pair) - fsp_matrix(*student_pair)).pow(2).mean()


class FlowOfSolution(FeatureLoss):
    """FSP loss over consecutive feature pairs (option ``chain``: overlapping pairs)."""

    name: ClassVar[str] = "fsp"
    label: ClassVar[str] = "FSP"
    layers_per_pair: ClassVar[int] = 2
    default_weight: ClassVar[float] = 50.0

    def __init__(self, student_channels, teacher_channels, *, chain: bool = False, **options: Any) -> None:
        super().__init__(student_channels, teacher_channels, **options)
        if self.student_channels != self.teacher_channels:
            raise ValueError(
                f"{self.name}: FSP matrices need equal student and teacher widths, got student "
                f"{list(self.student_channels)} and teacher {list(self.teacher_channels)}"
            )
        count = len(self.student_channels)
        if chain and count < 2:
            raise ValueError(f"{self.name}: chain=True needs at least 2 features per network, got {count}")
        if not chain and count % 2:
            raise ValueError(f"{self.name}: features come in pairs (f0, f1), (f2, f3), ...; got {count}")
        self.chain = bool(chain)

    def index_pairs(self) -> list[tuple[int, int]]:
        """Positions of the two features of each FSP matrix."""
        count = len(self.student_channels)
        if self.chain:
            return [(i, i + 1) for i in range(count - 1)]
        return [(i, i + 1) for i in range(0, count, 2)]

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        terms = []
        for a, b in self.index_pairs():
            for role, feats in (("student", student), ("teacher", teacher)):
                if feats[a].shape[2:] != feats[b].shape[2:]:
                    raise ValueError(
                        f"{self.name}: {role} features {a} and {b} differ in spatial size "
                        f"{tuple(feats[a].shape[2:])} vs {tuple(feats[b].shape[2:])}"
                    )
            terms.append(fsp_loss((student[a], student[b]), (teacher[a], teacher[b])))
        return torch.stack(terms).sum()
