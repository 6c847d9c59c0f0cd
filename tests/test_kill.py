"""SIGKILL at random moments: each command, run again, ends with the uninterrupted result and no debris.

Preparation, training, distillation, evaluation and ``kdrecon run`` are each killed at moments
drawn (with a fixed seed) over an uninterrupted run's duration, then run again to completion; the
result must equal the uninterrupted one bit for bit, and no temporary may be left anywhere
(issue 14, item 5). A bounded loop: one or two kills per command, so CI time stays small.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from kdrecon.data.dataset import sample_directory
from kdrecon.training.checkpoint import load_checkpoint

DEBRIS = (".*.partial*", ".*.writing", "*.copying")


def command(*arguments) -> list[str]:
    return [sys.executable, "-m", "kdrecon", *map(str, arguments), "--quiet"] if arguments[0] in ("train", "distill", "run") \
        else [sys.executable, "-m", "kdrecon", *map(str, arguments)]


def run(arguments: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    process = subprocess.run(arguments, cwd=cwd, capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    return time.perf_counter() - began


def killed(arguments: list[str], cwd: Path, duration: float, rng: random.Random) -> bool:
    """Start ``arguments`` and SIGKILL it at a random moment within ``duration``; False if it finished first."""
    process = subprocess.Popen(arguments, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=rng.uniform(0.1, 0.9) * duration)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True
    assert process.returncode == 0
    return False


def killed_then_finished(arguments: list[str], cwd: Path, duration: float, rng: random.Random, output: Path,
                         kills: int = 1) -> None:
    """Kill ``arguments`` ``kills`` times at random moments within ``duration``, then let it finish.

    A run that finishes before its kill (the machine was faster this time) is deleted and
    started again with the kill drawn within half the time.
    """
    done = 0
    for _ in range(kills + 6):
        if done == kills:
            break
        if killed(arguments, cwd, duration, rng):
            done += 1
        else:
            shutil.rmtree(output)
            duration /= 2
    assert done == kills, f"{arguments[3]} always finished before it could be killed"
    run(arguments, cwd)


def debris(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for pattern in DEBRIS for p in root.rglob(pattern))


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    payload = load_checkpoint(run_dir / "checkpoints" / "best.pt", torch.device("cpu"))
    return {name: tensor.numpy() for name, tensor in payload["modules"]["model"].items()}


def losses(run_dir: Path) -> list[str]:
    """``metrics.csv`` without its timing columns."""
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if "seconds" not in name and "per_second" not in name]
    return [",".join(line.split(",")[i] for i in keep) for line in lines]


def dataset_digest(directory: Path) -> dict[str, str]:
    digest = {}
    for path in sorted(directory.rglob("*")):
        if path.suffix == ".h5":
            with h5py.File(path) as file:
                for key in sorted(file):
                    digest[f"{path.relative_to(directory)}:{key}"] = hashlib.sha256(file[key][()].tobytes()).hexdigest()
        elif path.is_file() and path.name != "dataset.json":  # the manifest records when it was made
            digest[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert np.array_equal(first[name], second[name]), name
    assert losses(a) == losses(b)


#: Precision and layout stated: ``auto`` is measured in each process, so an uninterrupted reference
#: and a killed run could otherwise train in different layouts (float rounding apart).
TINY = ["--epochs", "3", "--batch-size", "8", "--precision", "fp32", "--set", "channels_last=true"]


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
    """Uninterrupted runs of each command and how long each took."""
    root = tmp_path_factory.mktemp("uninterrupted")
    seconds = {
        "prepare": run(command("prepare", "sunnybrook", sample_directory(), root / "data", "--crop", "48", "--phases", "0",
                               "--mask", "recipe"), root),
        "train": run(command("train", "--dataset", tiny_dataset, "--model", "D3C3", "--set", "model.channels=8",
                             "--run-dir", root / "teacher", *TINY), root),
    }
    seconds["distill"] = run(command("distill", "--teacher", root / "teacher", "--student", "D2C3", "--set",
                                     "student.channels=8", "--feature-epochs", "2", "--run-dir", root / "student", *TINY), root)
    seconds["evaluate"] = run(command("evaluate", root / "student", "--output", root / "evaluation"), root)
    return root, seconds


def test_killed_preparation_resumes_to_the_same_dataset(reference, tmp_path):
    root, seconds = reference
    arguments = command("prepare", "sunnybrook", sample_directory(), tmp_path / "data", "--crop", "48", "--phases", "0",
                        "--mask", "recipe")
    killed_then_finished(arguments, tmp_path, seconds["prepare"], random.Random(1), tmp_path / "data")
    assert dataset_digest(tmp_path / "data") == dataset_digest(root / "data")
    assert debris(tmp_path) == []


def test_killed_training_and_distillation_resume_to_identical_weights(reference, tiny_dataset, tmp_path):
    root, seconds = reference
    rng = random.Random(2)
    killed_then_finished(command("train", "--dataset", tiny_dataset, "--model", "D3C3", "--set", "model.channels=8",
                                 "--run-dir", tmp_path / "teacher", *TINY), tmp_path, seconds["train"], rng,
                         tmp_path / "teacher")
    assert_same_weights(tmp_path / "teacher", root / "teacher")
    killed_then_finished(command("distill", "--teacher", tmp_path / "teacher", "--student", "D2C3", "--set",
                                 "student.channels=8", "--feature-epochs", "2", "--run-dir", tmp_path / "student", *TINY),
                         tmp_path, seconds["distill"], rng, tmp_path / "student")
    assert_same_weights(tmp_path / "student", root / "student")
    assert_same_weights(tmp_path / "student" / "feature-stage", root / "student" / "feature-stage")
    assert debris(tmp_path) == []


def test_killed_evaluation_leaves_the_whole_evaluation_or_none(reference, tmp_path):
    root, seconds = reference
    arguments = command("evaluate", root / "student", "--output", tmp_path / "evaluation")
    rng = random.Random(3)
    kills = 0
    for _ in range(2):
        kills += killed(arguments, tmp_path, seconds["evaluate"], rng)
        if (tmp_path / "evaluation").exists():  # never reconstructions without their summary
            assert (tmp_path / "evaluation" / "summary.json").is_file()
    assert kills > 0, "every evaluation finished before its kill: the test killed nothing"
    run(arguments, tmp_path)
    expected = json.loads((root / "evaluation" / "summary.json").read_text())["model_metrics"]
    assert json.loads((tmp_path / "evaluation" / "summary.json").read_text())["model_metrics"] == expected
    assert debris(tmp_path) == []


def test_killed_experiment_resumes_to_the_same_stages(tiny_overrides, tmp_path):
    settings = {**tiny_overrides, "optimization.epochs": 1, "epochs.distillation": 1, "report.bootstrap_resamples": 100,
                "channels_last": "true"}  # stated, as in TINY
    arguments = ["run", "demo", "--seeds", "1"] + [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]
    began = time.perf_counter()
    run(command(*arguments, "--run-dir", tmp_path / "reference"), tmp_path)
    killed_then_finished(command(*arguments, "--run-dir", tmp_path / "killed"), tmp_path, time.perf_counter() - began,
                         random.Random(4), tmp_path / "killed")
    for state in sorted((tmp_path / "reference" / "stages").glob("*/*/stage.json")):
        stage = state.parent.relative_to(tmp_path / "reference")
        expected, found = json.loads(state.read_text()), json.loads((tmp_path / "killed" / stage / "stage.json").read_text())
        assert found["status"] == "complete" and found["metrics"] == expected["metrics"], stage
    assert (tmp_path / "killed" / "report.md").is_file() and not (tmp_path / "killed" / "superseded").exists()
    assert debris(tmp_path) == []


def test_terminated_experiment_records_its_stage_interrupted_and_releases_its_lock(tiny_overrides, tmp_path):
    settings = {**tiny_overrides, "optimization.epochs": 1, "epochs.distillation": 1}
    arguments = ["run", "demo", "--seeds", "1"] + [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]
    run_dir = tmp_path / "run"
    process = subprocess.Popen(command(*arguments, "--run-dir", run_dir), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(run_dir.glob("stages/*/*/stage.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # as `kill` or a scheduler's time limit sends it
    assert process.wait(timeout=120) != 0
    statuses = [json.loads(path.read_text())["status"] for path in run_dir.glob("stages/*/*/stage.json")]
    assert "running" not in statuses and statuses.count("interrupted") == 1, statuses
    assert not (run_dir / ".kdrecon-run.lock").exists()
