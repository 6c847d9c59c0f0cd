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

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from kdrecon.data.dataset import Batch, SliceData
from kdrecon.distillation.hooks import FeatureTap
from kdrecon.distillation.losses import FeatureLoss
from kdrecon.models.inference import inference_batch_size, inference_layout, memory_format


@dataclass(frozen=True)
class TeacherSignals:
    """The frozen teacher's output for a batch and its tapped features, or, when ``summarised``,
    the feature loss's :meth:`~kdrecon.distillation.losses.FeatureLoss.teacher_summary` of them."""

    output: torch.Tensor
    features: list[torch.Tensor]
    summarised: bool = False


#: The names of a distillation's loss terms in :meth:`Distiller.training_losses` (and so, prefixed
#: ``train_``, in a stage's training history): L1 to the target, the unweighted feature loss.
RECONSTRUCTION_TERM, FEATURE_TERM = "reconstruction", "feature"


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms (see the module docstring)."""

    reconstruction: float = 1.0
    imitation: float = 0.0
    feature: float = 0.0


class Distiller:
    """Objective for :func:`kdrecon.training.trainer.fit`: trains ``student`` (and connectors).

    Args:
        teacher_cache_bytes: memory allowed for the teacher's tapped features of the whole
            training split. The teacher is frozen and the masks are fixed, so its outputs and
            features are a function of the slice alone: :meth:`before_training` computes them once
            and every step looks them up instead of running the teacher. Outputs are always
            cached (one image per slice); features only when they fit in this budget (0: never).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        weights: LossWeights,
        feature_loss: FeatureLoss | None = None,
        student_layers: Sequence[str] = (),
        teacher_layers: Sequence[str] = (),
        teacher_cache_bytes: int = 0,
    ) -> None:
        if weights.feature and feature_loss is None:
            raise ValueError("a feature weight needs a feature loss (method)")
        if len(student_layers) != len(teacher_layers):
            raise ValueError(f"{len(student_layers)} student layers but {len(teacher_layers)} teacher layers to pair")
        self.student = student
        self.student_network: nn.Module = student  # what is called: the student, or its DDP wrapper
        self.teacher = teacher.eval().requires_grad_(False)
        self.weights = weights
        self.feature_loss = feature_loss if weights.feature else None
        self.feature_network: nn.Module | None = self.feature_loss  # or its DDP wrapper
        self.student_tap = FeatureTap(student, student_layers) if self.feature_loss else None
        self.teacher_tap = FeatureTap(teacher, teacher_layers) if self.feature_loss else None
        self.teacher_cache_bytes = teacher_cache_bytes
        #: What the cache holds, for the checkpoints: the budget, and (once :meth:`before_training` ran)
        #: whether the tapped features or their summaries fitted it.
        self.cache_record: dict[str, Any] = {"budget_bytes": teacher_cache_bytes}
        self._cached_outputs: torch.Tensor | None = None
        self._cached_features: list[torch.Tensor] | None = None
        self._cached_summarised = False

    @property
    def needs_teacher(self) -> bool:
        return bool(self.weights.imitation) or self.feature_loss is not None

    def modules(self) -> dict[str, nn.Module]:
        modules = {"model": self.student}
        if self.feature_loss is not None and any(True for _ in self.feature_loss.parameters()):
            modules["connectors"] = self.feature_loss
        return modules

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Run the student, and the connectors if the method has any, through ``wrap``."""
        self.student_network = wrap(self.student)
        if "connectors" in self.modules():
            self.feature_network = wrap(self.feature_loss)

    def close(self) -> None:
        """Remove the feature hooks from the student and the teacher, and drop the cache."""
        for tap in (self.student_tap, self.teacher_tap):
            if tap is not None:
                tap.remove()
        self._cached_outputs = self._cached_features = None

    def connector_parameter_count(self) -> int:
        return self.feature_loss.connector_parameter_count() if self.feature_loss is not None else 0

    @torch.no_grad()
    def before_training(self, data: SliceData, precision: Callable[[], ContextManager] = contextlib.nullcontext) -> None:
        """Run the teacher once over the training split and keep what the steps will need: its
        outputs, and its features, or their summaries where the method has them, when they fit."""
        self._cached_outputs = self._cached_features = None
        if not self.needs_teacher:
            return
        self.teacher.eval()
        first = data.batch(torch.arange(1, device=data.target.device))
        with precision():
            output = self.teacher(first.zero_filled, first.kspace, first.mask)
        probe, self._cached_summarised = self._teacher_features()
        feature_bytes = len(data) * sum(f[0].numel() * f.element_size() for f in probe)
        kept = probe if probe and feature_bytes <= self.teacher_cache_bytes else []
        # Filled in place, features in the training layout (the student's) whatever the pass runs in.
        layout = memory_format(self.teacher)
        outputs = torch.empty((len(data), *output.shape[1:]), dtype=output.dtype, device=output.device)
        features = [torch.empty((len(data), *f.shape[1:]), dtype=f.dtype, device=f.device,
                                memory_format=layout if f.dim() == 4 else torch.contiguous_format) for f in kept]
        with inference_layout(self.teacher):
            for batch in data.batches(inference_batch_size(data.target.device, data.target.shape)):
                with precision():
                    outputs.index_copy_(0, batch.index, self.teacher(batch.zero_filled, batch.kspace, batch.mask))
                tapped, _ = self._teacher_features()
                for cache, feature in zip(features, tapped):
                    cache.index_copy_(0, batch.index, feature)
        self._cached_outputs, self._cached_features = outputs, features or None
        self.cache_record["features_cached"] = bool(features)

    def _teacher_features(self) -> tuple[list[torch.Tensor], bool]:
        """The teacher pass's tapped features, summarised where the method can be: (tensors, summarised)."""
        features = self.teacher_tap.features() if self.teacher_tap else []
        summary = self.feature_loss.teacher_summary(features) if features else None
        return (features, False) if summary is None else (summary, True)

    def _teacher(self, batch: Batch) -> TeacherSignals:
        """The teacher's output and tapped features for ``batch``, from the cache when it has them."""
        cached = self._cached_outputs is not None and batch.index is not None
        if cached and (self.teacher_tap is None or self._cached_features is not None):
            features = [f[batch.index] for f in self._cached_features] if self._cached_features else []
            return TeacherSignals(self._cached_outputs[batch.index], features, self._cached_summarised)
        self.teacher.eval()
        with torch.no_grad():
            output = self.teacher(batch.zero_filled, batch.kspace, batch.mask)
            features = self.teacher_tap.features() if self.teacher_tap else []
        return TeacherSignals(output, features)

    def training_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        student_output = self.student_network(batch.zero_filled, batch.kspace, batch.mask)
        losses = {RECONSTRUCTION_TERM: F.l1_loss(student_output, batch.target)}
        total = self.weights.reconstruction * losses[RECONSTRUCTION_TERM]
        if self.needs_teacher:
            teacher = self._teacher(batch)
            if self.weights.imitation:
                losses["imitation"] = F.l1_loss(student_output, teacher.output)
                total = total + self.weights.imitation * losses["imitation"]
            if self.feature_loss is not None:
                losses[FEATURE_TERM] = self._feature_loss(teacher)
                total = total + self.weights.feature * losses[FEATURE_TERM]
        losses["total"] = total
        return losses

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        """What selects the checkpoint: the student's L1 to the target, or, in a stage that
        trains on the feature loss alone (KD-MRI's first stage), that feature loss."""
        output = self.student_network(batch.zero_filled, batch.kspace, batch.mask)
        if self.weights.reconstruction or self.feature_loss is None:
            if self.student_tap is not None:
                self.student_tap.features()  # drop this pass's features
            return F.l1_loss(output, batch.target)
        # Without an index the teacher runs live: the cache holds the training split, not this one.
        return self._feature_loss(self._teacher(Batch(batch.zero_filled, batch.kspace, batch.mask, batch.target)))

    def _feature_loss(self, teacher: TeacherSignals) -> torch.Tensor:
        student_features = self._for_feature_loss(self.student_tap.features())
        if teacher.summarised:
            return self.feature_network(student_features, teacher.features, summarised=True)
        return self.feature_network(student_features, self._for_feature_loss(teacher.features))

    def _for_feature_loss(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """``features`` as the feature loss takes them: as tapped, or as float32 copies."""
        if self.feature_loss.takes_low_precision_features:
            return list(features)
        return [f.float() for f in features]
