"""Correlation congruence, CC (Peng et al., ICCV 2019), Gaussian-RBF kernel by Taylor expansion.

Per layer pair, each feature ``(B, C, H, W)`` becomes one embedding per sample:

1. global average pooling → ``(B, C)``;
2. when the widths differ (or ``embed_dim`` is given) a learned linear embedding
   ``C → D`` for each network (``D = embed_dim``, default 128 as RepDistiller's ``feat_dim`` and
   torchdistill's ``Linear4CCKD``; these are the method's connectors, both trainable as in those
   codes); otherwise the identity;
3. L2 normalisation per sample (``normalize=True``, default).

The correlation matrix ``ψ(E) ∈ R^{B×B}`` uses the paper's Gaussian RBF kernel approximated by
its Taylor series of order ``P``::

    k(x, y) = exp(−γ‖x − y‖²) ≈ Σ_{p=0..P} exp(−2γ) (2γ)^p / p! · (x·y)^p

(exact up to truncation when ``‖x‖ = ‖y‖ = 1``, hence step 3; torchdistill applies the series to
un-normalised linear outputs, reproduced by ``normalize=False``). Defaults ``γ = 0.4``,
``P = 2`` (torchdistill's CCKD sample config, ``kernel_params: gamma 0.4, max_p 2``).
``kernel="bilinear"`` uses ``ψ = E Eᵀ`` instead. The loss follows torchdistill's ``CCKDLoss``
(``reduction='batchmean'``), summed over layer pairs::

    L_CC = Σ_pairs ‖ψ(E_S) − ψ(E_T)‖_F / B²

The paper's eq. squares the norm, ``‖ψ_T − ψ_S‖²_F / B²``: ``squared=True``. (RepDistiller's
CC is a different, author-emailed form, ``mean_i Σ_d |Δ_i|·|Δ_{i+1}|`` with ``Δ = E_S − E_T``,
weight 0.02; not implemented.)

Default weight 0.003: torchdistill ``configs/sample/ilsvrc2012/cckd/resnet18_from_resnet50.yaml``
(``cckd`` term ``weight: 0.003``, Gaussian kernel, batchmean) — the form followed here. It was
tuned for ImageNet with 128-d embeddings; treat it as a starting point for DC-CNN features.

Example:
    >>> import torch
    >>> e = torch.nn.functional.normalize(torch.rand(4, 32), dim=1)
    >>> gaussian_rbf_taylor(e).shape
    torch.Size([4, 4])
    >>> t = torch.rand(4, 32, 8, 8)
    >>> float(CorrelationCongruence([32], [32])([t], [t]))
    0.0
    >>> CorrelationCongruence([16], [32]).connector_parameter_count()  # 16·128+128 + 32·128+128
    6400
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdrecon.distillation.losses.base import FeatureLoss


def gaussian_rbf_taylor(embeddings: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    """``(B, D) → (B, B)``: ``Σ_{p=0..P} exp(−2γ)(2γ)^p/p! (E Eᵀ)^p`` (element-wise powers)."""
    dots = embeddings @ embeddings.t()
    kernel = torch.ones_like(dots)
    coefficient, power = 1.0, torch.ones_like(dots)
    for p in range(1, order + 1):
        coefficient *= 2.0 * gamma / p  # (2γ)^p / p!
        power = power * dots
        kernel = kernel + coefficient * power
    return kernel * torch.exp(torch.tensor(-2.0 * gamma, dtype=dots.dtype, device=dots.device))


def correlation_congruence_loss(
    student_embeddings: Tensor,
    teacher_embeddings: Tensor,
    *,
    kernel: str = "gaussian",
    gamma: float = 0.4,
    order: int = 2,
    squared: bool = False,
) -> Tensor:
    """One pair of ``(B, D)`` embeddings: ``‖ψ_S − ψ_T‖_F / B²`` (squared norm if ``squared``)."""
    if kernel == "gaussian":
        psi_s = gaussian_rbf_taylor(student_embeddings, gamma, order)
        psi_t = gaussian_rbf_taylor(teacher_embeddings, gamma, order)
    elif kernel == "bilinear":
        psi_s = student_embeddings @ student_embeddings.t()
        psi_t = teacher_embeddings @ teacher_embeddings.t()
    else:
        raise ValueError(f"cc: kernel must be 'gaussian' or 'bilinear', got {kernel!r}")
    difference = psi_s - psi_t
    distance = difference.pow(2).sum() if squared else torch.linalg.vector_norm(difference)
    return distance / student_embeddings.shape[0] ** 2


class CorrelationCongruence(FeatureLoss):
    """CC loss summed over pairs; options ``kernel``, ``gamma``, ``order``, ``embed_dim``,
    ``normalize``, ``squared`` (see the module docstring)."""

    name: ClassVar[str] = "cc"
    label: ClassVar[str] = "CC"
    default_weight: ClassVar[float] = 0.003
    requires_equal_spatial_size: ClassVar[bool] = False

    def __init__(
        self,
        student_channels,
        teacher_channels,
        *,
        kernel: str = "gaussian",
        gamma: float = 0.4,
        order: int = 2,
        embed_dim: int | None = None,
        normalize: bool = True,
        squared: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(student_channels, teacher_channels, **options)
        if kernel not in ("gaussian", "bilinear"):
            raise ValueError(f"{self.name}: kernel must be 'gaussian' or 'bilinear', got {kernel!r}")
        if order < 0 or gamma <= 0:
            raise ValueError(f"{self.name}: need order >= 0 and gamma > 0, got {order}, {gamma}")
        self.kernel, self.gamma, self.order = kernel, float(gamma), int(order)
        self.normalize, self.squared = bool(normalize), bool(squared)
        pairs = list(zip(self.student_channels, self.teacher_channels))
        use_embed = embed_dim is not None or any(cs != ct for cs, ct in pairs)
        dim = 128 if embed_dim is None else int(embed_dim)
        def projection(channels: int) -> nn.Module:
            return nn.Linear(channels, dim) if use_embed else nn.Identity()

        self.embed_student = nn.ModuleList(projection(cs) for cs, _ in pairs)
        self.embed_teacher = nn.ModuleList(projection(ct) for _, ct in pairs)

    def embed(self, feature: Tensor, projection: nn.Module) -> Tensor:
        """``(B, C, H, W) → (B, D)``: global average pool, projection, optional L2 norm."""
        e = projection(feature.mean(dim=(2, 3)))
        return F.normalize(e, dim=1) if self.normalize else e

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        terms = [
            correlation_congruence_loss(
                self.embed(s, es), self.embed(t, et),
                kernel=self.kernel, gamma=self.gamma, order=self.order, squared=self.squared,
            )
            for s, t, es, et in zip(student, teacher, self.embed_student, self.embed_teacher)
        ]
        return torch.stack(terms).sum()
