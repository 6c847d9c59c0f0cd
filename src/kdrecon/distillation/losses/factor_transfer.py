"""Factor transfer, FT (Kim, Park & Kwak, NeurIPS 2018: "Paraphrasing complex network").

Two small convolutional connectors per layer pair, with ``m = round(rate · C_T)`` factor
channels (paraphrase rate ``rate = 0.5``, the paper's and RepDistiller's ``k``):

- the **paraphraser** ``P`` (on the teacher), an autoencoder: encoder ``conv3×3 C_T→m,
  LeakyReLU(0.1), conv3×3 m→m, LeakyReLU(0.1)``; decoder ``conv3×3 m→C_T, LeakyReLU(0.1),
  conv3×3 C_T→C_T``. The teacher factor is the encoder output ``F_T = enc(T)``.
- the **translator** ``Tr`` (on the student), ``conv3×3 C_S→m, LeakyReLU(0.1), conv3×3 m→m,
  LeakyReLU(0.1)`` (the same shape as the encoder), giving ``F_S = Tr(S)``.

Factors ``(B, m, H, W)`` are flattened per sample and L2-normalised; the loss is their L1
distance, reduced as a mean over the ``B·m·H·W`` entries (RepDistiller's ``.abs().mean()``),
summed over layer pairs::

    L_FT = Σ_pairs mean | F_T/‖F_T‖₂ − F_S/‖F_S‖₂ |          (p = 1, the paper's choice)

Procedure: the paraphraser is **pretrained on the teacher first** by reconstruction,
``L_rec = Σ_pairs mean (dec(enc(T)) − T)²`` (:meth:`FactorTransfer.paraphraser_reconstruction_loss`,
over :meth:`FactorTransfer.paraphraser_parameters` only; RepDistiller uses MSE for this init
stage). The distillation pipeline runs this step for ``paraphraser_epochs`` epochs over the
training set before the student learns (:mod:`kdrecon.distillation.preparation`); then, with the
default ``train_paraphraser=False``, the paraphraser is frozen and the FT loss trains only the
translator (and the student). These connectors are scaled down from the paper's (3 conv + 3
transposed-conv layers with BN) to two convolutions each, enough for DC-CNN's 32-wide features.
Spatial sizes of a pair must match.

Default weight β = 200: RepDistiller ``scripts/run_cifar_distill.sh`` (``--distill factor
-b 200``). RepDistiller's factor is a channel-mean map (AT-like); this module follows the paper
(flattened factor), so the weight is a starting point, not a tuned value.

Example:
    >>> import torch
    >>> loss = FactorTransfer([32], [32])
    >>> loss.connector_parameter_count()  # paraphraser 6,944 + 13,888, translator 6,944
    27776
    >>> t = torch.rand(2, 32, 8, 8)
    >>> loss.paraphraser_reconstruction_loss([t]).shape
    torch.Size([])
    >>> float(factor_transfer_loss(t, t))
    0.0
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdrecon.distillation.losses.base import FeatureLoss

_SLOPE = 0.1  # LeakyReLU negative slope (the paper's paraphraser/translator activations)


def factor_transfer_loss(student_factor: Tensor, teacher_factor: Tensor, p: int = 1) -> Tensor:
    """``(B, m, H, W)`` factors → ``mean |F_T/‖F_T‖ − F_S/‖F_S‖|^p`` per-sample-normalised (scalar)."""
    s = F.normalize(student_factor.flatten(1), dim=1)
    t = F.normalize(teacher_factor.flatten(1), dim=1)
    return (s - t).abs().pow(p).mean()


def _conv_block(channels: Sequence[int], final_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(channels[:-1], channels[1:])):
        layers.append(nn.Conv2d(a, b, kernel_size=3, padding=1))
        if final_activation or i < len(channels) - 2:
            layers.append(nn.LeakyReLU(_SLOPE))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Autoencoder on a teacher feature: ``encoder (C→m→m)``, ``decoder (m→C→C)``."""

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__()
        self.encoder = _conv_block([channels, factor_channels, factor_channels], final_activation=True)
        self.decoder = _conv_block([factor_channels, channels, channels], final_activation=False)

    def forward(self, feature: Tensor) -> Tensor:
        """Reconstruction ``dec(enc(F))``."""
        return self.decoder(self.encoder(feature))


class Translator(nn.Sequential):
    """Student feature → factor: ``conv C_S→m, LeakyReLU, conv m→m, LeakyReLU``."""

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__(*_conv_block([channels, factor_channels, factor_channels], final_activation=True))


class FactorTransfer(FeatureLoss):
    """FT loss summed over pairs; options ``rate`` (0.5), ``p`` (1), ``train_paraphraser`` (False),
    ``paraphraser_epochs`` (10: the preparatory step's epochs over the training set)."""

    name: ClassVar[str] = "ft"
    label: ClassVar[str] = "FT"
    default_weight: ClassVar[float] = 200.0

    def __init__(
        self,
        student_channels,
        teacher_channels,
        *,
        rate: float = 0.5,
        p: int = 1,
        train_paraphraser: bool = False,
        paraphraser_epochs: int = 10,
        **options: Any,
    ) -> None:
        super().__init__(student_channels, teacher_channels, **options)
        if rate <= 0 or p not in (1, 2) or paraphraser_epochs < 0:
            raise ValueError(f"{self.name}: need rate > 0, p in (1, 2) and paraphraser_epochs ≥ 0, got rate={rate}, "
                             f"p={p}, paraphraser_epochs={paraphraser_epochs}")
        self.rate, self.p, self.train_paraphraser = float(rate), int(p), bool(train_paraphraser)
        self.preparation_epochs = int(paraphraser_epochs)
        factors = [max(1, round(rate * ct)) for ct in self.teacher_channels]
        self.paraphrasers = nn.ModuleList(Paraphraser(ct, m) for ct, m in zip(self.teacher_channels, factors))
        self.translators = nn.ModuleList(Translator(cs, m) for cs, m in zip(self.student_channels, factors))

    def paraphraser_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters to optimise in the paraphraser pre-step."""
        return self.paraphrasers.parameters()

    def paraphraser_reconstruction_loss(self, teacher_features: Sequence[Tensor]) -> Tensor:
        """Pre-step loss ``Σ_pairs mean (P(T) − T)²`` on the teacher features alone."""
        teacher = self.validate_side(teacher_features, "teacher")
        terms = [F.mse_loss(paraphraser(t), t) for paraphraser, t in zip(self.paraphrasers, teacher)]
        return torch.stack(terms).sum()

    def preparation_loss(self, teacher_features: Sequence[Tensor]) -> Tensor:
        return self.paraphraser_reconstruction_loss(teacher_features)

    def preparation_parameters(self) -> list[nn.Parameter]:
        return list(self.paraphraser_parameters())

    def finish_preparation(self) -> None:
        if not self.train_paraphraser:
            self.paraphrasers.requires_grad_(False)

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        terms = []
        for paraphraser, translator, s, t in zip(self.paraphrasers, self.translators, student, teacher):
            teacher_factor = paraphraser.encoder(t)
            if not self.train_paraphraser:
                teacher_factor = teacher_factor.detach()
            terms.append(factor_transfer_loss(translator(s), teacher_factor, self.p))
        return torch.stack(terms).sum()

