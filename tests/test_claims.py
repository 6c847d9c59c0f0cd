"""The report's comparisons and claims on fabricated results (no training): which stages a claim
pairs, over which seeds, and the numbers it prints, against hand and SciPy computations."""

from pathlib import Path

import numpy as np
from scipy import stats

from kdrecon.evaluation.statistics import REPRODUCED
from kdrecon.report.build import _main_table
from kdrecon.report.claims import all_comparisons, effect_row, paper_claims, published_effect
from kdrecon.report.results import ExperimentResults, StageResult
from kdrecon.report.run_layout import RunLayout

VOLUMES = ("v0", "v1")
ROLES = {"teacher": ("teacher", "Teacher D5C5", "D5C5"), "student": ("student", "Student D3C5", "D3C5"),
         "std-kd-at": ("std-kd", "AT Std-KD", "D3C5"), "sft-kd-at": ("sft-kd", "AT SFT-KD", "D3C5"),
         "kd-mri-at-imitation": ("kd-mri", "KD-MRI: AT + imitation (its procedure)", "D3C5")}


def stage(name, seed, psnr):
    """A complete stage of ``seed`` whose validation volumes score ``psnr`` (one value per volume)."""
    role, label, model = ROLES[name]
    per_volume = {v: {"psnr": p, "ssim": 0.9} for v, p in zip(VOLUMES, psnr)}
    mean = float(np.mean(psnr))
    summary = {"acceleration": "4x", "model_metrics": {"psnr": {"mean": mean, "std": 0.0}, "ssim": {"mean": 0.9, "std": 0.0}}}
    return StageResult(f"seed-{seed}/{name}", name, seed, role, label, "at" if "kd" in name else None, model, "", "",
                       None, {}, summary, {}, per_volume)


def results(stages, seeds=(1, 2, 3), paper="cardiac-4x"):
    manifest = {"seeds": list(seeds), "paper_setting": paper, "stages": [],
                "config": {"channels": 32, "teacher": "D5C5", "student": "D3C5", "report": {"bootstrap_resamples": 100}}}
    return ExperimentResults(RunLayout(Path("unused")), manifest, stages, [])


def test_comparisons_pair_only_the_seeds_both_stages_have():
    # A study still running: the student is done for seed 3 only, SFT-KD for seeds 1 and 2 only.
    done = [stage("teacher", s, [32.0 + s, 33.0]) for s in (1, 2, 3)] + [stage("student", 3, [31.0, 32.0])]
    done += [stage("std-kd-at", s, [31.5, 32.5 + s / 10]) for s in (1, 2, 3)]
    done += [stage("sft-kd-at", s, [31.7, 32.9 + s / 20]) for s in (1, 2)]
    comparisons = all_comparisons(results(done))
    pairs = {(c.baseline, c.other) for c in comparisons}
    assert ("student", "sft-kd-at") not in pairs  # no seed has both
    rows = {(c.baseline, c.other): effect_row(results(done), c, "psnr", 100) for c in comparisons}
    sft = rows[("std-kd-at", "sft-kd-at")].effect
    differences = [(31.7 - 31.5 + 32.9 + s / 20 - 32.5 - s / 10) / 2 for s in (1, 2)]  # seeds 1 and 2
    low, high = stats.t.interval(0.95, 1, loc=np.mean(differences), scale=stats.sem(differences))
    assert sft.seeds == 2 and np.allclose(sft.interval, (low, high))
    assert rows[("std-kd-at", "sft-kd-at")].paired_seeds == (1, 2)  # the order of per_seed


def test_kd_mri_procedure_against_the_student_is_a_claim_with_the_papers_effect():
    done = [stage("student", s, [31.0 + s / 10, 32.0]) for s in (1, 2, 3)]
    done += [stage("kd-mri-at-imitation", s, [31.2 + s / 10, 32.0 + s / 100]) for s in (1, 2, 3)]
    experiment = results(done, paper="kd-mri-cardiac-4x")
    [claim] = [c for c in paper_claims(experiment) if c.other == "kd-mri-at-imitation"]
    assert claim.baseline == "student" and claim.is_claim
    assert sum(c.other == "kd-mri-at-imitation" and c.baseline == "student" for c in all_comparisons(experiment)) == 1
    assert round(published_effect(experiment, claim), 2) == 0.15  # KD-MRI's table: 32.07 − 31.92
    row = effect_row(experiment, claim, "psnr", 100)
    differences = [(0.2 + s / 100) / 2 for s in (1, 2, 3)]  # per seed: mean over the two volumes
    low, high = stats.t.interval(0.95, 2, loc=np.mean(differences), scale=stats.sem(differences))
    assert np.allclose(row.effect.interval, (low, high)) and low > 0 and row.verdict == REPRODUCED


def test_teacher_gap_says_how_many_seeds_it_rests_on():
    # The teacher is done for seeds 1 and 2, the student for 1, 2 and 3: the gap rests on two seeds.
    done = [stage("teacher", s, [32.0 + s / 10, 33.0]) for s in (1, 2)]
    done += [stage("student", s, [31.8, 32.6 - s / 10]) for s in (1, 2, 3)]
    [table] = [block for block in _main_table(results(done)) if hasattr(block, "rows")]
    cells = {row[0]: row for row in table.cells()}
    gap = np.mean([(32.0 + s / 10 + 33.0) / 2 - (31.8 + 32.6 - s / 10) / 2 for s in (1, 2)])  # 0.45
    assert cells["Student D3C5"][1].endswith("(3)") and cells["Student D3C5"][3] == f"{gap:+.2f} (2)"
