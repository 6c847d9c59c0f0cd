"""How much a distillation's feature loss weighed against its L1 loss while it trained.

A feature method's weight β is published against the loss of the task it was made for (a
classification loss near 1 for RepDistiller's and mdistiller's weights); against an MRI network's L1
of a few hundredths the same β can make the feature term dominate the student's training or vanish
from it. Each distillation's training history holds the epoch means of both terms, so the share

.. math::

    s = \\frac{\\beta \\, \\overline{L_\\mathrm{feature}}}{\\overline{L_1}}

is read back for the first and the last epoch without rerunning anything: ``s ≫ 1`` trains the
student mostly on the feature loss, ``s ≪ 1`` leaves the feature loss without effect. A two-stage
distillation trains on the feature loss alone, then on L1: neither run mixes the two, and its
stage has no share.

Example:
    >>> FeatureShare("std-kd-sp", "sp", 3000.0, {42: (93.0, 20.0)}).first_epoch
    [93.0]
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from kdrecon.distillation.distiller import FEATURE_TERM, RECONSTRUCTION_TERM
from kdrecon.distillation.losses import FEATURE_LOSSES, feature_weight
from kdrecon.report.results import ExperimentResults, StageResult
from kdrecon.training.config import read_yaml
from kdrecon.training.supervised import CONFIG_FILE
from kdrecon.training.trainer import history_column


@dataclass(frozen=True)
class FeatureShare:
    """β of one distillation stage and its share ``s`` per seed: ``{seed: (first epoch, last epoch)}``."""

    name: str
    method: str
    weight: float
    per_seed: dict[int, tuple[float, float]]

    @property
    def first_epoch(self) -> list[float]:
        return [first for first, _ in self.per_seed.values()]

    @property
    def last_epoch(self) -> list[float]:
        return [last for _, last in self.per_seed.values()]


def _shares(history: Path, weight: float) -> tuple[float, float] | None:
    """``s`` of the first and last epoch of a training history, or None where it has no L1 or feature term."""
    if not history.is_file():
        return None
    with open(history, newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        shares = [weight * float(row[history_column(FEATURE_TERM)]) / float(row[history_column(RECONSTRUCTION_TERM)])
                  for row in rows]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return (shares[0], shares[-1]) if shares else None


def _weight(result: StageResult) -> float | None:
    """β the stage trained with, from its config (the method's published weight where none was given)."""
    config = result.files.directory / CONFIG_FILE
    if result.method not in FEATURE_LOSSES or not config.is_file():
        return None
    return feature_weight(result.method, read_yaml(config).get("feature_weight"))


def feature_shares(results: ExperimentResults) -> list[FeatureShare]:
    """Each feature distillation stage (main stages and variants) with its β and share per seed."""
    shares = []
    for name in results.names():
        per_seed, stage_weight = {}, 0.0
        for seed, result in sorted(results.by_name(name).items()):
            weight = _weight(result)
            share = None if weight is None else _shares(result.files.history, weight)
            if share is not None:  # β from a seed that has a share (one stage: the same β in every seed)
                per_seed[seed], stage_weight = share, weight
        if per_seed:
            shares.append(FeatureShare(name, results.first(name).method, stage_weight, per_seed))
    return shares
