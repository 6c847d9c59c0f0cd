"""The command line end to end on real data: train, evaluate, prepare, and bad input."""

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from kdrecon.cli import main


def run_cli(*args):
    """Run ``python -m kdrecon`` in a subprocess; return (exit code, stdout, stderr)."""
    process = subprocess.run([sys.executable, "-m", "kdrecon", *map(str, args)], capture_output=True, text=True)
    return process.returncode, process.stdout, process.stderr


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "student"
    config = run_dir.parent / "student.yaml"
    config.write_text("model:\n  name: D2C2\n  channels: 8\noptimization:\n  epochs: 1\n  batch_size: 8\n")
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def test_train_writes_a_complete_run(trained_run):
    for name in ("config.yaml", "metrics.csv", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (trained_run / name).is_file(), name
    assert any((trained_run / "tensorboard").iterdir())
    assert "D2C2" in (trained_run / "config.yaml").read_text()


def test_evaluate_writes_reconstructions_csvs_and_summary(trained_run, tmp_path):
    output = tmp_path / "evaluation"
    assert main(["evaluate", str(trained_run), "--output", str(output)]) == 0
    files = sorted((output / "reconstructions").glob("*.h5"))
    assert [f.stem for f in files] == [f"SCD0000401_phase{p:02d}" for p in (0, 5, 10, 15)]
    with h5py.File(files[0]) as file:
        reconstruction = file["reconstruction"][()]
    assert reconstruction.shape == (11, 150, 150) and reconstruction.dtype == np.float32
    summary = json.loads((output / "summary.json").read_text())
    with open(output / "per_volume.csv") as handle:
        rows = list(csv.DictReader(handle))
    model_psnr = [float(r["psnr"]) for r in rows if r["reconstruction"] == "model"]
    assert summary["model_metrics"]["psnr"]["mean"] == pytest.approx(np.mean(model_psnr))
    assert set(summary["zero_filled_metrics"]) == {"psnr", "ssim", "nmse", "hfn", "vif"}
    with open(output / "per_slice.csv") as handle:
        assert sum(1 for r in csv.DictReader(handle) if r["reconstruction"] == "model") == 44


def test_evaluate_on_other_data_than_the_networks_own_says_so_beside_the_scores(trained_run, tmp_path, capsys):
    assert main(["evaluate", str(trained_run), "--output", str(tmp_path / "own")]) == 0
    assert "note:" not in capsys.readouterr().out
    assert main(["evaluate", str(trained_run), "--output", str(tmp_path / "5x"), "--acceleration", "5x"]) == 0
    assert f"note: {trained_run.name} was trained at 4x, evaluated at 5x" in capsys.readouterr().out
    summary = json.loads((tmp_path / "5x" / "summary.json").read_text())
    assert summary["trained_on"] == {"dataset": "sample", "acceleration": "4x"} and summary["acceleration"] == "5x"


def test_evaluation_in_bf16_records_it_and_scores_as_float32_does(trained_run, tiny_dataset, tmp_path, capsys):
    small = ["--dataset", str(tiny_dataset)]
    summaries = {}
    for precision in ("fp32", "bf16"):
        output = tmp_path / precision
        assert main(["evaluate", str(trained_run), "--output", str(output), "--precision", precision, *small]) == 0
        summaries[precision] = json.loads((output / "summary.json").read_text())
        assert summaries[precision]["precision"] == precision
    def images(precision):
        for path in sorted((tmp_path / precision / "reconstructions").glob("*.h5")):
            with h5py.File(path) as file:
                yield file["reconstruction"][()]

    assert not all(np.array_equal(a, b) for a, b in zip(images("fp32"), images("bf16")))  # bf16 did run
    # bf16 rounding moves a score by far less than the spread between seeds (about 0.15 dB)
    psnr = {precision: summary["model_metrics"]["psnr"]["mean"] for precision, summary in summaries.items()}
    assert psnr["bf16"] == pytest.approx(psnr["fp32"], abs=0.05)
    with pytest.raises(SystemExit) as refused:
        main(["evaluate", str(trained_run), "--output", str(tmp_path / "x"), "--precision", "fp16"])
    assert refused.value.code == 2 and "--precision" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("recorded, expected", [("bf16", "bf16"), ("fp32", "fp32")])
def test_evaluation_runs_as_the_checkpoint_records_it_was_trained(recorded, expected, trained_run, tiny_dataset,
                                                                    tmp_path, monkeypatch):
    from kdrecon.evaluation import evaluate as evaluation
    from kdrecon.training import fast_path
    from kdrecon.training.checkpoint import load_checkpoint, save_checkpoint

    # a device whose fast path is bf16, and a checkpoint that says how it was trained
    monkeypatch.setattr(fast_path, "cpu_training_path", lambda: fast_path.CpuTrainingPath("bf16", True, {}))
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(checkpoint, {**load_checkpoint(trained_run / "checkpoints" / "best.pt"), "precision": recorded})
    default = evaluation.evaluate(checkpoint, tmp_path / "default", dataset=tiny_dataset, device="cpu")
    explicit = evaluation.evaluate(checkpoint, tmp_path / "explicit", dataset=tiny_dataset, device="cpu", precision=expected)
    assert default.summary["precision"] == expected
    assert default.summary["model_metrics"] == explicit.summary["model_metrics"]


def test_evaluation_on_slices_already_loaded_equals_loading_them(trained_run, tiny_dataset, tmp_path):
    """An experiment loads its validation split once and hands it to every stage's evaluation."""
    from kdrecon.data.dataset import load_split
    from kdrecon.evaluation import evaluate as evaluation

    loaded = evaluation.evaluate(trained_run, tmp_path / "loaded", dataset=tiny_dataset, device="cpu")
    given = evaluation.evaluate(trained_run, tmp_path / "given", dataset=tiny_dataset, device="cpu",
                                data=load_split(tiny_dataset, "validation"))
    assert given.summary == loaded.summary
    other = load_split("sample", "validation", "5x")
    with pytest.raises(ValueError, match="trained on 4x reconstruction magnitude data, given 5x reconstruction magnitude"):
        evaluation.evaluate(trained_run, tmp_path / "other", dataset=tiny_dataset, device="cpu", data=other)
    assert not (tmp_path / "other").exists()


def test_evaluation_replaces_a_previous_one_whole_and_refuses_other_folders(trained_run, tiny_dataset, tmp_path, capsys):
    output = tmp_path / "evaluation"
    small = ["--dataset", str(tiny_dataset)]  # 48×48 slices: this test is about files, not scores
    assert main(["evaluate", str(trained_run), "--output", str(output), *small]) == 0
    (output / "reconstructions" / "another_model_volume.h5").write_bytes(b"")  # as left by an older evaluation
    assert main(["evaluate", str(trained_run), "--output", str(output), *small]) == 0
    assert not (output / "reconstructions" / "another_model_volume.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation"]  # no staging or previous copies left
    elsewhere = tmp_path / "notes"
    elsewhere.mkdir()
    (elsewhere / "mine.txt").write_text("keep me")
    assert main(["evaluate", str(trained_run), "--output", str(elsewhere), *small]) == 2
    assert "exists and is not an evaluation directory" in capsys.readouterr().err
    assert [p.name for p in elsewhere.iterdir()] == ["mine.txt"]
    # Another run's evaluation (an experiment stage's, say) is that run's result, not ours to replace.
    other_run = tmp_path / "other-run"
    shutil.copytree(trained_run, other_run)
    summary = (output / "summary.json").read_text()
    assert main(["evaluate", str(other_run), "--output", str(output), *small]) == 2
    assert f"holds the evaluation of {trained_run}" in capsys.readouterr().err
    assert (output / "summary.json").read_text() == summary
    assert main(["evaluate", str(trained_run), "--which", "last", "--output", str(output), *small]) == 0  # same run
    from kdrecon.training.checkpoint import load_checkpoint

    last = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    assert json.loads((output / "summary.json").read_text())["epoch"] == last["epoch"]  # the epoch scored, not the best
    # Files of the user's beside an evaluation would go with it.
    (output / "NOTES.md").write_text("keep me")
    assert main(["evaluate", str(trained_run), "--output", str(output), *small]) == 2
    assert "holds NOTES.md besides an evaluation" in capsys.readouterr().err and (output / "NOTES.md").exists()
    (output / "NOTES.md").unlink()
    # A summary whose checkpoint cannot be found from here (a relative path written elsewhere) cannot be compared.
    summary = json.loads((output / "summary.json").read_text())
    (output / "summary.json").write_text(json.dumps({**summary, "checkpoint": "runs/x/checkpoints/best.pt"}))
    assert main(["evaluate", str(other_run), "--output", str(output), *small]) == 2
    assert "holds the evaluation of runs/x/checkpoints/best.pt, which is not there to compare" in capsys.readouterr().err


def test_the_zero_filled_input_is_scored_once_per_process(trained_run, tmp_path, monkeypatch):
    from kdrecon.evaluation import evaluate as evaluation

    calls, original = [], evaluation.score
    monkeypatch.setattr(evaluation, "score", lambda data, images: calls.append(1) or original(data, images))
    monkeypatch.setattr(evaluation, "_BASELINE_SCORES", type(evaluation._BASELINE_SCORES)())
    first = evaluation.evaluate(trained_run, tmp_path / "first")
    second = evaluation.evaluate(trained_run, tmp_path / "second")
    assert len(calls) == 3  # the network twice, its zero-filled input once
    assert first.summary["zero_filled_metrics"] == second.summary["zero_filled_metrics"]
    assert (tmp_path / "first" / "per_slice.csv").read_text() == (tmp_path / "second" / "per_slice.csv").read_text()


def test_an_interrupted_evaluation_keeps_the_previous_one_and_leaves_no_staging_directory(trained_run, tmp_path,
                                                                                          monkeypatch):
    from kdrecon.evaluation import evaluate as evaluation

    output = tmp_path / "evaluation"
    evaluation.evaluate(trained_run, output)
    before = {path.name: path.read_bytes() for path in output.iterdir() if path.is_file()}

    def interrupted(*arguments):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "write_reconstruction", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate(trained_run, output)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["evaluation"]
    assert {path.name: path.read_bytes() for path in output.iterdir() if path.is_file()} == before
    monkeypatch.undo()

    def stopped_between_the_renames(new, target):  # the old evaluation moved aside, the new one not yet in
        target.rename(target.with_name(f".{target.name}.previous"))
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "_replace_directory", stopped_between_the_renames)
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate(trained_run, output)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["evaluation"]
    assert {path.name: path.read_bytes() for path in output.iterdir() if path.is_file()} == before


def test_rerunning_a_finished_run_is_a_no_op(trained_run):
    before = (trained_run / "checkpoints/last.pt").stat().st_mtime_ns
    assert main(["train", "--config", str(trained_run / "config.yaml"), "--run-dir", str(trained_run), "--quiet"]) == 0
    assert (trained_run / "checkpoints/last.pt").stat().st_mtime_ns == before


def test_a_train_or_distill_already_writing_a_run_directory_keeps_it(trained_run, tmp_path, capsys):
    """Two processes training into one directory would write the same checkpoints at once."""
    from kdrecon.experiment.run_lock import run_lock
    from kdrecon.report.run_layout import RunLayout

    shutil.copytree(trained_run, tmp_path / "run")
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    config = str(trained_run / "config.yaml")
    with run_lock(RunLayout(tmp_path / "run")):  # another train holding it (flock: per open file, so in-process too)
        assert main(["train", "--config", config, "--run-dir", str(tmp_path / "run"), "--quiet", "--epochs", "2"]) == 2
        assert main(["distill", "--teacher", str(trained_run), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    assert capsys.readouterr().err.count("another kdrecon run") == 2
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before
    assert main(["train", "--config", config, "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0  # released
    assert not RunLayout(tmp_path / "run").lock.exists()


def test_a_train_into_a_stage_of_an_experiment_being_run_is_refused(trained_run, tmp_path, capsys):
    """``kdrecon run`` locks its experiment's directory, not each stage's: a ``train`` or ``distill``
    aimed at one of its stages must take the experiment's lock too, or both write that stage."""
    from kdrecon.experiment.run_lock import run_lock
    from kdrecon.report.run_layout import RunLayout

    experiment = RunLayout(tmp_path / "experiment")
    stage = experiment.stage("seed-42/teacher").directory
    shutil.copytree(trained_run, stage)
    experiment.manifest.write_text("{}")
    before = (stage / "checkpoints" / "last.pt").read_bytes()
    config = str(trained_run / "config.yaml")
    with run_lock(experiment):  # the experiment's `kdrecon run`
        assert main(["train", "--config", config, "--run-dir", str(stage), "--quiet", "--epochs", "2"]) == 2
        assert main(["distill", "--teacher", str(trained_run), "--run-dir", str(stage), "--quiet"]) == 2
    assert capsys.readouterr().err.count(f"{experiment.root}: another kdrecon run") == 2
    assert (stage / "checkpoints" / "last.pt").read_bytes() == before
    assert not RunLayout(stage).lock.exists()
    assert main(["train", "--config", config, "--run-dir", str(stage), "--quiet"]) == 0  # released: a no-op rerun
    assert not experiment.lock.exists() and not RunLayout(stage).lock.exists()


def test_evaluate_refuses_to_score_training_subjects_as_validation(tmp_path, capsys):
    """The same source prepared again with another validation subject: its validation split is a subject
    the network was trained on."""
    from kdrecon.data.dataset import sample_directory
    from kdrecon.data.prepare import PrepareOptions, prepare_dataset
    from kdrecon.data.sources import sunnybrook

    def prepared(name, validation):
        options = PrepareOptions(crop=48, mask="recipe", validation_subjects=[validation], source="sunnybrook:sample")
        return prepare_dataset(sunnybrook.read_volumes(sample_directory(), phases=[0]), tmp_path / name, options)

    own, again = prepared("own", "SCD0000401"), prepared("again", "SCD0000101")
    config = tmp_path / "student.yaml"
    config.write_text(f"model:\n  name: D2C2\n  channels: 8\ndata:\n  dataset: {own}\n"
                      "optimization:\n  epochs: 1\n  batch_size: 8\n")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    output = tmp_path / "evaluation"
    assert main(["evaluate", str(tmp_path / "run"), "--dataset", str(again), "--output", str(output)]) == 2
    assert (f"{again}: its validation split holds SCD0000101, on which {tmp_path / 'run'} was trained ({own}, prepared "
            "from the same sunnybrook data); evaluate on subjects it has not seen") in capsys.readouterr().err
    assert not output.exists()
    assert main(["evaluate", str(tmp_path / "run"), "--dataset", str(own), "--output", str(output)]) == 0


def test_evaluate_on_data_of_another_task_says_what_the_network_was_trained_for(trained_run, tiny_super_resolution_dataset,
                                                                            tmp_path, capsys):
    """The data loader's refusal advises changing data.task, which evaluate has no option for."""
    output = tmp_path / "evaluation"
    assert main(["evaluate", str(trained_run), "--dataset", str(tiny_super_resolution_dataset), "--output", str(output)]) == 2
    message = capsys.readouterr().err
    assert (f"{tiny_super_resolution_dataset}: prepared for super-resolution on magnitude images, but {trained_run} was "
            "trained for reconstruction on magnitude images; evaluate it on a dataset prepared like its own") in message
    assert "data.task" not in message and not output.exists()


def test_run_directory_with_another_config_is_refused(trained_run):
    code, _, error = run_cli("train", "--run-dir", trained_run, "--model", "D3C5", "--epochs", "1")
    assert code == 2 and "different config" in error and error.count("\n") == 1


def test_a_renamed_run_directory_resumes_with_the_same_command(trained_run, tmp_path):
    renamed = tmp_path / "renamed"
    shutil.copytree(trained_run, renamed)
    before = (renamed / "checkpoints/last.pt").stat().st_mtime_ns
    config = tmp_path / "config.yaml"
    config.write_text((trained_run / "config.yaml").read_text())  # its name is the old directory's
    assert main(["train", "--config", str(config), "--run-dir", str(renamed), "--quiet"]) == 0
    assert (renamed / "checkpoints/last.pt").stat().st_mtime_ns == before  # finished: nothing trained again


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--config", "missing.yaml", "--run-dir", "RUN"], "missing.yaml: config file not found"),
        (["train", "--model", "D9", "--run-dir", "RUN"], "model.name"),
        (["train", "--acceleration", "fast", "--run-dir", "RUN"], "data.acceleration"),
        (["evaluate", "nowhere"], "nowhere: no checkpoint found"),
        (["prepare", "sunnybrook", "nowhere", "OUT"], "nowhere: no Sunnybrook subject files"),
        (["train", "--dataset", "nowhere", "--run-dir", "RUN"], "nowhere: not a kdrecon dataset"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, args, message, capsys, monkeypatch):
    # In this process (a subprocess per case cost seconds of imports): `python -m kdrecon` exits with
    # main()'s code and stderr, as test_run_directory_with_another_config_is_refused checks in a subprocess.
    monkeypatch.chdir(tmp_path)
    args = [a.replace("RUN", str(tmp_path / "run")).replace("OUT", str(tmp_path / "out")) for a in args]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("kdrecon: error: ") and error.count("\n") == 1
    assert message in error
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["reconstruct", "--model", "M", "--input", "I", "--output", "O", "--acceleration", "5"],
         "kdrecon: error: kdrecon reconstruct: unrecognized arguments: --acceleration 5 (see 'kdrecon reconstruct --help')"),
        (["models", "extra"], "kdrecon: error: kdrecon models: unrecognized arguments: extra (see 'kdrecon models --help')"),
        (["bogus"], "kdrecon: error: argument COMMAND: invalid choice: 'bogus'"),
    ],
)
def test_a_misspelt_option_or_command_points_at_the_right_help(args, message, capsys):
    with pytest.raises(SystemExit) as refused:
        main(args)
    error = capsys.readouterr().err
    assert refused.value.code == 2 and error.startswith(message) and error.count("\n") == 1


def test_sft_teacher_then_sft_kd_from_the_command_line(tmp_path):
    """The SFT-KD path on the embedded sample: SFT teacher, distilled student, evaluation."""
    tiny = ["--epochs", "1", "--batch-size", "8", "--quiet"]
    sft, student = tmp_path / "sft-teacher", tmp_path / "student-at"
    assert main(["train", "--model", "sft-teacher", "--run-dir", str(sft), "--set", "model.teacher=D3C2",
                 "--set", "model.student=D2C2", "--set", "model.channels=4", *tiny]) == 0
    assert "imitation_weight: 0.0" in (sft / "config.yaml").read_text()  # the sft-code preset
    assert main(["distill", "--teacher", str(sft), "--method", "at", "--init", "sft", "--student", "D2C2",
                 "--set", "student.channels=4", "--run-dir", str(student), *tiny]) == 0
    assert (student / "feature-stage" / "checkpoints" / "best.pt").is_file()
    assert main(["evaluate", str(student)]) == 0
    summary = json.loads((student / "evaluation" / "summary.json").read_text())
    assert summary["model"]["name"] == "D2C2" and summary["slices"] == 44


@pytest.mark.parametrize(
    "args, message",
    [
        (["distill", "--run-dir", "RUN"], "config: teacher: Field required"),
        (["distill", "--teacher", "nowhere", "--run-dir", "RUN"], "nowhere: no checkpoint found"),
        (["train", "--set", "optimization.epochs", "--run-dir", "RUN"], "--set 'optimization.epochs': expected KEY=VALUE"),
        (["train", "--model", "D3C5", "--sft-preset", "sft-code", "--run-dir", "RUN"], "sft: only for model sft-teacher"),
    ],
)
def test_bad_distillation_input_is_one_line(tmp_path, args, message, capsys, monkeypatch):
    test_bad_input_is_one_line_and_leaves_nothing(tmp_path, args, message, capsys, monkeypatch)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "demo", "--run-dir", "RUN", "--seeds", "1", "1"], "seeds: a seed is listed twice"),
        (["run", "demo", "--run-dir", "RUN", "--seeds", "1", "--set", "seed=2"], "give either seed (one run) or seeds"),
    ],
)
def test_bad_seeds_are_one_line_and_leave_nothing(tmp_path, capsys, args, message):
    args = [a.replace("RUN", str(tmp_path / "run")) for a in args]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_unexpected_exception_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import kdrecon.cli as cli

    def broken(args):
        raise RuntimeError("something unforeseen")

    monkeypatch.setitem(cli.COMMANDS, "report", dataclasses.replace(cli.COMMANDS["report"], run=broken))
    assert cli.main(["report", "anything"]) == 1
    assert capsys.readouterr().err == (
        "kdrecon: internal error: RuntimeError: something unforeseen (run with --debug for the traceback)\n")
    with pytest.raises(RuntimeError, match="something unforeseen"):
        cli.main(["--debug", "report", "anything"])


@pytest.mark.parametrize("arguments, message", [
    (["--steps", "0"], "--steps 0: must be at least 1"),
    (["--size", "4"], "--size 4: must be at least 16"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--batch-size", "141"], "training batch size 141 (--batch-size): must lie in [1, 140]"),
    (["--teacher", "resnet"], "unknown model 'resnet'"),
    (["--output", "{file}/bench"], "--output {file}/bench: cannot write there ({file} is not a writable directory)"),
])
def test_bench_refuses_bad_options_before_measuring(tmp_path, capsys, arguments, message):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    arguments = [a.replace("{file}", str(blocker)) for a in arguments]
    assert main(["bench", *arguments]) == 2
    assert message.replace("{file}", str(blocker)) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_prepare_sunnybrook_keeps_the_samples_validation_subject_by_default(tmp_path):
    """The full Sunnybrook data is split as the embedded sample is, so their validation subjects agree."""
    from kdrecon.data.dataset import load_sample, sample_directory

    output = tmp_path / "data"
    assert main(["prepare", "sunnybrook", str(sample_directory()), str(output), "--phases", "0", "--crop", "48",
                 "--mask", "recipe"]) == 0
    splits = json.loads((output / "dataset.json").read_text())["splits"]
    sample_subjects = sorted({volume.name.split("_")[0] for volume in load_sample("validation").volumes})
    assert splits["validation"]["subjects"] == sample_subjects == ["SCD0000401"]
    assert "SCD0000401" not in splits["train"]["subjects"]


def test_help_lists_every_command_without_importing_torch():
    from kdrecon.cli import COMMANDS

    code = ("import sys\nfrom kdrecon.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch imported:', 'torch' in sys.modules)")
    wide = {**os.environ, "COLUMNS": "400"}  # argparse wraps the help to the terminal's width
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=wide)
    assert process.stdout.splitlines()[-1] == "torch imported: False"
    listed = " ".join(process.stdout.split())
    for name, command in COMMANDS.items():
        assert f"{name} {command.help}" in listed
    # A command's own help has its options.
    code, out, _ = run_cli("evaluate", "--help")
    assert code == 0 and "--which" in out
