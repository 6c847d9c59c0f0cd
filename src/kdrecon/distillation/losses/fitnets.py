"""FitNets hint loss (Romero et al., ICLR 2015).

The student's *guided* feature ``F_S`` (``(B, C_S, H, W)``) is mapped by a learned regressor
``r`` to the width of the teacher's *hint* feature ``F_T`` (``(B, C_T, H, W)``) and matched by
the mean squared error over all ``B·C_T·H·W`` elements, summed over layer pairs::

    L_FitNets = Σ_pairs mean( (r(F_S) − F_T)² )

Regressor choice (documented decision): ``r`` is a 1×1 convolution with bias, ``C_S → C_T``
(``C_S·C_T + C_T`` parameters, e.g. 16·32 + 32 = 544 for 16 → 32), built **only when the widths
differ**; for equal widths (DC-CNN D5C5 ↔ D3C5, both 32) ``r`` is the identity and the method
adds no parameters, so the hint is matched directly. ``regressor=True`` forces a 1×1 regressor
for every pair (the original paper always trains a regressor, there a convolutional one);
``regressor=False`` forbids one and then requires equal widths. Spatial sizes must be equal
(DC-CNN keeps ``H×W``; mdistiller/RepDistiller use a 3×3 conv + BN + ReLU regressor mainly to
cope with differing sizes, which cannot occur here).

Default weight β = 100: RepDistiller ``scripts/run_cifar_distill.sh`` (``--distill hint
-b 100``) and mdistiller ``CFG.FITNET.LOSS.FEAT_WEIGHT = 100.0``.

Example:
    >>> import torch
    >>> loss = FitNets([16], [32])
    >>> loss.connector_parameter_count()
    544
    >>> s, t = torch.rand(2, 16, 8, 8), torch.rand(2, 32, 8, 8)
    >>> loss([s], [t]).shape
    torch.Size([])
    >>> FitNets([32], [32]).connector_parameter_count()
    0
    >>> float(hint_loss(t, t))
    0.0
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdrecon.distillation.losses.base import FeatureLoss


def hint_loss(guided: Tensor, hint: Tensor) -> Tensor:
    """``mean((guided − hint)²)`` over all elements; ``guided`` already regressed to ``hint``'s shape."""
    return F.mse_loss(guided, hint)


class FitNets(FeatureLoss):
    """Hint loss with 1×1-conv regressors where widths differ (``regressor`` option: None/True/False)."""

    name: ClassVar[str] = "fitnets"
    label: ClassVar[str] = "FitNets"
    default_weight: ClassVar[float] = 100.0

    def __init__(
        self, student_channels, teacher_channels, *, regressor: bool | None = None, **options: Any
    ) -> None:
        super().__init__(student_channels, teacher_channels, **options)
        regressors = []
        for i, (cs, ct) in enumerate(zip(self.student_channels, self.teacher_channels)):
            if regressor is False and cs != ct:
                raise ValueError(f"{self.name}: pair {i} maps {cs} to {ct} channels but regressor=False")
            build = regressor is True or (regressor is None and cs != ct)
            regressors.append(nn.Conv2d(cs, ct, kernel_size=1) if build else nn.Identity())
        self.regressors = nn.ModuleList(regressors)

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        terms = [hint_loss(r(s), t) for r, s, t in zip(self.regressors, student, teacher)]
        return torch.stack(terms).sum()
