"""Feature-distillation losses, one KD method per module behind one interface.

Every loss is a :class:`FeatureLoss`: built from the channel counts of the paired layers,
called as ``loss(student_features, teacher_features) -> scalar``, with a published default
weight ``default_weight``, a ``label`` for reports and ``connector_parameter_count()``. A method is
one module and one entry in :data:`FEATURE_LOSSES`; every list of method names (configs, the CLI,
the experiment graph, the report) derives from it. Names:

========  ==========================================================  ==============
name      method (module)                                             default weight
========  ==========================================================  ==============
at        attention transfer (attention_transfer)                     1000
at-paper  KD-MRI code's AT variant (attention_transfer_paper)         1
fitnets   FitNets hints + 1×1 regressors (fitnets)                    100
sp        similarity preserving (similarity_preserving)               3000
fsp       flow of solution procedure (flow_of_solution)               50
cc        correlation congruence (correlation_congruence)             0.003
nst       neuron selectivity transfer (neuron_selectivity)            50
ft        factor transfer (factor_transfer)                           200
pkt       probabilistic knowledge transfer (probabilistic_transfer)   30000
========  ==========================================================  ==============

Example:
    >>> import torch
    >>> loss = build_feature_loss("sp", [32, 32], [32, 32])
    >>> features = [torch.rand(4, 32, 8, 8), torch.rand(4, 32, 8, 8)]
    >>> float(loss(features, features))
    0.0
    >>> build_feature_loss("kd", [32], [32])
    Traceback (most recent call last):
    ...
    ValueError: unknown feature loss 'kd'; choose one of: at, at-paper, cc, fitnets, fsp, ft, nst, pkt, sp
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdrecon.distillation.losses.attention_transfer import AttentionTransfer
from kdrecon.distillation.losses.attention_transfer_paper import PaperAttentionTransfer
from kdrecon.distillation.losses.base import FeatureLoss
from kdrecon.distillation.losses.correlation_congruence import CorrelationCongruence
from kdrecon.distillation.losses.factor_transfer import FactorTransfer
from kdrecon.distillation.losses.fitnets import FitNets
from kdrecon.distillation.losses.flow_of_solution import FlowOfSolution
from kdrecon.distillation.losses.neuron_selectivity import NeuronSelectivity
from kdrecon.distillation.losses.probabilistic_transfer import ProbabilisticTransfer
from kdrecon.distillation.losses.similarity_preserving import SimilarityPreserving

FEATURE_LOSSES: dict[str, type[FeatureLoss]] = {
    cls.name: cls
    for cls in (
        AttentionTransfer,
        PaperAttentionTransfer,
        FitNets,
        SimilarityPreserving,
        FlowOfSolution,
        CorrelationCongruence,
        NeuronSelectivity,
        FactorTransfer,
        ProbabilisticTransfer,
    )
}


#: The method names, in the registry's order; every other list of methods derives from it.
METHOD_NAMES: tuple[str, ...] = tuple(FEATURE_LOSSES)
#: Attention transfer: KD-MRI's method, and the one both papers distil with when none is named.
ATTENTION_TRANSFER = AttentionTransfer.name
DEFAULT_METHOD = ATTENTION_TRANSFER


def method_label(name: str) -> str:
    """How reports name method ``name``, e.g. ``AT`` for ``at``."""
    return FEATURE_LOSSES[name].label


def feature_weight(name: str, given: float | None) -> float:
    """The weight β a distillation with method ``name`` uses: ``given``, else the method's published one."""
    return FEATURE_LOSSES[name].default_weight if given is None else given


def build_feature_loss(
    name: str, student_channels: Sequence[int], teacher_channels: Sequence[int], **options: Any
) -> FeatureLoss:
    """Build the feature loss registered as ``name`` (case-insensitive) with its ``options``."""
    key = str(name).lower()
    if key not in FEATURE_LOSSES:
        raise ValueError(f"unknown feature loss {name!r}; choose one of: {', '.join(sorted(FEATURE_LOSSES))}")
    return FEATURE_LOSSES[key](student_channels, teacher_channels, **options)


__all__ = [
    "FEATURE_LOSSES",
    "METHOD_NAMES",
    "AttentionTransfer",
    "CorrelationCongruence",
    "FactorTransfer",
    "FeatureLoss",
    "FitNets",
    "FlowOfSolution",
    "NeuronSelectivity",
    "PaperAttentionTransfer",
    "ProbabilisticTransfer",
    "SimilarityPreserving",
    "build_feature_loss",
    "feature_weight",
    "method_label",
]
