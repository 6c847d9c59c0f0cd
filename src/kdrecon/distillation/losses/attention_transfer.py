"""Attention transfer, AT (Zagoruyko & Komodakis, ICLR 2017), the reference formulation.

For a feature ``F`` of shape ``(B, C, H, W)`` the attention map of sample ``b`` is the channel
mean of ``|F|^p`` (``p = 2``), flattened to ``H·W`` values and L2-normalised **per sample**::

    Q_b = vec( (1/C) Σ_c |F_{b,c}|^p ),      a_b = Q_b / ‖Q_b‖₂          (B, H·W)

and the loss of one layer pair is the mean over all ``B·H·W`` elements of the squared difference
of the student and teacher maps (the authors' code, ``(at(x) - at(y)).pow(2).mean()``), summed
over layer pairs::

    L_AT = Σ_pairs mean_{b,k} (a^S_{b,k} − a^T_{b,k})²

(The paper's eq. 2 writes ``β/2 Σ_j ‖a^S_j − a^T_j‖_p``; its reference code, which produced
its numbers, squares the difference and averages it — the paper's "β divided by the number of
elements in the attention map and batch size". This module follows the code.) Student and teacher may differ in width (``C``); the spatial sizes of a pair must
be equal (DC-CNN layers all keep ``H×W``).

Default weight β = 1000: RepDistiller ``scripts/run_cifar_distill.sh`` (``--distill attention
-b 1000``) and mdistiller ``CFG.AT.LOSS.FEAT_WEIGHT = 1000.0``; spec §4 ("1000 is usual").

The KD-MRI code's own variant (channel *sum*, normalised across the batch axis, L1) is
:class:`kdrecon.distillation.losses.attention_transfer_paper.PaperAttentionTransfer` ("at-paper").

Example:
    >>> import torch
    >>> s, t = torch.rand(2, 32, 8, 8), torch.rand(2, 32, 8, 8)
    >>> attention_map(t).shape
    torch.Size([2, 64])
    >>> float(attention_transfer_loss(t, t))
    0.0
    >>> loss = AttentionTransfer([32, 32], [32, 32])
    >>> bool(loss([s, s], [t, t]) > 0), loss.default_weight, loss.connector_parameter_count()
    (True, 1000.0, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from kdrecon.distillation.losses.base import FeatureLoss
from kdrecon.models import thin_kernels


class ChannelEnergy(torch.autograd.Function):
    """``Σ_c F²`` over the channel axis, ``(B, C, H, W) → (B, H, W)``, with gradient ``2F · g``.

    Forward is one fused reduction (the squared Euclidean norm over the channels), backward one
    element-wise pass, where ``F.square().sum(1)`` writes a squared copy of the feature and
    autograd's norm backward adds a division and a mask for zero norms; the saving is measured
    in docs/benchmarks.md. A bf16 feature (a network trained under autocast) is summed in
    float32, and its gradient is computed and returned in bf16, the precision the network's own
    backward pass runs in; on a CPU with AVX-512 BF16 a bf16 channels-last feature of 32 channels is
    summed by kdrecon's kernel (:func:`kdrecon.models.thin_kernels.channel_energy_in_kernel`), which
    reads it in place instead of copying it to float32 first.

    Example:
        >>> feature = torch.tensor([[[[1.0]], [[2.0]]]], requires_grad=True)  # (1, 2, 1, 1)
        >>> energy = ChannelEnergy.apply(feature)
        >>> energy.flatten().tolist()
        [5.0]
        >>> energy.sum().backward(); feature.grad.flatten().tolist()
        [2.0, 4.0]
    """

    @staticmethod
    def forward(ctx: Any, feature: Tensor) -> Tensor:
        ctx.save_for_backward(feature)
        if thin_kernels.channel_energy_in_kernel(feature):  # no float32 copy of the feature
            return torch.ops.kdrecon.channel_energy(feature)
        return torch.linalg.vector_norm(feature, dim=1, dtype=at_least_float32(feature.dtype)).square()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (feature,) = ctx.saved_tensors
        return feature * (2 * grad).to(feature.dtype).unsqueeze(1)


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if it is float32 or wider, else float32: what a loss on bf16 features sums in."""
    return torch.promote_types(dtype, torch.float32)


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """``(B, C, H, W) → (B, H·W)``: channel mean of ``|F|^p``, L2-normalised per sample.

    For ``p = 2`` the channel sum is :class:`ChannelEnergy`, without a squared copy of the
    feature (docs/benchmarks.md).
    """
    if p == 2:
        powered_mean = ChannelEnergy.apply(feature) / feature.shape[1]
    else:
        powered_mean = feature.to(at_least_float32(feature.dtype)).abs().pow(p).mean(dim=1)
    return F.normalize(powered_mean.flatten(1), dim=1)


def attention_transfer_loss(student: Tensor, teacher: Tensor, p: float = 2.0) -> Tensor:
    """One layer pair: ``mean((a_S − a_T)²)`` over the ``B·H·W`` map elements (scalar)."""
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()


class AttentionTransfer(FeatureLoss):
    """AT loss summed over layer pairs. Option ``p`` (default 2), the power of ``|F|``."""

    name: ClassVar[str] = "at"
    label: ClassVar[str] = "AT"
    default_weight: ClassVar[float] = 1000.0
    takes_low_precision_features: ClassVar[bool] = True

    def __init__(self, student_channels, teacher_channels, *, p: float = 2.0, **options: Any) -> None:
        super().__init__(student_channels, teacher_channels, **options)
        if p <= 0:
            raise ValueError(f"{self.name}: p must be positive, got {p}")
        self.p = float(p)

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        terms = [attention_transfer_loss(s, t, self.p) for s, t in zip(student, teacher)]
        return torch.stack(terms).sum()

    def teacher_summary(self, teacher_features: Sequence[Tensor]) -> list[Tensor]:
        """The teacher's attention maps ``a^T`` (B, H·W) in float32: all the loss reads of them."""
        return [attention_map(f.float(), self.p) for f in self.validate_side(teacher_features, "teacher")]

    def compute_summarised(self, student: list[Tensor], teacher_summaries: list[Tensor]) -> Tensor:
        terms = []
        for index, (feature, teacher_map) in enumerate(zip(student, teacher_summaries)):
            pixels = feature.shape[2] * feature.shape[3]
            if teacher_map.shape != (feature.shape[0], pixels):
                raise ValueError(f"{self.name}: pair {index}: a teacher map of shape {tuple(teacher_map.shape)} "
                                 f"for a student feature of {feature.shape[0]} slices of {pixels} pixels")
            terms.append((attention_map(feature, self.p) - teacher_map).pow(2).mean())
        return torch.stack(terms).sum()
