"""The experiment report, laid out like the papers, rebuilt from what a run directory holds.

:func:`build_report` reads the run directory (:mod:`kdrecon.report.results`), and writes
``report.md``, a self-contained ``report.html`` (figures embedded, no network needed) and
``figures/*.png``. Nothing is retrained or re-evaluated; only inference speed is measured anew
(one network per architecture, all in alternation, :mod:`kdrecon.report.speed`). Each section is one function
returning typed blocks (:mod:`kdrecon.report.document`). A study still running gets a report of
its complete stages, with the pending ones listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kdrecon.data.dataset import load_split
from kdrecon.data.layout import atomic_path
from kdrecon.data.task import RECONSTRUCTION
from kdrecon.distillation.losses import method_label
from kdrecon.evaluation.evaluate import baseline_label, baselines
from kdrecon.evaluation.statistics import (ABOVE, BELOW, CONTRADICTED, INSIDE, NO_SPREAD_BETWEEN_SEEDS, NOT_RESOLVED,
                                          REPRODUCED, SEED_VARIANCE_NOT_COVERED, SeedEffect, paired_wilcoxon,
                                          position_in_interval, unresolved_reason, verdict)
from kdrecon.report import figures
from kdrecon.report.claims import EffectRow, all_comparisons, effect_row, kd_mri_comparisons, paper_claims, published_effect, published_gap
from kdrecon.report.document import Block, Code, Document, Heading, Image, Paragraph, Table
from kdrecon.report.feature_weights import feature_shares
from kdrecon.report.paper_column import column_heading, paper_note, published_inference_ms, published_text
from kdrecon.report.published import PUBLISHED_SUPER_RESOLUTION_GAPS
from kdrecon.report.results import MAIN_ROLES, ExperimentResults, StageResult, load_results
from kdrecon.report.run_layout import read_history
from kdrecon.report.speed import NetworkTimes, SpeedComparison, time_networks
from kdrecon.report.stage_names import SFT_TEACHER, STUDENT, TEACHER, Role, is_sft_kd, sft_kd, std_kd
from kdrecon.training.trainer import resolve_device


# --- numbers over seeds ------------------------------------------------------------------------


def _seed_values(results: dict[int, StageResult], metric: str) -> list[float]:
    """The volume-mean of ``metric`` for each seed."""
    return [results[seed].metrics[metric]["mean"] for seed in sorted(results)]


def _over_seeds(results: dict[int, StageResult], metric: str, digits: int) -> str:
    """Mean over seeds (± sd over seeds when there are several), e.g. ``32.10 ± 0.08 (3)``."""
    values = _seed_values(results, metric)
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1)"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f} ({len(values)})"


def _interval(interval: tuple[float, float] | None, digits: int) -> str:
    return SEED_VARIANCE_NOT_COVERED if interval is None else f"[{interval[0]:+.{digits}f}, {interval[1]:+.{digits}f}]"


def _bootstrap(effect: SeedEffect, digits: int) -> str:
    """The hierarchical bootstrap interval; with one seed it resamples volumes only, and says so."""
    text = _interval(effect.bootstrap_interval, digits)
    return text if effect.seeds > 1 else f"{text} (volumes only, 1 seed)"


def _per_seed(row: EffectRow, digits: int) -> str:
    """``42: +0.17, 43: +0.26``: each seed's effect beside its seed."""
    return ", ".join(f"{seed}: {x:+.{digits}f}" for seed, x in zip(row.paired_seeds, row.effect.per_seed))


def _digits(metric: str) -> int:
    return 2 if metric == "psnr" else 4


def _effects(results: ExperimentResults, comparisons: list, metric: str) -> list[EffectRow]:
    resamples = results.manifest["config"]["report"]["bootstrap_resamples"]
    return [effect_row(results, comparison, metric, resamples) for comparison in comparisons]


# --- sections ----------------------------------------------------------------------------------


def _precisions(results: ExperimentResults) -> list[str]:
    """The precisions the stages trained in (``auto`` resolved, as each ``stage.json`` records it)."""
    configured = results.manifest["config"]["precision"]
    return sorted({r.state.get("precision", configured) for r in results.stages})


def _training_paths(results: ExperimentResults) -> list[str]:
    """How the stages trained, e.g. ``fp32 NCHW``: precision and layout as each ``stage.json`` records
    them, each from the configuration where it was set (not ``auto``) and not recorded."""
    config = results.manifest["config"]
    configured_layout = config["channels_last"] if isinstance(config["channels_last"], bool) else None
    configured_precision = None if config["precision"] == "auto" else config["precision"]
    paths = set()
    for result in results.stages:
        layout = result.state.get("channels_last", configured_layout)
        precision = result.state.get("precision", configured_precision)
        layout_text = "layout not recorded" if layout is None else "channels-last" if layout else "NCHW"
        paths.add(f"{layout_text} (precision not recorded)" if precision is None else f"{precision} {layout_text}")
    return sorted(paths)


def _degradation(task: str, acceleration: str) -> str:
    """What the networks undo: ``4x undersampling``, or ``4x super-resolution`` (a low-resolution input)."""
    return f"{acceleration} undersampling" if task == RECONSTRUCTION else f"{acceleration} super-resolution"


def _header(results: ExperimentResults) -> list[Block]:
    manifest, first = results.manifest, results.stages[0].summary
    blocks: list[Block] = [
        Heading(f"kdrecon report: {manifest['name']}", 1),
        Paragraph(
            f"Dataset {first['dataset']}, {_degradation(results.task, first['acceleration'])}, {first['split']} split: "
            f"{first['volumes']} volumes, {first['slices']} slices. Metrics: {first['conventions']}. "
            f"Device {manifest['device']}, precision {', '.join(_precisions(results))}, "
            f"seeds {', '.join(map(str, sorted(results.seeds)))}; "
            "every number below says how many seeds it rests on, in brackets."
        ),
        Paragraph(paper_note(results)),
    ]
    own_paths = _training_paths(results.own())
    for record, seeds in results.records.items():
        paths = _training_paths(results.from_record(record))
        blocks.append(Paragraph(
            f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} pooled from the record {record}: stages "
            "whose fingerprints equal those this experiment gives them, so the same settings, data and budget. A record "
            "keeps per-volume scores and training histories; the per-slice tests, figures and timings below use this "
            f"run's own seeds. Trained in {', '.join(paths)}; this run's own stages in {', '.join(own_paths) or '(none complete)'}"
            + ("." if paths == own_paths or not own_paths else
               ": the two differ, and float rounding follows the kernels that ran, so the pooled seeds mix two "
               "training paths (each seed's stages share one).")
        ))
    if results.pending:
        blocks.append(Paragraph(
            f"Incomplete: {len(results.pending)} of {len(manifest['stages'])} stages are not finished "
            f"({', '.join(results.pending)}); this report covers the complete ones. Run 'kdrecon run' again to continue."
        ))
    return blocks


def _claim_cells(row: EffectRow, results: ExperimentResults) -> list[str]:
    comparison, effect = row.comparison, row.effect
    paper = published_effect(results, comparison)
    paper_text = "—" if paper is None else f"{paper:+.2f}"
    gaps = [published_gap(results, comparison.baseline), published_gap(results, comparison.other)]
    if is_sft_kd(comparison.other) and None not in gaps:
        paper_text += f" (gap {gaps[0]:.2f} → {gaps[1]:.2f})"
    detectable = "—" if effect.detectable is None else f"{effect.detectable:.2f}"
    return [comparison.text, paper_text, f"{effect.mean:+.2f} ({effect.seeds})", _interval(effect.interval, 2),
            _bootstrap(effect, 2), detectable, _verdict_text(row), _paper_position_text(paper, row)]


def _paper_position_text(paper: float | None, row: EffectRow) -> str:
    """Where the published effect lies against our t interval; — without one of them, or where the
    seeds cannot estimate training variance."""
    if paper is None or row.effect.interval is None or unresolved_reason(row.effect) is not None:
        return "—"
    # Compared as printed: the paper's numbers have two decimals, and so has the interval shown beside them.
    low, high = (round(bound, 2) for bound in row.effect.interval)
    return position_in_interval(round(paper, 2), (low, high))


def _verdict_text(row: EffectRow) -> str:
    reason = unresolved_reason(row.effect)
    if reason is not None:
        return f"{NOT_RESOLVED} ({reason})"
    return row.verdict if row.verdict != NOT_RESOLVED else f"{NOT_RESOLVED} at this budget"


def _gap_text(results: ExperimentResults, row: EffectRow) -> str:
    """Our teacher − Std-KD and teacher − SFT-KD gaps, mean over the seeds that have all three."""
    teacher = results.by_name(TEACHER)
    std, sft = results.by_name(row.comparison.baseline), results.by_name(row.comparison.other)
    seeds = sorted(set(teacher) & set(std) & set(sft))
    if not seeds:
        return ""

    def gap(stage: dict[int, StageResult]) -> float:
        return float(np.mean([teacher[s].metrics["psnr"]["mean"] - stage[s].metrics["psnr"]["mean"] for s in seeds]))

    return f" (gap {gap(std):.2f} → {gap(sft):.2f}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''})"


def _claims_section(results: ExperimentResults, speed: SpeedComparison | None) -> list[Block]:
    rows = []
    for row in _effects(results, paper_claims(results), "psnr"):
        cells = _claim_cells(row, results)
        if is_sft_kd(row.comparison.other):
            cells[2] += _gap_text(results, row)
        rows.append(cells)
    if speed is not None:
        rows.append(_speed_row(speed, published_inference_ms(results)))
    blocks: list[Block] = [Heading("Claims of the papers: reproduced, contradicted or not resolved")]
    if not rows:
        return blocks + [Paragraph("This experiment has no pair of stages that a claim of the papers compares.")]
    blocks.append(Table(
        ["claim", f"paper ({column_heading(results)}, dB)", "ours: mean effect (seeds)", "95% CI over seeds (t)",
         "95% CI, hierarchical bootstrap", "smallest detectable effect", "verdict",
         "paper's effect against our t CI"], rows,
    ))
    blocks.append(Paragraph(
        "Effect = PSNR of the better-claimed model minus the other, per validation volume, averaged per seed, "
        "then over seeds (paired by seed: a distilled student of seed s learned from the teacher of seed s). "
        f"Verdict: {REPRODUCED} when the t interval over seeds excludes 0 in the papers' direction, {CONTRADICTED} "
        f"when it excludes 0 in the other direction, {NOT_RESOLVED} when it contains 0, or when the seeds "
        f"cannot estimate training variance ({SEED_VARIANCE_NOT_COVERED}; {NO_SPREAD_BETWEEN_SEEDS}, e.g. deterministic "
        "training or stages copied between seeds, whose t interval has zero width). The bootstrap resamples "
        "seeds, then volumes within each seed; with few seeds it is narrower than the t interval, and volumes of "
        "one subject (its cardiac phases) are not independent, so the verdict uses the t interval. Smallest detectable effect: two-sided α = 0.05 at power 0.8 for the "
        "observed spread between seeds. The verdict is about the direction; the last column says whether the "
        f"paper's point estimate (a single run, on its data and budget) lies {INSIDE} our t interval, or {ABOVE} or "
        f"{BELOW} it, whatever the verdict on the direction. The SFT-KD row's gap is teacher − student for Std-KD → SFT-KD, the same "
        "difference seen from the teacher."
    ))
    return blocks


def _speed_row(speed: SpeedComparison, paper: tuple[float, float] | None) -> list[str]:
    """The speed claim; ``paper``: the paper's teacher and student times, where it timed these networks."""
    low, high = speed.ratio_range
    return [
        "the student is faster than the teacher at inference (teacher time / student time > 1)",
        "—" if paper is None else f"{paper[0] / paper[1]:.2f}× ({paper[0]} vs {paper[1]} ms, GPU)",
        f"{speed.ratio:.2f}× ({speed.teacher_ms:.2f} vs {speed.student_ms:.2f} ms; ratio over "
        f"{speed.rounds} alternating rounds, 2.5–97.5%: {low:.2f}–{high:.2f}×)",
        "— (timed, not trained)", "—", "—",
        verdict((low - 1, high - 1), 1) + " (the whole 2.5–97.5% range of the ratio against 1)",
        "—",
    ]


def _effects_section(results: ExperimentResults) -> list[Block]:
    comparisons = all_comparisons(results)
    if not comparisons:
        return []
    rows, figure_rows = [], []
    for metric in ("psnr", "ssim"):
        for row in _effects(results, comparisons, metric):
            digits = _digits(metric)
            rows.append([f"{row.labels[1]} − {row.labels[0]}", metric.upper(), f"{row.effect.mean:+.{digits}f}",
                         row.effect.seeds, _per_seed(row, digits),
                         _interval(row.effect.interval, digits), _bootstrap(row.effect, digits)])
            if metric == "psnr":
                figure_rows.append(row)
    path = results.layout.figures / "seed-effects.png"
    figures.seed_effects(path, [(f"{r.labels[1]} − {r.labels[0]}", r.effect) for r in figure_rows])
    return [
        Heading("Effects over seeds (model B − model A)"),
        Table(["B − A", "metric", "mean over seeds", "seeds", "per seed (seed: effect)", "95% CI over seeds (t)",
               "95% CI, hierarchical bootstrap"], rows),
        Image(path, "PSNR effect of every comparison: one dot per seed, the t interval over seeds as a bar "
                    "(none with one seed), zero dashed"),
    ]


def _main_table(results: ExperimentResults) -> list[Block]:
    teacher = results.by_name(TEACHER)
    rows = [[label, f"{values['psnr']['mean']:.2f}", f"{values['ssim']['mean']:.4f}", "", "—"]
            for label, values in results.baselines()]
    for name in results.names(MAIN_ROLES, variants=True):
        stage = results.by_name(name)
        gap = "" if name == TEACHER else _gap_cell(teacher, stage, "+")
        paper_text = "—" if results.first(name).variant else published_text(results, name)
        rows.append([results.first(name).label, _over_seeds(stage, "psnr", 2), _over_seeds(stage, "ssim", 4), gap, paper_text])
    return [
        Heading("Reconstruction quality (papers' Table 1)"),
        Table(["model", "PSNR (dB)", "SSIM", "teacher − model PSNR (dB), mean over the seeds both have (seeds)",
               f"paper PSNR / SSIM ({column_heading(results)})"], rows),
        Paragraph("Each cell: mean over seeds of the mean over validation volumes, ± the standard deviation between "
                  "seeds, (number of seeds). The baselines above the networks are the same for every seed (in "
                  "super-resolution the LR input is the low-resolution image on the full grid, its spectrum "
                  "zero-padded)."),
    ]


def _gap_cell(teacher: dict[int, StageResult], stage: dict[int, StageResult], sign: str = "") -> str:
    """Mean over shared seeds of teacher − ``stage`` PSNR and their number, e.g. ``0.30 (3)``; "" when none."""
    seeds = sorted(set(teacher) & set(stage))
    if not seeds:
        return ""
    gap = np.mean([teacher[s].metrics["psnr"]["mean"] - stage[s].metrics["psnr"]["mean"] for s in seeds])
    return f"{gap:{sign}.2f} ({len(seeds)})"


def _cell(results: ExperimentResults, name: str, cell: Any) -> str:
    """``cell(name)``, or ``—`` when stage ``name`` has no complete seed."""
    return cell(name) if results.by_name(name) else "—"


def _pair_text(results: ExperimentResults, first: str, second: str, cell: Any) -> str:
    """``A → B`` of a cell function over two stages, ``—`` where one is missing."""
    return f"{_cell(results, first, cell)} → {_cell(results, second, cell)}"


def _per_method_section(results: ExperimentResults) -> list[Block]:
    """Papers' Table 9 layout: per method its Std-KD and SFT-KD student, their difference over seeds, the gap."""
    if results.task == RECONSTRUCTION or not results.methods:
        return []
    teacher = results.by_name(TEACHER)
    effects = {row.comparison.other: row for row in _effects(results, paper_claims(results), "psnr")}

    def quality(name: str) -> str:
        return f"{_over_seeds(results.by_name(name), 'psnr', 2)} / {_over_seeds(results.by_name(name), 'ssim', 4)}"

    def gap(name: str) -> str:
        return _gap_cell(teacher, results.by_name(name)) or "—"

    def paper(name: str) -> str:
        return published_text(results, name)

    rows = [["Teacher", _pair_text(results, TEACHER, SFT_TEACHER, quality), "", "", _pair_text(results, TEACHER, SFT_TEACHER, paper)],
            ["Student", _cell(results, STUDENT, quality), "", _cell(results, STUDENT, gap), paper(STUDENT)]]
    for method in results.methods:
        std, sft = std_kd(method), sft_kd(method)
        effect = effects.get(sft)
        difference = "" if effect is None else f"{effect.effect.mean:+.2f} {_interval(effect.effect.interval, 2)} ({effect.effect.seeds})"
        rows.append([method_label(method), _pair_text(results, std, sft, quality), difference,
                     _pair_text(results, std, sft, gap), _pair_text(results, std, sft, paper)])
    return [
        Heading("Std-KD → SFT-KD per method (papers' Table 9)"),
        Table(["method", "PSNR (dB) / SSIM: Std-KD → SFT-KD (teacher → SFT teacher)",
               "SFT-KD − Std-KD PSNR: mean, 95% CI over seeds (seeds)", "teacher − student PSNR gap (dB) (seeds): Std-KD → SFT-KD",
               f"paper PSNR / SSIM: Std-KD → SFT-KD ({column_heading(results)})"], rows),
        Paragraph("Cells: mean over seeds ± the standard deviation between seeds (number of seeds). The gap is the "
                  "teacher's PSNR minus the student's, averaged over the seeds both have; the paper reports it "
                  "shrinking from the plain student to Std-KD to SFT-KD ("
                  + " → ".join(f"{gap:.2f}" for gap in PUBLISHED_SUPER_RESOLUTION_GAPS) + " dB)."),
    ]


def _share_text(values: list[float]) -> str:
    mean = sum(values) / len(values)
    spread = f" ({min(values):.3g}–{max(values):.3g})" if len(values) > 1 else ""
    return f"{mean:.3g}{spread} ({len(values)})"


def _feature_weight_section(results: ExperimentResults) -> list[Block]:
    """β of each feature distillation and how much its term weighed against L1 in training."""
    shares = feature_shares(results)
    if not shares:
        return []
    rows = [[results.first(share.name).label, f"{share.weight:g}", _share_text(share.first_epoch),
             _share_text(share.last_epoch)] for share in shares]
    return [
        Heading("Feature-loss weights: the feature term against L1 in training"),
        Table(["distillation", "β", "β · feature loss / L1, first epoch: mean (min–max over seeds) (seeds)",
               "last epoch"], rows),
        Paragraph("Epoch means of the two terms from each stage's training history. A share far above 1 trains "
                  "the student mostly on the feature loss, far below 1 leaves the feature loss without effect: a "
                  "method's published β was set against its own task's loss (classification losses near 1), so "
                  "an effect measured here is the method's at this β. `scripts/feature_loss_balance.py` measures "
                  "the share at the start of a distillation and the β that would match another method's."),
    ]


def _kd_mri_section(results: ExperimentResults) -> list[Block]:
    parts = results.names((Role.KD_MRI,), variants=False)
    if not parts:
        return []
    versus_student = [c for c in paper_claims(results) + kd_mri_comparisons(results) if c.baseline == STUDENT and c.other in parts]
    effects = {row.comparison.other: row for row in _effects(results, versus_student, "psnr")}
    rows = []
    for name in [STUDENT, *parts, TEACHER]:
        if results.first(name) is None:
            continue
        effect = effects.get(name)
        versus = "" if effect is None else f"{effect.effect.mean:+.2f} {_interval(effect.effect.interval, 2)} ({effect.effect.seeds})"
        rows.append([results.first(name).label, _over_seeds(results.by_name(name), "psnr", 2),
                     _over_seeds(results.by_name(name), "ssim", 4), versus, published_text(results, name)])
    return [
        Heading("KD-MRI's ablation: attention transfer, imitation, both"),
        Table(["model", "PSNR (dB)", "SSIM", "PSNR − student: mean, 95% CI over seeds (seeds)",
               f"paper PSNR / SSIM ({column_heading(results)})"], rows),
        Paragraph("Std-KD from the teacher at equal total epochs. AT alone: the feature stage, then L1; imitation "
                  "alone: half L1 to the target, half L1 to the teacher's output; both: KD-MRI's procedure."),
    ]


def _quality_table(results: ExperimentResults) -> list[Block]:
    rows = [[label] + [f"{values[m]['mean']:.4f}" for m in ("hfn", "vif", "nmse")] for label, values in results.baselines()]
    for name in results.names(MAIN_ROLES, variants=True):
        rows.append([results.first(name).label] + [_over_seeds(results.by_name(name), m, 4) for m in ("hfn", "vif", "nmse")])
    return [Heading("High-frequency error and visual information fidelity (papers' Tables 3 and 5)"),
            Table(["model", "HFN (lower is better)", "VIF", "NMSE"], rows)]


def _compression_names(results: ExperimentResults) -> list[str]:
    """Table 8's rows: the teacher, then per student size (largest first) its baseline and distilled students."""
    students = [r for r in (results.first(n) for n in results.names((Role.STUDENT, Role.SWEEP), variants=False))]
    names = [TEACHER] if results.first(TEACHER) else []
    for student in sorted(students, key=lambda r: -r.state["parameters"]):
        distilled = ((Role.STD_KD, Role.SFT_KD) if student.role == Role.STUDENT
                     else (Role.SWEEP_STD_KD, Role.SWEEP_SFT_KD))
        names.append(student.name)
        names += [n for n in results.names(distilled, variants=False) if results.first(n).model == student.model]
    return names


def _timing_cells(times: NetworkTimes | None, teacher: StageResult | None, model: str) -> list[str]:
    """ms per slice of ``model`` and the teacher's time over it, both from the alternated timing."""
    if times is None or model not in times.seconds:
        return ["—", "—"]
    if teacher is None:
        return [f"{times.milliseconds(model):.2f}", "—"]
    speed = times.comparison(teacher.model, model)
    low, high = speed.ratio_range
    return [f"{times.milliseconds(model):.2f}", f"{speed.ratio:.2f}× ({low:.2f}–{high:.2f}×)"]


def _size_table(results: ExperimentResults, times: NetworkTimes | None) -> list[Block]:
    """Table 8; none when no teacher or student is finished (e.g. a run of SFT teachers alone)."""
    teacher = results.first(TEACHER)
    rows = []
    for name in _compression_names(results):
        first, stage = results.first(name), results.by_name(name)
        compression = "" if teacher is None else f"{1 - first.state['parameters'] / teacher.state['parameters']:.0%}"
        rows.append([first.label, f"{first.state['parameters']:,}", compression, f"{first.state['macs_per_slice'] / 1e9:.3f}",
                     *_timing_cells(times, teacher, first.model), _over_seeds(stage, "psnr", 2),
                     _over_seeds(stage, "ssim", 4), _over_seeds(stage, "hfn", 4), _over_seeds(stage, "vif", 4),
                     published_text(results, name)])
    if not rows:
        return []
    blocks: list[Block] = [
        Heading("Size, cost and quality per network (papers' Table 8)"),
        Table(["network", "parameters", "compression (parameters saved)", "GMAC per slice",
               "inference (ms per slice)", "teacher time ÷ this network's (2.5–97.5 %)", "PSNR (dB)", "SSIM",
               "HFN", "VIF", f"paper PSNR / SSIM ({column_heading(results)})"], rows),
        Paragraph("Per student size: the baseline, then each distilled student (Std-KD from the teacher, SFT-KD from "
                  "an SFT teacher trained with that student's branches). MACs count the convolutions (the FFTs of data "
                  "consistency are left out)."),
    ]
    if times is not None:
        blocks.append(Paragraph(
            f"Inference is timed when this report is built, one network per architecture, all in alternation "
            f"({times.setting}): the median per slice, and the teacher's time over the network's round by round "
            f"(median, 2.5–97.5 percentiles over rounds). Distilled students share their baseline's architecture "
            f"and so its time."
        ))
    return blocks


def _wilcoxon_section(results: ExperimentResults) -> list[Block]:
    rows = []
    for comparison in paper_claims(results):
        other, baseline = results.by_name(comparison.other), results.by_name(comparison.baseline)
        for seed in sorted(set(other) & set(baseline)):
            keys = sorted(set(other[seed].per_slice) & set(baseline[seed].per_slice))
            test = paired_wilcoxon([other[seed].per_slice[k]["psnr"] for k in keys],
                                   [baseline[seed].per_slice[k]["psnr"] for k in keys])
            rows.append([f"{other[seed].label} vs {baseline[seed].label}", seed, f"{test['mean_difference']:+.4f}",
                         f"{test['p_value']:.3g}", "yes" if test["significant"] else "no", _slices_text(test)])
    if not rows:
        return []
    return [
        Heading("Within-run tests: paired Wilcoxon signed-rank per slice (α = 0.05)"),
        Table(["B vs A (PSNR)", "seed", "mean difference B − A", "p-value", "p < 0.05", "slices tested"], rows),
        Paragraph("Each test takes the slices of one training run per stage as its sample, as the papers do: it says "
                  "whether two networks of one seed differ on these slices, not whether retraining with another seed "
                  "would give the same difference. The effects over seeds above answer that question."),
    ]


def _slices_text(test: dict[str, Any]) -> str:
    """The slices a Wilcoxon test used, and those it dropped for a zero difference."""
    zeros = test["zero_differences"]
    return str(test["slices"]) + (f" ({zeros} with zero difference dropped)" if zeros else "")


def _figures_section(results: ExperimentResults) -> list[Block]:
    config, first = results.manifest["config"], results.stages[0].summary
    seed = results.stages[0].seed
    # The teacher, the student and the first method's two distilled students.
    method = results.methods[:1]
    names = [TEACHER, STUDENT] + [name(m) for m in method for name in (std_kd, sft_kd)]
    shown = [results.by_name(n)[seed] for n in names if seed in results.by_name(n)]
    data = load_split(first["dataset"], first["split"], first["acceleration"], results.task, results.image)
    inputs = baselines(data)
    blocks: list[Block] = [Heading(f"Reconstructions, seed {seed} (papers' Figure 3)")]
    for volume in data.volumes[: config["report"]["figure_slices"]]:
        index = (volume.start + volume.stop) // 2
        images = {baseline_label(kind, results.task): image[index] for kind, image in inputs.items()}
        images.update({r.label: r.files.reconstruction(volume.name)[index - volume.start] for r in shown})
        path = results.layout.figures / f"reconstruction-{volume.name}.png"
        title = f"{volume.name}, slice {index - volume.start}"
        figures.reconstruction_figure(path, data.target[index, 0].numpy(), images, title, config["report"]["zoom"])
        blocks.append(Image(path, f"{title} (middle slice): images, zoomed inset and |error| on a shared scale"))
    return blocks + _distribution_figures(results, seed)


def _distribution_figures(results: ExperimentResults, seed: int) -> list[Block]:
    stages = [r for r in results.stages if r.seed == seed]
    keys = sorted(stages[0].per_slice)
    values: dict[str, dict[str, list[float]]] = {m: {} for m in ("psnr", "ssim")}
    curves, feature_curves = {}, {}
    for result in stages:
        for metric in values:
            values[metric][result.label] = [result.per_slice[k][metric] for k in keys]
        if result.files.feature_history.is_file():
            feature_curves[result.label] = read_history(result.files.feature_history)
        curves[result.label] = read_history(result.files.history)
    figures.metric_boxplots(results.layout.figures / "per-slice-metrics.png", values)
    figures.validation_curves(results.layout.figures / "validation-curves.png", curves, feature_curves)
    return [
        Heading(f"Per-slice distributions and training curves, seed {seed} (papers' Figure 4)"),
        Image(results.layout.figures / "per-slice-metrics.png", "PSNR and SSIM of every validation slice (box: quartiles; triangle: mean)"),
        Image(results.layout.figures / "validation-curves.png",
              "Validation loss per epoch of every stage: L1 of the trained network (for a distilled student, of its "
              "final stage) and, for KD-MRI's feature stages, the feature loss relative to its first epoch"),
    ]


def _provenance(results: ExperimentResults) -> list[Block]:
    manifest = results.manifest
    rows = [[r.id, r.state["fingerprint"], r.state.get("best_epoch", ""), len(read_history(r.files.history)[0]),
             f"{r.state.get('wall_seconds', 0):.0f}", r.state.get("device", ""), r.state.get("finished", "")]
            for r in results.stages]
    return [
        Heading("How these numbers were made"),
        Paragraph(f"kdrecon {manifest['kdrecon']}, PyTorch {manifest['torch']}, Python {manifest['python']}, "
                  f"{manifest['platform']}. Checkpoint selection: {manifest['checkpoint_selection']}."),
        Table(["stage", "fingerprint", "best epoch", "final-stage epochs", "training wall time, all stages (s)", "device", "finished"], rows),
        Code(yaml.safe_dump(manifest["config"], sort_keys=False)),
    ]


def _time_networks(results: ExperimentResults) -> NetworkTimes | None:
    """One network per architecture of the size table (those finished), timed together; None if none is."""
    networks = {}
    for name in _compression_names(results):
        first = results.first(name)
        networks.setdefault(first.model, first.files)
    if not networks:
        return None
    config, first = results.manifest["config"], results.stages[0].summary
    data = load_split(first["dataset"], first["split"], first["acceleration"], results.task, results.image)
    report = config["report"]
    return time_networks(networks, data, report["timing_batch_size"], report["timing_rounds"],
                         resolve_device(config["device"]))


def build_report(run_dir: Path, recorded: Sequence[StageResult] = ()) -> Path:
    """Write ``report.md``, ``report.html`` and ``figures/`` for the experiment in ``run_dir``, pooling
    the ``recorded`` stages of other seeds (:func:`kdrecon.experiment.records.recorded_stages`)."""
    results = load_results(Path(run_dir)).with_recorded(list(recorded))
    own = results.own()
    times = _time_networks(own)
    teacher, student = results.first(TEACHER), results.first(STUDENT)
    speed = None
    if times is not None and teacher is not None and student is not None:
        speed = times.comparison(teacher.model, student.model)
    document = Document()
    for section in (_header(results), _claims_section(results, speed), _main_table(results),
                    _per_method_section(results), _effects_section(results), _feature_weight_section(results),
                    _kd_mri_section(results),
                    _quality_table(results), _size_table(results, times), _wilcoxon_section(own),
                    _figures_section(own), _provenance(results)):
        document.extend(section)
    layout = results.layout
    with atomic_path(layout.report_markdown) as temporary:
        temporary.write_text(document.markdown(layout.root))
    with atomic_path(layout.report_html) as temporary:
        temporary.write_text(document.html(f"kdrecon report: {results.manifest['name']}"))
    return layout.report_markdown


def summary_rows(results: ExperimentResults) -> dict[str, dict[str, Any]]:
    """``{label: model_metrics}`` of the first seed of every stage, for a plain-text table."""
    rows = {label: values for label, values in results.baselines()}
    rows.update({results.first(name).label: results.first(name).metrics for name in results.names()})
    return rows
