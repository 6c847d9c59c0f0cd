"""Pooling a record's seeds (scripts/record_experiment.sh) with a run of the same experiment."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdrecon.experiment.config import load_experiment
from kdrecon.experiment.records import recorded_stages
from kdrecon.experiment.runner import run_experiment
from kdrecon.report.build import build_report
from kdrecon.report.paper_column import network_differences
from kdrecon.report.results import load_results

RECORD_SCRIPT = Path(__file__).parents[1] / "scripts" / "record_experiment.sh"


def record_of(run_dir: Path, record: Path, keep_seed: int) -> Path:
    """``run_dir`` recorded as docs/ keeps it, with only the seed ``keep_seed``."""
    subprocess.run(["bash", str(RECORD_SCRIPT), str(run_dir), str(record)], check=True, capture_output=True)
    for folder in record.glob("seed-*"):
        if folder.name != f"seed-{keep_seed}":
            shutil.rmtree(folder)
    return record


def section(report: str, heading: str) -> list[str]:
    """The table rows of ``heading``'s section, without the inference-speed row (timed afresh per report)."""
    text = report.split(heading)[1].split("\n## ")[0]
    return [line for line in text.splitlines() if line.startswith("| ") and "faster than the teacher" not in line]


@pytest.fixture(scope="module")
def seed_2_run(tmp_path_factory, tiny_run, tiny_overrides):
    """The two-seed tiny run narrowed to its seed 2 (every stage reused), and a record of its seed 1."""
    root = tmp_path_factory.mktemp("pooling")
    record = record_of(tiny_run, root / "record", keep_seed=1)
    run_dir = root / "run"
    shutil.copytree(tiny_run, run_dir)
    shutil.rmtree(run_dir / "stages" / "seed-1")
    run_experiment(load_experiment("demo", {**tiny_overrides, "seeds": [2]}), run_dir, progress=False)
    return run_dir, record


def test_pooled_report_has_the_numbers_of_one_run_of_both_seeds(seed_2_run, tiny_run):
    run_dir, record = seed_2_run
    report = build_report(run_dir, recorded_stages(run_dir, record)).read_text()
    both = (tiny_run / "report.md").read_text()
    assert f"Seed 1 pooled from the record {record}" in report
    assert "seeds 1, 2;" in report
    for heading in ("## Claims of the papers", "papers' Table 1)", "## Effects over seeds"):
        rows = section(report, heading)
        assert len(rows) > 3 and rows == section(both, heading)
    assert "| AT SFT-KD vs AT Std-KD | 2 |" in report and "| AT SFT-KD vs AT Std-KD | 1 |" not in report  # per-slice: own seed


def training_path(stage_json: Path) -> str:
    state = json.loads(stage_json.read_text())
    return f"{state['precision']} {'channels-last' if state['channels_last'] else 'NCHW'}"


def test_pooled_report_names_the_training_paths_and_says_when_they_differ(seed_2_run, tmp_path):
    run_dir, record = seed_2_run
    own = training_path(run_dir / "stages" / "seed-2" / "teacher" / "stage.json")
    recorded = training_path(record / "seed-1" / "teacher" / "stage.json")
    report = build_report(run_dir, recorded_stages(run_dir, record)).read_text()
    assert f"Trained in {recorded}; this run's own stages in {own}." in report
    other = tmp_path / "record"
    shutil.copytree(record, other)
    for stage_json in other.glob("seed-1/*/stage.json"):  # as if trained on a machine whose `auto` chose bf16
        state = json.loads(stage_json.read_text())
        stage_json.write_text(json.dumps({**state, "precision": "bf16", "channels_last": True}))
    report = build_report(run_dir, recorded_stages(run_dir, other)).read_text()
    assert f"Trained in bf16 channels-last; this run's own stages in {own}: the two differ" in report
    for stage_json in other.glob("seed-1/*/stage.json"):  # written before stage.json recorded the path
        state = json.loads(stage_json.read_text())
        stage_json.write_text(json.dumps({k: v for k, v in state.items() if k not in ("precision", "channels_last")}))
    report = build_report(run_dir, recorded_stages(run_dir, other)).read_text()
    assert "Trained in fp32 " in report  # the experiment sets fp32, and equal fingerprints mean equal settings


def test_a_seed_in_two_records_is_refused_naming_both(seed_2_run, tmp_path):
    run_dir, record = seed_2_run
    copy = tmp_path / "copy"
    shutil.copytree(record, copy)
    with pytest.raises(ValueError, match=f"seed-1/teacher: both in {record} and in {copy}"):
        build_report(run_dir, recorded_stages(run_dir, record) + recorded_stages(run_dir, copy))


def test_record_of_other_settings_is_refused(seed_2_run, tmp_path):
    run_dir, record = seed_2_run
    other = tmp_path / "run"
    shutil.copytree(run_dir, other)
    config = yaml.safe_load((other / "experiment.yaml").read_text())
    config["optimization"]["learning_rate"] = 0.002
    (other / "experiment.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"seed-1/teacher: fingerprint \w+, but .* gives \w+ for this stage and seed"):
        recorded_stages(other, record)


def test_record_of_a_seed_the_run_has_is_refused(seed_2_run, tmp_path, tiny_run):
    run_dir, _ = seed_2_run
    record = record_of(tiny_run, tmp_path / "record", keep_seed=2)
    with pytest.raises(ValueError, match="seed 2 is also a seed of"):
        recorded_stages(run_dir, record)


def test_only_the_asked_seeds_of_a_record_are_pooled(seed_2_run, tmp_path, tiny_run):
    """A record of both seeds, pooled with a run that retrained seed 2: only its seed 1 counts."""
    run_dir, record = seed_2_run
    both = tmp_path / "both"
    subprocess.run(["bash", str(RECORD_SCRIPT), str(tiny_run), str(both)], check=True, capture_output=True)
    pooled = recorded_stages(run_dir, both, seeds=[1])
    assert pooled and {stage.seed for stage in pooled} == {1}
    assert {stage.id for stage in pooled} == {stage.id for stage in recorded_stages(run_dir, record)}
    with pytest.raises(ValueError, match="seed 2 is also a seed of"):
        recorded_stages(run_dir, both)
    with pytest.raises(ValueError, match="has no seed 3 .its seeds: 1, 2."):
        recorded_stages(run_dir, both, seeds=[1, 3])
    process = subprocess.run([sys.executable, "-m", "kdrecon", "report", "--with-record", f"{both}:1", str(run_dir)],
                             capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    assert f"Seed 1 pooled from the record {both}" in (run_dir / "report.md").read_text()


def test_cli_refuses_a_folder_that_is_no_record_in_one_line_and_writes_nothing(seed_2_run, tmp_path):
    run_dir, _ = seed_2_run
    before = (run_dir / "report.md").read_bytes()
    process = subprocess.run([sys.executable, "-m", "kdrecon", "report", str(run_dir), "--with-record", str(tmp_path)],
                             capture_output=True, text=True)
    assert process.returncode != 0
    assert process.stderr.strip().count("\n") == 0 and "no seed-N folders" in process.stderr
    assert (run_dir / "report.md").read_bytes() == before


def test_a_pooled_sft_teachers_networks_are_read_from_the_runs_experiment(seed_2_run, tiny_overrides):
    """The record's seed comes first, and its SFT teacher has no entry in the run's manifest."""
    run_dir, record = seed_2_run
    results = load_results(run_dir).with_recorded(recorded_stages(run_dir, record))
    assert results.first("sft-teacher").recorded_in == record
    teacher, student = tiny_overrides["teacher"], tiny_overrides["student"]
    assert network_differences(results, "sft-teacher") == [
        f"teacher {teacher}, not the paper's D5C5", f"student {student}, not the paper's D3C5"]
