"""`kdrecon run`: a tiny stage graph with two seeds end to end on real data, reuse, resume, reruns, the report."""

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from scipy import stats

from kdrecon.experiment.config import PRESETS, load_experiment
from kdrecon.experiment.runner import Progress, run_experiment
from kdrecon.experiment.stages import build_stages, fingerprints
from kdrecon.report.build import build_report
from kdrecon.training.config import ConfigError
from conftest import TINY_RUN_SEEDS, TWO_STAGE

SEEDS = TINY_RUN_SEEDS
STAGES = {"teacher", "student", "sft-teacher", "std-kd-at", "sft-kd-at"}


def tiny_experiment(overrides, **changes):
    return load_experiment("demo", {"seeds": SEEDS, **overrides, **changes})


def finished(run_dir):
    return {p.parent.relative_to(run_dir / "stages").as_posix(): json.loads(p.read_text())["finished"]
            for p in run_dir.glob("stages/*/*/stage.json")}


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_graph_runs_every_stage_per_seed_and_report_holds_the_evaluated_numbers(tiny_run):
    assert set(finished(tiny_run)) == {f"seed-{seed}/{stage}" for seed in SEEDS for stage in STAGES}
    report = (tiny_run / "report.md").read_text()
    psnr = {}
    for seed in SEEDS:
        for stage in STAGES:
            summary = json.loads((tiny_run / "stages" / f"seed-{seed}" / stage / "evaluation" / "summary.json").read_text())
            psnr.setdefault(stage, []).append(summary["model_metrics"]["psnr"]["mean"])
    for stage, values in psnr.items():
        mean, spread = sum(values) / 2, stats.tstd(values)
        assert f"{mean:.2f} ± {spread:.2f} (2)" in report, stage  # mean ± sd over the two seeds
    # each seed's effect is named by its seed, whatever order the seeds ran in
    teacher_gap = [psnr["teacher"][i] - psnr["student"][i] for i in range(len(SEEDS))]
    expected = ", ".join(f"{s}: {g:+.2f}" for s, g in zip(SEEDS, teacher_gap))
    assert f"| Teacher D3C3 − Student D2C3 | PSNR | {sum(teacher_gap) / 2:+.2f} | 2 | {expected} |" in report
    html = (tiny_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "http" not in html.replace("http-equiv", "")
    for name in ("reconstruction-SCD0000401_phase00.png", "per-slice-metrics.png", "validation-curves.png", "seed-effects.png"):
        assert (tiny_run / "figures" / name).stat().st_size > 5000, name


def test_report_states_how_much_each_feature_term_weighed_against_l1(tiny_run):
    """β · epoch mean of the feature loss / epoch mean of L1, from each seed's training history."""
    report = (tiny_run / "report.md").read_text()
    section = report.split("## Feature-loss weights")[1].split("\n## ")[0]
    for stage, label in (("std-kd-at", "AT Std-KD"), ("sft-kd-at", "AT SFT-KD")):
        first, last = [], []
        for seed in SEEDS:
            directory = tiny_run / "stages" / f"seed-{seed}" / stage
            weight = yaml.safe_load((directory / "config.yaml").read_text()).get("feature_weight") or 1000.0  # AT's β
            with open(directory / "metrics.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
            shares = [weight * float(row["train_feature"]) / float(row["train_reconstruction"]) for row in rows]
            first.append(shares[0])
            last.append(shares[-1])
        cells = [f"{sum(v) / 2:.3g} ({min(v):.3g}–{max(v):.3g}) (2)" for v in (first, last)]
        assert f"| {label} | 1000 | {cells[0]} | {cells[1]} |" in section


def test_each_stage_records_and_is_evaluated_in_the_precision_its_training_used(tiny_run):
    from kdrecon.training.checkpoint import load_checkpoint

    for state_file in tiny_run.glob("stages/*/*/stage.json"):
        state = json.loads(state_file.read_text())
        trained = load_checkpoint(state_file.parent / "checkpoints" / "best.pt")
        assert state["precision"] == trained["precision"] == "fp32", state_file  # as the tiny runs state
        assert state["channels_last"] is trained["channels_last"], state_file  # measured: auto
        evaluated = json.loads((state_file.parent / "evaluation" / "summary.json").read_text())
        assert evaluated["precision"] == state["precision"], state_file  # evaluated as it was trained


def test_a_stage_is_evaluated_in_the_precision_it_trained_in_not_one_measured_again(tmp_path, tiny_overrides,
                                                                                     monkeypatch):
    """A stage trained in bf16 is evaluated in bf16, even where a new measurement would now pick
    float32 (evaluate's as-trained would then run it in float32)."""
    from kdrecon.training import fast_path

    monkeypatch.setattr(fast_path, "cpu_training_path", lambda: fast_path.CpuTrainingPath("fp32", True, {}))
    config = tiny_experiment({**tiny_overrides, "optimization.epochs": 1, "precision": "bf16"}, seeds=[1])
    run_experiment(config, tmp_path / "run", only=["teacher"], progress=False)
    stage = tmp_path / "run" / "stages" / "seed-1" / "teacher"
    assert json.loads((stage / "stage.json").read_text())["precision"] == "bf16"
    assert json.loads((stage / "evaluation" / "summary.json").read_text())["precision"] == "bf16"


def test_every_process_of_an_experiment_resolves_auto_as_the_first_one_measured(tmp_path, tiny_overrides,
                                                                                   monkeypatch):
    """``auto`` is measured per process on a CPU; a stage run later in another process (here: a
    new measurement) must train as the experiment began, and the run directory says how."""
    from kdrecon.training import fast_path

    def measure(channels_last):
        monkeypatch.setattr(fast_path, "cpu_training_path", lambda: fast_path.CpuTrainingPath("fp32", channels_last, {}))

    config = tiny_experiment({**tiny_overrides, "optimization.epochs": 1, "channels_last": "auto"}, seeds=[1])
    measure(False)
    run_experiment(config, tmp_path / "run", only=["teacher"], progress=False)
    measure(True)
    run_experiment(config, tmp_path / "run", only=["student"], progress=False)
    for stage in ("teacher", "student"):
        assert json.loads((tmp_path / "run" / "stages" / "seed-1" / stage / "stage.json").read_text())["channels_last"] is False
    record = tmp_path / "run" / "cpu-training-path.json"
    recorded = json.loads(record.read_text())
    assert (recorded["precision"], recorded["float32_channels_last"]) == ("fp32", False)
    # --reuse-from takes the record along with the stages it copies
    run_experiment(config, tmp_path / "copy", only=["teacher"], reuse_from=tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "copy" / "cpu-training-path.json").read_text()) == recorded
    # a run directory from before the record: rebuilt from what its finished stages trained in
    record.unlink()
    run_experiment(config, tmp_path / "run", only=["sft-teacher"], progress=False)
    assert json.loads(record.read_text())["float32_channels_last"] is False
    assert json.loads((tmp_path / "run" / "stages" / "seed-1" / "sft-teacher" / "stage.json").read_text())[
        "channels_last"] is False
    # a damaged record is refused by name before anything is written
    record.write_text('{"precision": "fp16", "float32_channels_last": "no"}')
    with pytest.raises(ValueError, match="cpu-training-path.json: not a recorded CPU training path"):
        run_experiment(config, tmp_path / "run", only=["std-kd-at"], progress=False)
    assert not (tmp_path / "run" / "stages" / "seed-1" / "std-kd-at").exists()


def test_a_recorded_bf16_path_trains_in_float32_on_a_cpu_that_emulates_bf16(tmp_path, tiny_overrides, monkeypatch):
    """A run directory moved to a CPU without native bf16: its later stages train in float32 (not
    emulated bf16, many times slower), in the layout the record holds, not one measured again."""
    from kdrecon.experiment import training_path
    from kdrecon.training import fast_path

    def machine(native, measured_layout):
        monkeypatch.setattr(training_path, "native_bf16", lambda device: native)
        monkeypatch.setattr(fast_path, "cpu_training_path",
                            lambda: fast_path.CpuTrainingPath("bf16" if native else "fp32", measured_layout, {}))

    config = tiny_experiment({**tiny_overrides, "optimization.epochs": 1, "precision": "auto"}, seeds=[1])
    machine(True, False)
    run_experiment(config, tmp_path / "run", only=["teacher"], progress=False)
    machine(False, True)
    run_experiment(config, tmp_path / "run", only=["student"], progress=False)
    states = {stage: json.loads((tmp_path / "run" / "stages" / "seed-1" / stage / "stage.json").read_text())
              for stage in ("teacher", "student")}
    assert (states["teacher"]["precision"], states["teacher"]["channels_last"]) == ("bf16", True)
    assert (states["student"]["precision"], states["student"]["channels_last"]) == ("fp32", False)  # recorded layout
    assert json.loads((tmp_path / "run" / "cpu-training-path.json").read_text())["precision"] == "bf16"  # kept as measured
    # without the record, it is rebuilt from the finished stages: bf16 (teacher) and the float32 layout (student)
    (tmp_path / "run" / "cpu-training-path.json").unlink()
    machine(True, True)
    run_experiment(config, tmp_path / "run", only=["sft-teacher"], progress=False)
    rebuilt = json.loads((tmp_path / "run" / "cpu-training-path.json").read_text())
    assert (rebuilt["precision"], rebuilt["float32_channels_last"]) == ("bf16", False)


def test_within_run_p_values_equal_scipys(tiny_run):
    def per_slice(stage, seed):
        rows = read_rows(tiny_run / "stages" / f"seed-{seed}" / stage / "evaluation" / "per_slice.csv")
        return [float(r["psnr"]) for r in rows if r["reconstruction"] == "model"]

    lines = [l for l in (tiny_run / "report.md").read_text().splitlines() if l.startswith("| AT SFT-KD vs AT Std-KD |")]
    assert len(lines) == 2  # one within-run test per seed
    for seed, line in zip(SEEDS, lines):
        assert line.split("|")[2].strip() == str(seed)
        expected = stats.wilcoxon(per_slice("sft-kd-at", seed), per_slice("std-kd-at", seed)).pvalue
        assert float(line.split("|")[4]) == pytest.approx(expected, rel=1e-2)  # printed to 3 significant digits


def test_rerun_reuses_every_stage_and_report_rebuilds(tiny_run, tiny_overrides):
    before = finished(tiny_run)
    run_experiment(tiny_experiment(tiny_overrides), tiny_run, progress=False)
    assert finished(tiny_run) == before
    (tiny_run / "report.md").unlink()
    build_report(tiny_run)
    assert "Within-run tests" in (tiny_run / "report.md").read_text()


def test_changed_setting_reruns_exactly_the_dependent_stages(tmp_path, tiny_run, tiny_overrides):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    before = finished(run_dir)
    changed = tiny_experiment(tiny_overrides, **{"sft.imitation_weight": 0.5})
    with pytest.raises(ConfigError, match=r"seed-1/sft-teacher \(sft\.imitation_weight\).*--rerun"):
        run_experiment(changed, run_dir, progress=False)  # finished work is superseded only when asked
    assert finished(run_dir) == before and not (run_dir / "superseded").exists()
    run_experiment(changed, run_dir, progress=False, rerun=True)
    after = finished(run_dir)
    rerun = {stage for stage in after if after[stage] != before[stage]}
    assert rerun == {f"seed-{seed}/{stage}" for seed in SEEDS for stage in ("sft-teacher", "sft-kd-at")}
    (moved,) = (run_dir / "superseded").iterdir()  # the previous runs are kept, not deleted
    kept = {p.parent.relative_to(moved).as_posix(): json.loads(p.read_text())["finished"] for p in moved.glob("*/*/stage.json")}
    assert kept == {stage: before[stage] for stage in rerun}


def test_the_refusal_to_supersede_names_what_changed_for_the_stage_itself(tmp_path, tiny_run, tiny_overrides):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "stages" / "seed-1" / "teacher" / "stage.json").unlink()
    with pytest.raises(ConfigError, match=r"seed-1/teacher \(its stage.json is missing or holds no fingerprint\)"):
        run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False)
    shutil.rmtree(run_dir)
    shutil.copytree(tiny_run, run_dir)
    # One stage rerun alone with another setting: the manifest still holds the old one, the stage its own.
    changed = tiny_experiment(tiny_overrides, **{"optimization.learning_rate": 0.002})
    run_experiment(changed, run_dir, progress=False, only=["seed-1/teacher"], rerun=True, report=False)
    with pytest.raises(ConfigError, match=r"seed-1/teacher \(optimization\.learning_rate\)"):
        run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False)


def test_the_demo_command_also_asks_before_superseding(tmp_path, tiny_run, tiny_overrides):
    from kdrecon.cli import build_parser
    from kdrecon.demo import run_demo

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    with pytest.raises(ConfigError, match=r"seed-1/teacher \(optimization\.lr_gamma\).*Pass --rerun"):
        run_demo(run_dir, {"seeds": SEEDS, **tiny_overrides, "optimization.lr_gamma": 0.5}, progress=False)
    assert not (run_dir / "superseded").exists()
    assert build_parser().parse_args(["demo", "--rerun"]).rerun


def test_the_demo_table_says_which_seed_its_numbers_rest_on(tmp_path, tiny_run, tiny_overrides, capsys):
    from kdrecon.demo import run_demo

    shutil.copytree(tiny_run, tmp_path / "run")
    table = run_demo(tmp_path / "run", {"seeds": SEEDS, **tiny_overrides}, progress=False)  # every stage reused
    printed = capsys.readouterr().out
    assert "each stage's lowest finished seed of 2 (1, 2); the report has every seed:" in printed
    assert set(table) >= {"Zero-filled", "Teacher D3C3", "Student D2C3"}


def test_adding_a_seed_trains_only_that_seeds_stages(tmp_path, tiny_run, tiny_overrides):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    before = finished(run_dir)
    run_experiment(tiny_experiment(tiny_overrides, seeds=[*SEEDS, 3]), run_dir, progress=False)
    after = finished(run_dir)
    assert {stage for stage in after if after[stage] != before.get(stage)} == {f"seed-3/{stage}" for stage in STAGES}
    assert "(3)" in (run_dir / "report.md").read_text()


def test_interrupted_multi_seed_run_resumes_to_the_same_numbers_after_its_directory_moved(
        tmp_path, tiny_run, tiny_overrides, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    for stage in ("sft-teacher", "sft-kd-at"):  # as if killed before seed 2's SFT stages
        shutil.rmtree(run_dir / "stages" / "seed-2" / stage)
    original = Progress.callback

    def interrupting(self, stage, index):
        inner = original(self, stage, index)

        def callback(*args):
            inner(*args)
            if stage.id == "seed-2/sft-kd-at" and args[-2] == 1:
                raise KeyboardInterrupt

        return callback

    monkeypatch.setattr(Progress, "callback", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False)
    assert json.loads((run_dir / "stages" / "seed-2" / "sft-kd-at" / "stage.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(Progress, "callback", original)
    # The run directory moves, and the dataset is named by another spelling of the same path.
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    run_dir.rename(moved)
    monkeypatch.chdir(tmp_path)
    dataset = os.path.relpath(tiny_overrides["data.dataset"], tmp_path)
    run_experiment(tiny_experiment(tiny_overrides, **{"data.dataset": dataset}), Path("elsewhere/run"), progress=False)
    assert not (moved / "superseded").exists()  # resumed, nothing superseded
    for stage in ("seed-2/sft-teacher", "seed-2/sft-kd-at"):
        a = read_rows(tiny_run / "stages" / stage / "evaluation" / "per_volume.csv")
        b = read_rows(moved / "stages" / stage / "evaluation" / "per_volume.csv")
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
    study = load_experiment("study-sunnybrook-4x")
    assert study.replicate_seeds == [42, 43, 44] and study.procedure == "single-stage" and study.alpha == 1.0
    assert load_experiment("demo").replicate_seeds == [42]
    with pytest.raises(ConfigError, match="give either seed .* or seeds"):
        load_experiment("demo", {"seed": 1, "seeds": [1, 2]})
    with pytest.raises(ConfigError, match="seeds: a seed is listed twice"):
        load_experiment("demo", {"seeds": [1, 1]})
    with pytest.raises(ConfigError, match="sft_preset_ablation: unknown SFT preset 'sft-x'"):
        load_experiment("demo", {"sft_preset_ablation": ["sft-x"]})
    with pytest.raises(ConfigError, match="compression_sweep: D5C5 is already the teacher"):
        load_experiment("demo", {"compression_sweep": ["D4C5", "D5C5"]})
    with pytest.raises(ConfigError, match="the SFT teacher pairs blocks one to one: teacher D5C5 and student D3C4"):
        load_experiment("demo", {"compression_sweep": ["D3C4"]})
    with pytest.raises(ConfigError, match="compression_methods: there is no compression_sweep student to distil"):
        load_experiment("demo", {"compression_methods": ["sp"]})
    assert load_experiment("demo", {"compression_sweep": ["D2C5"]}).sweep_methods == ["at"]  # the first of methods
    with pytest.raises(ConfigError, match="method_settings: unknown method 'kd'"):
        load_experiment("demo", {"method_settings": {"kd": {"feature_weight": 1}}})
    with pytest.raises(ConfigError, match=r"method_settings.at.feature_weight: Input should be greater than 0"):
        load_experiment("demo", {"method_settings": {"at": {"feature_weight": 0}}})
    with pytest.raises(ConfigError, match="procedure_ablation: .*epochs.feature_stage below"):
        load_experiment("demo", {"procedure": "single-stage", "procedure_ablation": True, "epochs.feature_stage": 10})
    for name in ("../../escape", "/tmp/elsewhere", "a/b", ".hidden"):  # the name makes the run directory runs/NAME
        with pytest.raises(ConfigError, match=r"name: not a plain name .*runs/NAME"):
            load_experiment("demo", {"name": name})
    assert load_experiment("demo", {"name": "cardiac-4x_v2.1"}).name == "cardiac-4x_v2.1"


def test_a_paper_column_of_another_acceleration_or_task_is_refused():
    with pytest.raises(ConfigError, match=re.escape(
            "report.paper_setting: cardiac-4x was measured on reconstruction at 4x, this experiment's data is "
            "reconstruction at 5x")):
        load_experiment("demo", {"data.acceleration": "5x", "report.paper_setting": "cardiac-4x"})
    with pytest.raises(ConfigError, match=re.escape(
            "report.paper_setting: cardiac-4x was measured on reconstruction at 4x, this experiment's data is "
            "super-resolution at 4x")):
        load_experiment("demo-sr", {"report.paper_setting": "cardiac-4x"})
    # Unset: the first published setting of the data's task and acceleration, none where none is.
    assert load_experiment("demo", {"data.acceleration": "5x"}).paper_column == "cardiac-5x"
    assert load_experiment("demo-sr").paper_column == "calgary-super-resolution-4x"
    assert load_experiment("demo", {"data.acceleration": "8x"}).paper_column is None
    assert load_experiment("paper-brain-5x").paper_column == "brain-5x"


@pytest.mark.parametrize("changes, message", [
    ({"method_settings": {"at": {"layers": {"teacher": ["blocks.0.layers.9"], "student": ["blocks.0.layers.0"]}}}},
     r"stage seed-1/std-kd-at: layers.teacher: no module 'blocks.0.layers.9' in the teacher"),
    ({"method_settings": {"at": {"method_options": {"power": 3}}}}, r"std-kd-at: method_options: at has no option 'power'"),
    ({"method_settings": {"fitnets": {"feature_weight": 2.0}}},
     r"method_settings.fitnets: no stage of this experiment distils with fitnets \(its stages use at\)"),
    ({"dataset_slices": {"train": 350}}, r"dataset_slices.train: the experiment expects 350 train slices, .* has \d+ \(prepared"),
    ({"dataset_slices": {"validation": 110}}, r"dataset_slices.validation: the experiment expects 110 validation slices"),
    ({"report.timing_batch_size": 500}, r"report.timing_batch_size: 500 is more than the \d+ validation slices"),
    ({"device": "cuda"}, "device 'cuda' requested but no CUDA device is available"),
    (TWO_STAGE, r"^epochs.feature_stage: no stage of this experiment distils with the two-stage procedure"),
])
def test_what_would_fail_hours_later_is_refused_before_anything_is_written(tmp_path, tiny_overrides, changes, message):
    if changes.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match=message):
        run_experiment(tiny_experiment(tiny_overrides, **changes), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_refused_once_locked_removes_the_folders_it_created(tmp_path, tiny_overrides):
    (tmp_path / "kept").mkdir()
    run_dir = tmp_path / "kept" / "new" / "deeper" / "run"
    with pytest.raises(ConfigError, match=r"--only: stage 'seed-1/teacher', an input of seed-1/std-kd-at, is not complete"):
        run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False, only=["seed-1/std-kd-at"])
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and not any((tmp_path / "kept").iterdir())


def test_damaged_run_directory_files_are_named_not_read_as_absent(tmp_path, tiny_run, tiny_overrides):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    state = run_dir / "stages" / "seed-1" / "teacher" / "stage.json"
    state.write_text('{"status": "complete", "fingerp')  # as a crashed editor might leave it
    with pytest.raises(ValueError, match=r"seed-1/teacher/stage\.json: not readable JSON"):
        run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False)
    assert not (run_dir / "superseded").exists()  # the finished stage was not superseded
    (run_dir / "experiment.json").write_text("[]")
    with pytest.raises(ValueError, match=r"experiment\.json: expected a JSON object, found list"):
        build_report(run_dir)


def test_per_volume_rows_that_disagree_with_the_summary_are_refused_and_evaluated_again(tmp_path, tiny_run, tiny_overrides):
    """The claims come from per_volume.csv and Table 1 from summary.json: an edited row must not
    change one and not the other."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    table = run_dir / "stages" / "seed-2" / "student" / "evaluation" / "per_volume.csv"
    original = table.read_text()
    header, first, *rest = original.splitlines()
    cells = first.split(",")
    cells[1] = str(float(cells[1]) + 0.5)  # its PSNR, half a dB better
    table.write_text("\n".join([header, ",".join(cells), *rest]) + "\n")
    with pytest.raises(ValueError, match=r"stage seed-2/student: its evaluation cannot be reported: its model psnr in "
                                         r"per_volume.csv averages [\d.]+, summary.json records [\d.]+; 'kdrecon run'"):
        build_report(run_dir)
    table.write_text("\n".join([header, *rest]) + "\n")  # a volume's rows removed
    with pytest.raises(ValueError, match=r"per_volume.csv has \d+ model rows, summary.json counts \d+ volumes"):
        build_report(run_dir)
    run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False)  # evaluates it again
    assert table.read_text() == original
    build_report(run_dir)


def test_truncated_evaluation_tables_are_named_not_read_short(tmp_path, tiny_run):
    """A per-slice table cut short would run the per-slice tests on fewer slices; a per-volume row cut
    mid-way crashed the report without naming the file."""
    from kdrecon.report.results import evaluation_problem
    from kdrecon.report.run_layout import StageFiles
    from kdrecon.training.config import DataConfig

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    files = StageFiles(run_dir / "stages" / "seed-1" / "teacher")
    identity = json.loads((run_dir / "experiment.json").read_text())["data_identity"]
    data = DataConfig(dataset=json.loads((run_dir / "experiment.json").read_text())["config"]["data"]["dataset"])
    assert evaluation_problem(files, data, identity) is None
    rows = files.per_slice.read_text().splitlines()
    model_rows = [i for i, row in enumerate(rows) if ",model" in row or row.endswith("model")]
    files.per_slice.write_text("\n".join(r for i, r in enumerate(rows) if i != model_rows[-1]) + "\n")
    summary = json.loads(files.summary.read_text())
    assert evaluation_problem(files, data, identity) == (
        f"{files.per_slice} has {summary['slices'] - 1} rows of the network, summary.json counts {summary['slices']} slices")
    files.per_slice.write_text("\n".join(rows) + "\n")
    table = files.per_volume.read_text().splitlines()
    files.per_volume.write_text("\n".join([table[0], table[1][: len(table[1]) // 2]]) + "\n")  # a write cut short
    assert evaluation_problem(files, data, identity).startswith(f"{files.per_volume} is not an evaluation's table (")


def test_an_unusable_stage_evaluation_is_refused_by_the_report_and_evaluated_again_by_run(tmp_path, tiny_run, tiny_overrides):
    from kdrecon.data.dataset import sample_directory
    from kdrecon.data.prepare import PrepareOptions, prepare_dataset
    from kdrecon.data.sources import sunnybrook
    from kdrecon.evaluation.evaluate import evaluate
    from kdrecon.report.results import evaluation_problem
    from kdrecon.report.run_layout import StageFiles
    from kdrecon.training.config import DataConfig

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    teacher, student = (run_dir / "stages" / "seed-1" / name for name in ("teacher", "student"))
    before = json.loads((teacher / "evaluation" / "summary.json").read_text())["model_metrics"]
    evaluate(teacher, teacher / "evaluation", which="last")  # by hand, into the stage's own evaluation
    with pytest.raises(ValueError, match=r"stage seed-1/teacher: its evaluation cannot be reported: it scores .*last.pt, "
                                         r"not the stage's best checkpoint; 'kdrecon run' .* evaluates it again"):
        build_report(run_dir)
    shutil.rmtree(student / "evaluation" / "reconstructions")  # to save disk, say
    other = tmp_path / "other-data"  # the same slices prepared with another mask: other scores
    prepare_dataset(sunnybrook.read_volumes(sample_directory(), phases=[0]), other,
                    PrepareOptions(crop=48, mask="equispaced", validation_subjects=["SCD0000401"]))
    seed_2_teacher = run_dir / "stages" / "seed-2" / "teacher"
    evaluate(seed_2_teacher, seed_2_teacher / "evaluation", dataset=other)
    problem = evaluation_problem(StageFiles(seed_2_teacher), DataConfig(), json.loads((run_dir / "experiment.json").read_text())["data_identity"])
    assert problem == f"it scores other data ({other}) than the experiment's"
    problem = evaluation_problem(StageFiles(student), DataConfig(dataset=str(tiny_overrides["data.dataset"])), None)
    assert problem is not None and re.search(r"reconstructions holds 0 of its \d+ volumes", problem)
    run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False)  # trains nothing, evaluates both again
    assert json.loads((teacher / "evaluation" / "summary.json").read_text())["model_metrics"] == before
    kept = sorted(p.relative_to(run_dir / "superseded").as_posix() for p in (run_dir / "superseded").glob("*/seed-*/*/evaluation"))
    assert sorted(k.split("/", 1)[1] for k in kept) == ["seed-1/student/evaluation", "seed-1/teacher/evaluation",
                                                        "seed-2/teacher/evaluation"]
    assert (run_dir / "report.md").is_file()


def test_a_refused_only_rerun_moves_nothing_aside(tmp_path, tiny_run, tiny_overrides):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    changed = tiny_experiment(tiny_overrides, channels=6)
    with pytest.raises(ConfigError, match="--only: stage 'seed-1/teacher', an input of seed-1/std-kd-at, is not complete"):
        run_experiment(changed, run_dir, progress=False, only=["seed-1/std-kd-at"], rerun=True)
    assert (run_dir / "stages" / "seed-1" / "std-kd-at" / "stage.json").is_file() and not (run_dir / "superseded").exists()


def test_a_dataset_prepared_again_with_other_options_is_not_taken_for_the_data_stages_were_trained_on(
        tmp_path, tiny_dataset, tiny_overrides):
    from kdrecon.data.dataset import sample_directory
    from kdrecon.data.prepare import PrepareOptions, prepare_dataset
    from kdrecon.data.sources import sunnybrook
    from kdrecon.evaluation.evaluate import evaluate
    from kdrecon.experiment.resumption import copy_reusable
    from kdrecon.report.run_layout import RunLayout
    from kdrecon.training.config import DistillConfig, validate
    from kdrecon.training.distill import distill_student

    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset, dataset)
    config = tiny_experiment({**tiny_overrides, "data.dataset": str(dataset), "optimization.epochs": 1,
                              "epochs.distillation": 1}, seeds=[1])
    run_experiment(config, tmp_path / "run", progress=False)
    from kdrecon.cli import main

    train = ["train", "--model", "D2C3", "--set", "model.channels=4", "--epochs", "1", "--dataset", str(dataset),
             "--run-dir", str(tmp_path / "train"), "--quiet"]
    assert main(train) == 0
    distillation = validate(DistillConfig, {"teacher": str(tmp_path / "run" / "stages" / "seed-1" / "teacher"),
                                            "student": {"name": "D2C3", "channels": 4}, "procedure": "two-stage",
                                            "data": {"dataset": str(dataset)}, "optimization": {"epochs": 1}})

    def stop_in_the_feature_stage(stage, epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill_student(distillation, tmp_path / "distill", False, on_epoch_end=stop_in_the_feature_stage)
    # The same path prepared again from the same slices with another mask: every number would change.
    shutil.rmtree(dataset)
    volumes = sunnybrook.read_volumes(sample_directory(), phases=[0])
    prepare_dataset(volumes, dataset, PrepareOptions(crop=48, mask="equispaced", validation_subjects=["SCD0000401"]))
    with pytest.raises(ConfigError, match=r"settings changed for stages already run: seed-1/teacher \(the data in data.dataset\)"):
        run_experiment(config, tmp_path / "run", progress=False)
    teacher = tmp_path / "run" / "stages" / "seed-1" / "teacher"
    with pytest.raises(ValueError, match=r"teacher: .*data does not hold the data it was trained on"):
        evaluate(teacher, tmp_path / "evaluation")  # on "the data it was trained on", by default
    assert not (tmp_path / "evaluation").exists()
    assert main(train) == 2  # resuming (here: finding it finished) on other data
    with pytest.raises(ValueError, match=r"feature-stage: .*data does not hold the data it was trained on"):
        distill_student(distillation, tmp_path / "distill", False)  # resuming its first stage on other data
    stages = build_stages(config)
    copy_reusable(stages, fingerprints(stages), RunLayout(tmp_path / "copy"), RunLayout(tmp_path / "run"), False,
                  identity="not the data the stages were trained on")
    assert not (tmp_path / "copy").exists()


def test_a_second_run_on_a_directory_another_live_run_is_writing_is_refused(tmp_path, tiny_run, tiny_overrides):
    import socket
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    lock = run_dir / ".kdrecon-run.lock"
    # Another live process holds the lock and names itself in it, as a running `kdrecon run` does.
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys
descriptor = os.open({str(lock)!r}, os.O_CREAT | os.O_RDWR)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.write(descriptor, f"{{os.getpid()}} {socket.gethostname()}".encode())
print("held", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ConfigError, match=rf"another kdrecon run \(process {holder.pid} on {socket.gethostname()}\) is writing it"):
            run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False)
        with pytest.raises(ConfigError, match="another kdrecon run"):  # one stage alone, too
            run_experiment(tiny_experiment(tiny_overrides, channels=6), run_dir, progress=False, only=["seed-1/teacher"],
                           rerun=True)
    finally:
        holder.kill()  # as a killed run: its lock file stays, the kernel's lock goes with the process
        holder.wait()
    assert not (run_dir / "superseded").exists() and lock.exists()
    run_experiment(tiny_experiment(tiny_overrides), run_dir, progress=False)
    assert not lock.exists()


def test_stage_processes_of_a_killed_parallel_run_keep_its_directory_locked(tmp_path):
    """A --parallel run killed by SIGKILL leaves its stage processes writing: no other run may take
    the directory until they end."""
    import signal
    import subprocess
    import sys
    import time

    from kdrecon.experiment.run_lock import run_lock
    from kdrecon.report.run_layout import RunLayout

    layout = RunLayout(tmp_path / "run")
    parent = subprocess.Popen([sys.executable, "-c", f"""
import os, signal, sys
from pathlib import Path
from kdrecon.experiment.run_lock import run_lock
from kdrecon.experiment.runner import _stage_process
from kdrecon.report.run_layout import RunLayout
layout = RunLayout(Path({str(layout.root)!r}))
with run_lock(layout):
    stage = _stage_process([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), layout)
    print(stage.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""], stdout=subprocess.PIPE, text=True)
    stage = int(parent.stdout.readline())
    assert parent.wait() == -signal.SIGKILL
    try:
        with pytest.raises(ConfigError, match=rf"the kdrecon run that locked it \(process {parent.pid}\) has ended, "
                                              rf"but processes it started still write it \(process {stage}\)"):
            with run_lock(layout):
                pass
    finally:
        os.kill(stage, signal.SIGKILL)
    for _ in range(100):  # the kernel releases the lock as the stage process exits
        try:
            with run_lock(layout):
                break
        except ConfigError:
            time.sleep(0.05)
    else:
        pytest.fail("the lock outlived the stage process")


def test_independent_stages_of_every_seed_run_in_parallel_processes(tmp_path, tiny_overrides, monkeypatch):
    from kdrecon.experiment import runner
    from kdrecon.training.teacher_cache import SHARING_PROCESSES

    environments = []
    real_stage_process = runner._stage_process
    monkeypatch.setattr(runner, "_stage_process", lambda command, environment, layout: (
        environments.append(environment), real_stage_process(command, environment, layout))[1])
    run_dir = tmp_path / "run"
    # One seed: its teacher and student (and the distillations of each teacher) are independent.
    config = tiny_experiment({**tiny_overrides, "optimization.epochs": 1, "epochs.distillation": 1}, seeds=[1])
    run_experiment(config, run_dir, progress=False, parallel=2)  # each worker reads RUN/experiment.yaml back
    states = [json.loads(p.read_text()) for p in run_dir.glob("stages/*/*/stage.json")]
    assert len(states) == 5 and all(state["status"] == "complete" for state in states)
    # On the CPU the two workers share its cores and its memory: each sizes an auto teacher cache for two.
    assert len(environments) == 5 and all(e["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
                                          and e[SHARING_PROCESSES] == "2" for e in environments)
    assert (run_dir / "report.html").is_file()
    with pytest.raises(ConfigError, match="--only: no stage 'nope'"):
        run_experiment(config, run_dir, only=["nope"])


def test_report_of_a_partial_study_skips_comparisons_without_a_shared_seed(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    shutil.rmtree(run_dir / "stages" / "seed-1" / "student")  # student done for seed 2 only
    shutil.rmtree(run_dir / "stages" / "seed-2" / "teacher")  # teacher (and so Std-KD) for seed 1 only
    shutil.rmtree(run_dir / "stages" / "seed-2" / "std-kd-at")
    report = build_report(run_dir).read_text()
    assert "Incomplete: 3 of 10 stages are not finished (seed-1/student, seed-2/teacher, seed-2/std-kd-at)" in report
    claims = report.split("## Claims of the papers")[1].split("\n## ")[0]
    assert "the student trails the teacher" not in claims  # no seed has both
    assert "| AT SFT-KD beats AT Std-KD and shrinks the teacher–student gap | — | " in claims  # other networks


def test_report_of_sft_teachers_alone_has_no_empty_size_table(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    for stage in run_dir.glob("stages/*/*"):
        if stage.name != "sft-teacher":  # as `--only sft-teacher` leaves a run
            shutil.rmtree(stage)
    report = build_report(run_dir).read_text()
    assert "| SFT teacher D3C3 | " in report and "papers' Table 8" not in report


def table_cells(report, section, column):
    """Row label → its cell in ``column`` (all its cells when None) of the first table of ``section``."""
    table = report.split(section)[1].split("\n## ")[0]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("| ")]
    return {row[0]: row if column is None else row[column] for row in rows[1:]}


def test_a_report_of_other_networks_shows_no_published_number(tiny_run):
    report = (tiny_run / "report.md").read_text()  # D3C3 teacher, D2C3 student, 8 channels
    for psnr, ssim in [(32.15, 0.9108), (31.68, 0.9013), (32.26, 0.9126), (31.95, 0.9060), (32.03, 0.9070)]:
        assert f"{psnr:.2f} / {ssim:.4f}" not in report  # the paper's Table 1, cardiac 4x
    assert set(table_cells(report, "papers' Table 1)", 4).values()) == {"—"}
    assert set(table_cells(report, "papers' Table 8)", 10).values()) == {"—"}
    assert set(table_cells(report, "## Claims of the papers", 1).values()) == {"—"}  # the speed claim's too
    assert "the paper's networks are 32 channels wide, this experiment's 8." in report


def test_published_numbers_stand_beside_the_papers_networks_only(tmp_path, tiny_overrides):
    papers = {**tiny_overrides, "teacher": "D5C5", "student": "D3C5", "channels": 32, "optimization.epochs": 1,
              "epochs.distillation": 1}
    run_experiment(tiny_experiment(papers, seeds=[1]), tmp_path / "run", progress=False)
    report = (tmp_path / "run" / "report.md").read_text()
    assert table_cells(report, "papers' Table 1)", 4) == {  # the paper's Table 1, cardiac 4x
        "Zero-filled": "—", "Teacher D5C5": "32.15 / 0.9108", "SFT teacher D5C5": "32.26 / 0.9126",
        "Student D3C5": "31.68 / 0.9013", "AT Std-KD": "31.95 / 0.9060", "AT SFT-KD": "32.03 / 0.9070"}
    claims = table_cells(report, "## Claims of the papers", 1)
    assert claims["the student trails the teacher"] == "+0.47"  # 32.15 − 31.68
    assert claims["AT SFT-KD beats AT Std-KD and shrinks the teacher–student gap"] == "+0.08 (gap 0.20 → 0.12)"
    assert claims["the student is faster than the teacher at inference (teacher time / student time > 1)"] == (
        "2.64× (17.4 vs 6.6 ms, GPU)")  # 17.4 / 6.6
    # The same stages beside Table 6 (DC-UNet teacher, D3C5 student): only the student's number compares.
    before = finished(tmp_path / "run")
    table_6 = tiny_experiment({**papers, "report.paper_setting": "brain-4x-dc-unet"}, seeds=[1])
    run_experiment(table_6, tmp_path / "run", progress=False)
    assert finished(tmp_path / "run") == before
    report = (tmp_path / "run" / "report.md").read_text()
    assert table_cells(report, "papers' Table 1)", 4) == {
        "Zero-filled": "—", "Teacher D5C5": "—", "SFT teacher D5C5": "—", "Student D3C5": "39.47 / 0.9758",
        "AT Std-KD": "—", "AT SFT-KD": "—"}
    assert "not comparable: teacher D5C5, not the paper's U2C5." in report


def test_seeds_with_identical_effects_leave_a_claim_not_resolved_and_say_why(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    for stage in ("teacher", "student"):  # seed 2 scores exactly as seed 1 (a copied or deterministic stage)
        shutil.rmtree(run_dir / "stages" / "seed-2" / stage / "evaluation")
        shutil.copytree(run_dir / "stages" / "seed-1" / stage / "evaluation", run_dir / "stages" / "seed-2" / stage / "evaluation")

    def volume_psnr(stage):
        rows = read_rows(run_dir / "stages" / "seed-1" / stage / "evaluation" / "per_volume.csv")
        return {r["volume"]: float(r["psnr"]) for r in rows if r["reconstruction"] == "model"}

    teacher, student = volume_psnr("teacher"), volume_psnr("student")
    effect = sum(teacher[v] - student[v] for v in teacher) / len(teacher)
    claims = table_cells(build_report(run_dir).read_text(), "## Claims of the papers", None)
    row = claims["the student trails the teacher"]
    assert row[3] == f"[{effect:+.2f}, {effect:+.2f}]" and row[5] == "—"  # zero width, no detectable effect
    assert row[6] == "not resolved (no spread between seeds: training variance not estimated)"


def test_ablations_run_on_the_first_seed_only():
    config = load_experiment("study-sunnybrook-4x", {"random_init_ablation": True})
    ids = [stage.id for stage in build_stages(config)]
    assert ids[:5] == [f"seed-42/{name}" for name in ("teacher", "student", "sft-teacher", "std-kd-at", "sft-kd-at")]
    assert {i for i in ids if i.endswith(("-two-stage", "-paper-equations"))} == {
        "seed-42/std-kd-at-two-stage", "seed-42/sft-kd-at-two-stage", "seed-42/sft-teacher-paper-equations",
        "seed-42/sft-kd-at-paper-equations"}
    assert {i.split("/")[0] for i in ids if i.endswith("-random")} == {"seed-42", "seed-43", "seed-44"}


def test_ablations_run_on_as_many_first_seeds_as_asked_and_fine_tuning_from_one_network_on_the_first():
    config = load_experiment("study-sunnybrook-4x", {"ablation_seeds": 2, "fine_tune.teacher": "runs/some-teacher"})
    ids = [stage.id for stage in build_stages(config)]
    ablations = {i for i in ids if i.endswith(("-two-stage", "-paper-equations"))}
    assert {i.split("/")[0] for i in ablations} == {"seed-42", "seed-43"} and len(ablations) == 8
    assert [i for i in ids if i.endswith("-fine-tuned")] == ["seed-42/teacher-fine-tuned"]
    # Each seed's ablations come after every main stage, and depend on that seed's own teachers.
    assert ids.index("seed-43/std-kd-at-two-stage") > ids.index("seed-44/sft-kd-at")
    stages = {stage.id: stage for stage in build_stages(config)}
    assert stages["seed-43/sft-kd-at-paper-equations"].depends_on == ("seed-43/sft-teacher-paper-equations",)
    with pytest.raises(ConfigError, match="ablation_seeds: 4 of 3 seed"):
        load_experiment("study-sunnybrook-4x", {"ablation_seeds": 4})


def test_ablations_and_compression_sweep_reach_the_report(tmp_path, tiny_overrides):
    config = load_experiment("demo", {
        **tiny_overrides, **TWO_STAGE, "random_init_ablation": True, "compression_sweep": ["D4C3"],
        "optimization.epochs": 1, "epochs.distillation": 2, "procedure": "single-stage", "procedure_ablation": True,
        "sft_preset_ablation": ["sft-paper-equations"],
    })
    run_experiment(config, tmp_path / "run", progress=False)
    stages = set(finished(tmp_path / "run"))
    assert {"seed-42/sft-kd-at-random", "seed-42/sft-kd-at-two-stage", "seed-42/std-kd-at-two-stage",
            "seed-42/sft-teacher-paper-equations", "seed-42/sft-kd-at-paper-equations", "seed-42/student-D4C3",
            "seed-42/sft-teacher-D4C3", "seed-42/std-kd-at-D4C3", "seed-42/sft-kd-at-D4C3"} <= stages
    sweep_sft = json.loads((tmp_path / "run" / "stages" / "seed-42" / "sft-kd-at-D4C3" / "stage.json").read_text())
    assert sweep_sft["status"] == "complete"
    trained_from = (tmp_path / "run" / "stages" / "seed-42" / "sft-teacher-D4C3" / "config.yaml").read_text()
    assert "student: D4C3" in trained_from  # its own SFT teacher, with D4C3 branches
    two_stage = tmp_path / "run" / "stages" / "seed-42" / "sft-kd-at-two-stage"
    trained = [len(read_rows(two_stage / part / "metrics.csv")) for part in ("feature-stage", ".")]
    assert trained == [1, 1]  # equal total epochs: 1 + 1 against the single stage's 2
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| AT SFT-KD (random init) |" in report and "| AT SFT-KD [two-stage] | " in report
    assert "AT SFT-KD [sft-paper-equations] − AT SFT-KD | PSNR" in report
    claims = report.split("## Claims of the papers")[1].split("\n## ")[0]
    assert "not resolved (1 seed: training variance not covered)" in claims  # computed, in the table itself
    table8 = report.split("papers' Table 8")[1].split("##")[0]
    assert [line.split("|")[1].strip() for line in table8.splitlines() if line.startswith("| ") and "network" not in line] == [
        "Teacher D3C3", "Student D4C3", "AT Std-KD D4C3", "AT SFT-KD D4C3", "Student D2C3", "AT Std-KD", "AT SFT-KD",
    ]
    assert "AT SFT-KD D4C3 − AT Std-KD D4C3 | PSNR" in report and "AT Std-KD D4C3 − Student D4C3 | PSNR" in report
    # Timed per architecture at report time: a distilled student's cells are its baseline's, the teacher's ratio is 1.
    timing = {line.split("|")[1].strip(): line.split("|")[5:7] for line in table8.splitlines() if line.startswith("| ")}
    assert timing["AT Std-KD D4C3"] == timing["AT SFT-KD D4C3"] == timing["Student D4C3"]
    assert timing["AT SFT-KD"] == timing["Student D2C3"] != timing["Student D4C3"]
    assert timing["Teacher D3C3"][1].strip() == "1.00× (1.00–1.00×)"


def test_claims_section_interval_equals_scipys_from_the_per_volume_files(tiny_run):
    def volume_psnr(stage, seed):
        rows = read_rows(tiny_run / "stages" / f"seed-{seed}" / stage / "evaluation" / "per_volume.csv")
        return {r["volume"]: float(r["psnr"]) for r in rows if r["reconstruction"] == "model"}

    differences = []
    for seed in SEEDS:
        sft, std = volume_psnr("sft-kd-at", seed), volume_psnr("std-kd-at", seed)
        differences.append(sum(sft[v] - std[v] for v in sft) / len(sft))
    low, high = stats.t.interval(0.95, len(differences) - 1, loc=sum(differences) / 2, scale=stats.sem(differences))
    report = (tiny_run / "report.md").read_text()
    claims = report.split("## Claims of the papers")[1].split("\n## ")[0]
    row = next(line for line in claims.splitlines() if line.startswith("| AT SFT-KD beats AT Std-KD"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[3] == f"[{low:+.2f}, {high:+.2f}]"
    expected = "reproduced" if low > 0 else "contradicted" if high < 0 else "not resolved at this budget"
    assert cells[6] == expected
    for claim in ("the student trails the teacher", "AT Std-KD improves on the student",
                  "the SFT teacher is at least as good as the teacher", "the student is faster than the teacher"):
        assert f"| {claim}" in claims, claim


def test_recorded_study_keeps_its_fingerprints():
    """The recorded study (docs/results.md) resumes only while its stages' fingerprints stay the same:
    a change to how stage configs are built would make 'kdrecon run' rerun every finished stage.
    Change this value only together with a note that recorded run directories must be rerun
    (last changed when the preset left its training layout to the machine, channels_last: auto)."""
    import hashlib

    from kdrecon.experiment.stages import fingerprints

    prints = fingerprints(build_stages(load_experiment("study-sunnybrook-4x")))
    assert prints["seed-42/teacher"] == "00630def6ef9372e"
    digest = hashlib.sha256(" ".join(f"{k}={v}" for k, v in prints.items()).encode()).hexdigest()[:16]
    assert digest == "a6dc5abc9370aa22"


def test_compile_reaches_every_stage_and_only_when_asked():
    """``compile: true`` (the GPU's fast path, docs/benchmarks.md) is a setting of every stage, validated
    by the stage's own config; left at its default it is absent, so earlier runs keep their fingerprints."""
    from kdrecon.experiment.runner import _stage_config
    from kdrecon.report.run_layout import RunLayout

    compiled = build_stages(load_experiment("demo", {"compile": True}))
    plain = build_stages(load_experiment("demo"))
    assert all(stage.config["compile"] is True for stage in compiled)
    assert all("compile" not in stage.config for stage in plain)
    layout = RunLayout(Path("unused"))
    assert all(_stage_config(stage, layout).compile for stage in compiled)
    assert set(fingerprints(compiled).values()).isdisjoint(fingerprints(plain).values())


def test_method_settings_reach_every_distillation_of_that_method_only():
    layers = {"teacher": ["blocks.0.layers.1"], "student": ["blocks.0.layers.0"]}
    config = load_experiment("demo", {"methods": ["at", "sp"], "compression_sweep": ["D2C5"],
                                      "method_settings": {"at": {"feature_weight": 250, "layers": layers}}})
    distills = {stage.name: stage.config for stage in build_stages(config) if stage.kind == "distill"}
    assert set(distills) == {"std-kd-at", "sft-kd-at", "std-kd-sp", "sft-kd-sp", "std-kd-at-D2C5", "sft-kd-at-D2C5"}
    for name, stage in distills.items():
        expected = ({"feature_weight": 250, "layers": layers} if "-at" in name else {})
        assert {k: stage[k] for k in ("feature_weight", "layers") if k in stage} == expected, name
    assert distills["sft-kd-at-D2C5"]["student"]["name"] == "D2C5"


#: The new presets' networks shrunk to seconds, their structure (families, sweep, methods, paper column) kept.
SHRUNK_PRESETS = {
    "heterogeneous-sunnybrook-4x": {"teacher": "U1C3", "student": "D2C3"},
    "paper-heterogeneous-brain-4x": {"teacher": "U1C3", "student": "D2C3"},
    "compression-sunnybrook-4x": {"teacher": "D4C3", "student": "D3C3", "compression_sweep": ["D2C3"]},
    "kd-mri-sunnybrook-4x": {"epochs.distillation": 2, **TWO_STAGE},
    "conventional-sft-sunnybrook-4x": {"teacher": "R9B3", "student": "R6B3"},
    "methods-sunnybrook-4x": {"teacher": "D4C3", "student": "D3C3"},
}


@pytest.mark.parametrize("preset", sorted(SHRUNK_PRESETS))
def test_table_presets_run_end_to_end_on_a_tiny_setting(tmp_path, tiny_overrides, preset):
    overrides = {**tiny_overrides, "name": preset, "seeds": [1], "optimization.epochs": 1, "epochs.distillation": 1,
                 "dataset_slices": {}, **SHRUNK_PRESETS[preset]}  # the tiny dataset is not the preset's
    config = load_experiment(preset, overrides)
    run_experiment(config, tmp_path / "run", progress=False)
    report = (tmp_path / "run" / "report.md").read_text()
    table8 = report.split("papers' Table 8")[1].split("\n## ")[0]
    if preset.startswith("kd-mri"):
        section = report.split("## KD-MRI's ablation")[1].split("\n## ")[0]
        assert [line.split("|")[1].strip() for line in section.splitlines()[3:] if line.startswith("| ")] == [
            "Student D2C3", "KD-MRI: AT alone", "KD-MRI: imitation alone", "KD-MRI: AT + imitation (its procedure)",
            "Teacher D3C3"]
        assert "kd-mri-cardiac-4x: KD-MRI results table" in report and "32.07 / 0.9084" not in section  # other networks
        assert "KD-MRI: AT + imitation (its procedure) − KD-MRI: AT alone | PSNR" in report
        imitation = tmp_path / "run" / "stages" / "seed-1" / "kd-mri-imitation" / "config.yaml"
        assert "method: imitation" in imitation.read_text() and "alpha: 0.5" in imitation.read_text()
    elif preset.startswith("conventional-sft"):
        assert "| Teacher R9B3 |" in report and "| AT SFT-KD | " in report
        assert "brain-4x-conventional-sft: SFT-KD-Recon Table 4" in report and "34.06 / 0.9296" not in report
        branches = tmp_path / "run" / "stages" / "seed-1" / "sft-teacher" / "config.yaml"
        assert "teacher: R9B3" in branches.read_text() and "student: R6B3" in branches.read_text()
    elif preset.startswith("methods"):
        claims = report.split("## Claims of the papers")[1].split("\n## ")[0]
        for label in ("AT", "FitNets", "SP", "FSP", "CC"):
            assert f"| {label} SFT-KD beats {label} Std-KD and shrinks the teacher–student gap |" in claims
            assert f"| {label} Std-KD improves on the student |" in claims
        assert "paper (cardiac-4x, dB)" in claims and "31.95 / 0.9060" not in report  # other networks
    elif "heterogeneous" in preset:
        assert "| Teacher U1C3 |" in report and "| AT SFT-KD | " in report
        assert "brain-4x-dc-unet: SFT-KD-Recon Table 6" in report and "40.11 / 0.9777" not in report
    else:
        assert [line.split("|")[1].strip() for line in table8.splitlines() if line.startswith("| ") and "network" not in line] == [
            "Teacher D4C3", "Student D3C3", "AT Std-KD", "AT SFT-KD", "Student D2C3", "AT Std-KD D2C3", "AT SFT-KD D2C3"]


def test_fine_tuned_stage_starts_from_the_trained_network_and_is_compared_with_scratch(tmp_path, tiny_run, tiny_overrides):
    source = tiny_run / "stages" / "seed-1" / "sft-teacher"
    config = load_experiment("fine-tune-sunnybrook-5x", {
        **tiny_overrides, "data.acceleration": "4x", "seeds": [3], "fine_tune.sft_teacher": str(source), "dataset_slices": {}})
    assert [s.id for s in build_stages(config)][-1] == "seed-3/sft-teacher-fine-tuned"
    run_experiment(config, tmp_path / "run", progress=False)
    histories = {name: read_rows(tmp_path / "run" / "stages" / "seed-3" / name / "metrics.csv")
                 for name in ("sft-teacher", "sft-teacher-fine-tuned")}
    # Started from an SFT teacher already trained on these slices, the first epoch ends lower.
    assert float(histories["sft-teacher-fine-tuned"][0]["validation_loss"]) < float(histories["sft-teacher"][0]["validation_loss"])
    assert "| SFT teacher D3C3 [fine-tuned] − SFT teacher D3C3 | PSNR" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(ConfigError, match=r"stage seed-3/teacher-fine-tuned: init_from: .*no checkpoint found"):
        run_experiment(load_experiment("demo", {**tiny_overrides, "seeds": [3], "fine_tune.teacher": str(tmp_path)}),
                       tmp_path / "other", progress=False)
    assert not (tmp_path / "other").exists()


def test_a_fine_tune_path_with_a_seed_placeholder_fine_tunes_every_seed_from_its_own_network(tiny_overrides):
    def fine_tuned(path: str) -> dict[str, str]:
        config = load_experiment("fine-tune-sunnybrook-5x", {
            **tiny_overrides, "data.acceleration": "4x", "seeds": [7, 8], "fine_tune.sft_teacher": path, "dataset_slices": {}})
        return {s.id: s.config["init_from"] for s in build_stages(config) if s.name == "sft-teacher-fine-tuned"}

    assert fine_tuned("runs/a/stages/seed-{seed}/sft-teacher") == {
        "seed-7/sft-teacher-fine-tuned": "runs/a/stages/seed-7/sft-teacher",
        "seed-8/sft-teacher-fine-tuned": "runs/a/stages/seed-8/sft-teacher"}
    assert fine_tuned("runs/a/stages/seed-42/sft-teacher") == {
        "seed-7/sft-teacher-fine-tuned": "runs/a/stages/seed-42/sft-teacher"}
    with pytest.raises(ConfigError, match=r"fine_tune.sft_teacher: .*only placeholder.*\{seed\}"):
        fine_tuned("runs/{name}/sft-teacher")


def test_a_study_is_built_stage_by_stage_from_a_new_directory(tmp_path, tiny_overrides):
    config = tiny_experiment(tiny_overrides, seeds=[5], **{"optimization.epochs": 1, "epochs.distillation": 1})
    run_experiment(config, tmp_path / "run", only=["teacher"], progress=False)
    run_experiment(config, tmp_path / "run", only=["student"], progress=False)
    first = finished(tmp_path / "run")
    assert set(first) == {"seed-5/teacher", "seed-5/student"}
    run_experiment(config, tmp_path / "run", progress=False)
    after = finished(tmp_path / "run")
    assert {k: after[k] for k in first} == first and len(after) == 5  # the two reused, the rest trained


def test_stages_with_the_same_settings_and_inputs_are_copied_from_another_run(tmp_path, tiny_run, tiny_overrides):
    # Another experiment sharing seed 1's teacher and student (same settings), with a new student-side setting.
    config = tiny_experiment({**tiny_overrides, **TWO_STAGE}, seeds=[1], kd_mri_ablation=True)
    run_experiment(config, tmp_path / "run", only=["teacher", "student", "sft-teacher"], reuse_from=tiny_run, progress=False)
    copied = finished(tmp_path / "run")
    assert copied == {k: v for k, v in finished(tiny_run).items() if k in copied}  # copied, not retrained
    assert set(copied) == {f"seed-1/{name}" for name in STAGES}  # every shared stage; the KD-MRI ones are new
    assert not list((tmp_path / "run" / "stages" / "seed-1").glob("*.copying"))
    with pytest.raises(ConfigError, match="--reuse-from .*: not an experiment run directory"):
        run_experiment(config, tmp_path / "other", reuse_from=tmp_path / "nowhere")


def test_claims_say_where_the_papers_effect_lies_against_the_seed_interval(tmp_path, tiny_run, monkeypatch):
    """A published effect above, inside and below the t interval computed here with SciPy."""
    def seed_means(stage_b, stage_a):
        means = []
        for seed in SEEDS:
            scores = {}
            for stage in (stage_b, stage_a):
                rows = read_rows(tiny_run / "stages" / f"seed-{seed}" / stage / "evaluation" / "per_volume.csv")
                scores[stage] = {r["volume"]: float(r["psnr"]) for r in rows if r["reconstruction"] == "model"}
            means.append(sum(scores[stage_b][v] - scores[stage_a][v] for v in scores[stage_a]) / len(scores[stage_a]))
        return means

    published = {}
    for (other, baseline), offset in {("teacher", "student"): +0.5, ("sft-kd-at", "std-kd-at"): -0.5,
                                      ("sft-teacher", "teacher"): 0.0, ("std-kd-at", "student"): None}.items():
        means = seed_means(other, baseline)
        low, high = stats.t.interval(0.95, len(means) - 1, loc=sum(means) / len(means), scale=stats.sem(means))
        if offset is None:  # beyond the bound, but printed to two decimals as the bound: compared as printed
            published[other, baseline] = round(high, 2) + 0.0049
        else:
            published[other, baseline] = (high if offset > 0 else low if offset < 0 else (low + high) / 2) + offset
    monkeypatch.setattr("kdrecon.report.build.published_effect",
                        lambda results, comparison: published.get((comparison.other, comparison.baseline)))
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    claims = table_cells(build_report(run_dir).read_text(), "## Claims of the papers", 7)
    assert claims["the student trails the teacher"] == "above"
    assert claims["AT SFT-KD beats AT Std-KD and shrinks the teacher–student gap"] == "below"
    assert claims["the SFT teacher is at least as good as the teacher"] == "inside"
    assert claims["AT Std-KD improves on the student"] == "inside"
