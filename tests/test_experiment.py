"""`kdrecon run`: a tiny stage graph end to end on real data, reuse, resume, reruns, the report."""

import csv
import json
import re

import pytest
from scipy import stats

from kdrecon.experiment.config import PRESETS, load_experiment
from kdrecon.experiment.runner import Progress, run_experiment
from kdrecon.report.build import build_report
from kdrecon.training.config import ConfigError


def tiny_experiment(overrides, **changes):
    return load_experiment("demo", {**overrides, **changes})


def finished(run_dir):
    return {p.parent.name: json.loads(p.read_text())["finished"] for p in run_dir.glob("stages/*/stage.json")}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_overrides):
    run_dir = tmp_path_factory.mktemp("experiment") / "run"
    run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False)
    return run_dir


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_graph_runs_and_report_holds_the_evaluated_numbers(tiny_run):
    stages = {p.name for p in (tiny_run / "stages").iterdir()}
    assert stages == {"teacher", "student", "sft-teacher", "std-kd-at", "sft-kd-at"}
    report = (tiny_run / "report.md").read_text()
    for stage in stages:
        summary = json.loads((tiny_run / "stages" / stage / "evaluation" / "summary.json").read_text())
        psnr = summary["model_metrics"]["psnr"]
        ssim = summary["model_metrics"]["ssim"]
        assert f"{psnr['mean']:.2f} ± {psnr['std']:.2f} | {ssim['mean']:.4f} ± {ssim['std']:.4f}" in report, stage
    html = (tiny_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "http" not in html.replace("http-equiv", "")
    for name in ("reconstruction-SCD0000401_phase00.png", "per-slice-metrics.png", "validation-curves.png"):
        assert (tiny_run / "figures" / name).stat().st_size > 5000, name


def test_p_values_equal_scipys(tiny_run):
    def per_slice(stage):
        rows = read_rows(tiny_run / "stages" / stage / "evaluation" / "per_slice.csv")
        return [float(r["psnr"]) for r in rows if r["reconstruction"] == "model"]

    expected = stats.wilcoxon(per_slice("sft-kd-at"), per_slice("std-kd-at")).pvalue
    line = next(l for l in (tiny_run / "report.md").read_text().splitlines() if l.startswith("| AT SFT-KD vs AT Std-KD | PSNR"))
    assert float(line.split("|")[4]) == pytest.approx(expected, rel=1e-2)  # printed to 3 significant digits


def test_rerun_reuses_every_stage_and_report_rebuilds(tiny_run, tiny_overrides):
    before = finished(tiny_run)
    run_experiment(tiny_experiment(tiny_overrides), tiny_run, progress=False)
    assert finished(tiny_run) == before
    (tiny_run / "report.md").unlink()
    build_report(tiny_run)
    assert "Paired Wilcoxon" in (tiny_run / "report.md").read_text()


def test_changed_setting_reruns_exactly_the_dependent_stages(tmp_path, tiny_run, tiny_overrides):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    before = finished(run_dir)
    run_experiment(tiny_experiment(tiny_overrides, **{"sft.imitation_weight": 0.5}), run_dir, progress=False)
    after = finished(run_dir)
    rerun = {stage for stage in after if after[stage] != before[stage]}
    assert rerun == {"sft-teacher", "sft-kd-at"}


def test_interrupted_experiment_finishes_like_an_uninterrupted_one(tmp_path, tiny_run, tiny_overrides, monkeypatch):
    original = Progress.callback

    def interrupting(self, stage, index):
        inner = original(self, stage, index)

        def callback(*args):
            inner(*args)
            if stage.name == "sft-teacher" and args[-2] == 1:
                raise KeyboardInterrupt

        return callback

    monkeypatch.setattr(Progress, "callback", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(tiny_experiment(tiny_overrides), tmp_path / "run", progress=False)
    monkeypatch.setattr(Progress, "callback", original)
    run_experiment(tiny_experiment(tiny_overrides), tmp_path / "run", progress=False)
    for stage in ("sft-teacher", "sft-kd-at"):
        a = read_rows(tiny_run / "stages" / stage / "evaluation" / "per_slice.csv")
        b = read_rows(tmp_path / "run" / "stages" / stage / "evaluation" / "per_slice.csv")
        assert a == b, stage


def test_presets_are_valid_and_bad_keys_are_named():
    for preset in PRESETS:
        config = load_experiment(preset)
        assert config.name == preset
    paper = load_experiment("paper-cardiac-4x")
    assert paper.methods == ["at", "fitnets", "sp", "fsp", "cc"] and paper.optimization.epochs == 150
    with pytest.raises(ConfigError, match=r"methods: .*unknown method 'kd'"):
        load_experiment("demo", {"methods": ["kd"]})
    with pytest.raises(ConfigError, match=re.escape("epochs.sft_teacher: Input should be greater than 0")):
        load_experiment("demo", {"epochs.sft_teacher": 0})


def test_independent_stages_run_in_parallel_processes(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False, parallel=2)
    states = [json.loads(p.read_text()) for p in run_dir.glob("stages/*/stage.json")]
    assert len(states) == 5 and all(state["status"] == "complete" for state in states)
    assert (run_dir / "report.html").is_file()
    with pytest.raises(ConfigError, match="--only: no stage 'nope'"):
        run_experiment(tiny_experiment(tiny_overrides), run_dir, only=["nope"])


def test_ablation_and_compression_sweep_reach_the_report(tmp_path, tiny_overrides):
    config = tiny_experiment(
        tiny_overrides, **{"random_init_ablation": True, "compression_sweep": ["D4C3", "D3C3"], "optimization.epochs": 1,
                         "epochs.distillation": 1}
    )
    run_experiment(config, tmp_path / "run", progress=False)
    stages = {p.name for p in (tmp_path / "run" / "stages").iterdir()}
    assert {"sft-kd-at-random", "student-D4C3"} <= stages and "student-D3C3" not in stages  # D3C3 is the teacher
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| AT SFT-KD (random init) |" in report
    table8 = report.split("papers' Table 8")[1].split("##")[0]
    assert [line.split("|")[1].strip() for line in table8.splitlines() if line.startswith("| ") and "network" not in line] == [
        "Student D4C3", "Teacher D3C3", "Student D2C3"
    ]
