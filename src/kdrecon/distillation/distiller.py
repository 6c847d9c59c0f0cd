"""A student trained against a frozen teacher: feature KD, imitation, or both.

The teacher is put in eval mode with gradients off and run under ``torch.no_grad`` in every
step, so it never trains and costs no autograd memory (the papers' code ran it with autograd
on). Features are tapped by module path (:class:`FeatureTap`); which layers pair up is data.
Losses are returned by name so the trainer logs each term.

The terms, with ``x`` the target, ``x_S``/``x_T`` the student/teacher outputs and ``F`` the
paired features:

* ``reconstruction = L1(x_S, x)``
* ``imitation = L1(x_S, x_T)`` (KD-MRI)
* ``feature = β · KD(F_S, F_T)`` (the chosen method)

``total = feature_weight·feature + α·reconstruction + (1 − α)·imitation`` where the weights
select the stage: KD-MRI's feature stage uses only the feature term, its fine-tuning stage
``α·L1 + (1 − α)·imitation``, and the single-stage variant all three with α = 1 plus imitation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from kdrecon.data.dataset import Batch
from kdrecon.distillation.hooks import FeatureTap
from kdrecon.distillation.losses import FeatureLoss


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms (see the module docstring)."""

    reconstruction: float = 1.0
    imitation: float = 0.0
    feature: float = 0.0


class Distiller:
    """Objective for :func:`kdrecon.training.trainer.fit`: trains ``student`` (and connectors)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        weights: LossWeights,
        feature_loss: FeatureLoss | None = None,
        student_layers: Sequence[str] = (),
        teacher_layers: Sequence[str] = (),
    ) -> None:
        if weights.feature and feature_loss is None:
            raise ValueError("a feature weight needs a feature loss (method)")
        if len(student_layers) != len(teacher_layers):
            raise ValueError(f"{len(student_layers)} student layers but {len(teacher_layers)} teacher layers to pair")
        self.student = student
        self.teacher = teacher.eval().requires_grad_(False)
        self.weights = weights
        self.feature_loss = feature_loss if weights.feature else None
        self.student_tap = FeatureTap(student, student_layers) if self.feature_loss else None
        self.teacher_tap = FeatureTap(teacher, teacher_layers) if self.feature_loss else None

    def modules(self) -> dict[str, nn.Module]:
        modules = {"model": self.student}
        if self.feature_loss is not None and any(True for _ in self.feature_loss.parameters()):
            modules["connectors"] = self.feature_loss
        return modules

    def close(self) -> None:
        """Remove the feature hooks from the student and the teacher."""
        for tap in (self.student_tap, self.teacher_tap):
            if tap is not None:
                tap.remove()

    def connector_parameter_count(self) -> int:
        return self.feature_loss.connector_parameter_count() if self.feature_loss is not None else 0

    def training_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = self._losses(batch)
        total = self.weights.reconstruction * losses["reconstruction"]
        if self.weights.imitation:
            total = total + self.weights.imitation * losses["imitation"]
        if self.feature_loss is not None:
            total = total + self.weights.feature * losses["feature"]
        losses["total"] = total
        return losses

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        """What selects the checkpoint: the student's L1 to the target, or, in a stage that
        trains on the feature loss alone (KD-MRI's first stage), that feature loss."""
        losses = self._losses(batch)
        return losses["reconstruction"] if self.weights.reconstruction else losses["feature"]

    def _losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The unweighted terms the weights ask for."""
        needs_teacher = self.weights.imitation or self.feature_loss is not None
        if needs_teacher:
            self.teacher.eval()
            with torch.no_grad():
                teacher_output = self.teacher(batch.zero_filled, batch.kspace, batch.mask)
                teacher_features = self.teacher_tap.features() if self.teacher_tap else []
        student_output = self.student(batch.zero_filled, batch.kspace, batch.mask)
        losses = {"reconstruction": F.l1_loss(student_output, batch.target)}
        if self.weights.imitation:
            losses["imitation"] = F.l1_loss(student_output, teacher_output)
        if self.feature_loss is not None:
            student_features = self.student_tap.features()
            losses["feature"] = self.feature_loss(
                [f.float() for f in student_features], [f.float() for f in teacher_features]
            )
        return losses
