"""The comparisons a report makes, their seed-level effects, and a verdict on each paper claim.

A :class:`Comparison` is ``B − A`` between two stages (by name), paired by seed and volume. The
papers' claims (SFT-KD-Recon §4.3 and spec §6) are comparisons with a direction:

* the student trails the teacher (teacher − student > 0);
* Std-KD improves on the student, per method (Std-KD − student > 0);
* the SFT teacher is at least as good as the teacher (SFT teacher − teacher > 0);
* SFT-KD beats Std-KD, per method (SFT-KD − Std-KD > 0), which is the same as SFT-KD shrinking
  the gap to the teacher: ``(teacher − Std-KD) − (teacher − SFT-KD) = SFT-KD − Std-KD``.
* KD-MRI's procedure improves on the student (KD-MRI − student > 0; KD-MRI's results table).

The speed claim (the student is faster at inference) is timed, not trained: see
:mod:`kdrecon.report.speed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdrecon.evaluation.statistics import SeedEffect, seed_effect, seed_verdict
from kdrecon.report.paper_column import published_numbers
from kdrecon.report.results import ExperimentResults
from kdrecon.report.stage_names import SFT_TEACHER, STUDENT, TEACHER, Role, other_distillation, sft_kd, std_kd, student
from kdrecon.training.config import KD_MRI_ABLATION

#: KD-MRI's procedure (AT, then L1 with imitation): the stage its paper's claim is about.
KD_MRI = KD_MRI_ABLATION[-1].stage


@dataclass(frozen=True)
class Comparison:
    """``other − baseline``; ``expected_sign`` is the papers' direction (+1: other is better)."""

    baseline: str
    other: str
    text: str
    expected_sign: int = 1
    is_claim: bool = False


@dataclass(frozen=True)
class EffectRow:
    """One comparison's effect over ``paired_seeds``, the seeds both stages finished (``effect.per_seed``
    in that order)."""

    comparison: Comparison
    metric: str
    effect: SeedEffect
    labels: tuple[str, str]
    paired_seeds: tuple[int, ...]

    @property
    def verdict(self) -> str:
        return seed_verdict(self.effect, self.comparison.expected_sign)


def _present(results: ExperimentResults, *names: str) -> bool:
    """Whether every stage in ``names`` is complete for at least one seed they share."""
    seeds = [set(results.by_name(name)) for name in names]
    return bool(set.intersection(*seeds))


def paper_claims(results: ExperimentResults) -> list[Comparison]:
    """The claims this experiment can test, in the papers' order."""
    claims = []
    if _present(results, TEACHER, STUDENT):
        claims.append(Comparison(STUDENT, TEACHER, "the student trails the teacher", 1, True))
    methods = results.methods
    for method in methods:
        if _present(results, STUDENT, std_kd(method)):
            label = results.first(std_kd(method)).label
            claims.append(Comparison(STUDENT, std_kd(method), f"{label} improves on the student", 1, True))
    if _present(results, TEACHER, SFT_TEACHER):
        claims.append(Comparison(TEACHER, SFT_TEACHER, "the SFT teacher is at least as good as the teacher", 1, True))
    for method in methods:
        if _present(results, std_kd(method), sft_kd(method)):
            std, sft = results.first(std_kd(method)).label, results.first(sft_kd(method)).label
            claims.append(Comparison(
                std_kd(method), sft_kd(method), f"{sft} beats {std} and shrinks the teacher–student gap", 1, True,
            ))
    if _present(results, STUDENT, KD_MRI):
        claims.append(Comparison(STUDENT, KD_MRI, f"{results.first(KD_MRI).label} improves on the student", 1, True))
    return claims


def _ablation_comparisons(results: ExperimentResults) -> list[Comparison]:
    """Each ablation (another procedure or SFT loss) against the main stage it varies, and an
    SFT-KD ablation against the Std-KD of the same procedure (or the main Std-KD)."""
    comparisons = []
    variants = [r for r in results.stages if r.ablation_of and r.seed == min(results.by_name(r.name))]
    for result in variants:
        if _present(results, result.ablation_of, result.name):
            comparisons.append(Comparison(result.ablation_of, result.name, f"{result.variant} instead of the main setting"))
        if result.role == Role.SFT_KD:
            same = [v.name for v in variants if v.role == Role.STD_KD and v.variant == result.variant and v.method == result.method]
            std = same[0] if same else std_kd(result.method)
            if _present(results, std, result.name):
                comparisons.append(Comparison(std, result.name, f"SFT-KD over Std-KD, {result.variant}"))
    return comparisons


def all_comparisons(results: ExperimentResults) -> list[Comparison]:
    """The claims, then SFT-KD against the student and its random-init ablation, then the variants."""
    comparisons = paper_claims(results)
    for name in results.names((Role.SFT_KD,), variants=False):
        label = results.first(name).label
        if _present(results, STUDENT, name):
            comparisons.append(Comparison(STUDENT, name, f"{label} improves on the student"))
        random = sft_kd(results.first(name).method, "random")
        if _present(results, random, name):
            comparisons.append(Comparison(random, name, f"{label}: SFT initialisation over a random one"))
    return comparisons + kd_mri_comparisons(results) + _compression_comparisons(results) + _ablation_comparisons(results)


def kd_mri_comparisons(results: ExperimentResults) -> list[Comparison]:
    """KD-MRI's ablation: each part against the student, and both parts against each one alone."""
    parts = results.names((Role.KD_MRI,), variants=False)
    comparisons = [Comparison(STUDENT, name, f"{results.first(name).label} improves on the student")
                   for name in parts if name != KD_MRI and _present(results, STUDENT, name)]
    for alone in (recipe.stage for recipe in KD_MRI_ABLATION[:-1]):
        if _present(results, alone, KD_MRI):
            comparisons.append(Comparison(alone, KD_MRI, f"both parts against {results.first(alone).label}"))
    return comparisons


def _compression_comparisons(results: ExperimentResults) -> list[Comparison]:
    """Per sweep student size: each distilled student against its baseline, and SFT-KD against Std-KD."""
    comparisons = []
    for name in results.names((Role.SWEEP_STD_KD, Role.SWEEP_SFT_KD), variants=False):
        result = results.first(name)
        baseline = student(result.model)
        if result.role == Role.SWEEP_SFT_KD:
            std = other_distillation(name)
            if _present(results, std, name):
                comparisons.append(Comparison(std, name, f"{result.label} beats Std-KD"))
        if _present(results, baseline, name):
            comparisons.append(Comparison(baseline, name, f"{result.label} improves on the {result.model} student"))
    return comparisons


def effect_row(results: ExperimentResults, comparison: Comparison, metric: str, resamples: int) -> EffectRow:
    """``other − baseline`` of per-volume ``metric`` over the seeds both stages have."""
    baseline, other = results.by_name(comparison.baseline), results.by_name(comparison.other)
    seeds = sorted(set(baseline) & set(other))
    volumes = sorted(set.intersection(*(set(r.per_volume) for r in [*baseline.values(), *other.values()])))
    a = [[baseline[s].per_volume[v][metric] for v in volumes] for s in seeds]
    b = [[other[s].per_volume[v][metric] for v in volumes] for s in seeds]
    labels = (baseline[seeds[0]].label, other[seeds[0]].label)
    return EffectRow(comparison, metric, seed_effect(a, b, resamples), labels, tuple(seeds))


def published_effect(results: ExperimentResults, comparison: Comparison) -> float | None:
    """The papers' PSNR difference for ``comparison``, when both numbers are published and comparable with ours."""
    other, baseline = published_numbers(results, comparison.other), published_numbers(results, comparison.baseline)
    return None if other is None or baseline is None else other[0] - baseline[0]


def published_gap(results: ExperimentResults, stage: str) -> float | None:
    """The papers' teacher − ``stage`` PSNR gap, when both numbers are published and comparable with ours."""
    teacher, value = published_numbers(results, TEACHER), published_numbers(results, stage)
    return None if teacher is None or value is None else teacher[0] - value[0]
