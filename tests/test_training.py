"""Config validation, checkpoints, resume and a short real training run."""

import math
import warnings

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from kdrecon.models import build_model
from kdrecon.training.checkpoint import load_checkpoint
from kdrecon.training.config import ConfigError, OptimizationConfig, TrainConfig, load_config
from kdrecon.training.trainer import ReconstructionObjective, fit


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_are_the_papers_settings():
    config = TrainConfig()
    assert (config.optimization.epochs, config.optimization.batch_size) == (150, 4)
    assert config.optimization.learning_rate == 1e-3
    assert (config.optimization.lr_step_epochs, config.optimization.lr_gamma) == (40, 0.1)
    assert config.seed == 42 and config.model.name == "D5C5"


@pytest.mark.parametrize(
    "text, message",
    [
        ("optimization:\n  epoch: 3\n", r"optimization\.epoch: unknown key"),
        ("optimization:\n  epochs: three\n", r"optimization\.epochs: .*integer"),
        ("optimization:\n  epochs: 0\n", r"optimization\.epochs: .*greater than 0"),
        ("model:\n  name: ResNet\n", r"model\.name: .*unknown model"),
        # A known family with an impossible shape says what is wrong, not "unknown model".
        ("model:\n  name: D1C5\n", r"model\.name: model D1C5: a CNN block needs at least 2 convolutions, got 1"),
        ("data:\n  acceleration: fast\n", r"data\.acceleration: .*expected a number"),
        ("precision: fp8\n", r"precision: "),
        ("- a\n- b\n", r"expected a mapping"),
        ("model: [unclosed\n", r"not valid YAML at line 2, column 1 \(expected ',' or '\]', but got '<stream end>'\)"),
        # PyYAML counts from 0; an editor from 1: the indented key is on the third line.
        ("model:\n  name: D3C5\n    epochs: 3\n", r"not valid YAML at line 3, column 11 \(mapping values are not allowed here\)"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(TrainConfig, path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_overrides_apply_to_file(tmp_path):
    path = write(tmp_path / "c.yaml", "model:\n  name: d3c5\noptimization:\n  epochs: 7\n")
    config = load_config(TrainConfig, path, {"optimization.batch_size": 2, "seed": None})
    assert config.model.name == "D3C5" and config.optimization.epochs == 7 and config.optimization.batch_size == 2


def _fit(run_dir, train, validation, epochs, interrupt_after=None, fast=False):
    torch.manual_seed(0)
    model = build_model("D3C2", channels=8)

    def stop(epoch, row):
        if epoch == interrupt_after:
            raise KeyboardInterrupt

    fit(
        ReconstructionObjective(model),
        train,
        validation,
        run_dir,
        OptimizationConfig(epochs=epochs, batch_size=4, lr_step_epochs=2),
        seed=42,
        device=torch.device("cpu"),
        precision="bf16" if fast else "fp32",
        channels_last=fast,
        checkpoint_extra={"model": {"name": "D3C2", "options": {"channels": 8}}},
        progress=False,
        on_epoch_end=stop,
    )
    return model


@pytest.mark.parametrize("fast", [False, True], ids=["fp32", "bf16-channels-last"])
def test_resume_after_interruption_gives_the_same_weights(tmp_path, small_train, small_validation, fast):
    uninterrupted = _fit(tmp_path / "a", small_train, small_validation, epochs=3, fast=fast)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", small_train, small_validation, epochs=3, interrupt_after=2, fast=fast)
    assert load_checkpoint(tmp_path / "b/checkpoints/last.pt")["epoch"] == 2
    resumed = _fit(tmp_path / "b", small_train, small_validation, epochs=3, fast=fast)
    for (name, a), (_, b) in zip(uninterrupted.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    a, b = (load_checkpoint(tmp_path / run / "checkpoints/last.pt") for run in ("a", "b"))
    assert [r["validation_loss"] for r in a["history"]] == [r["validation_loss"] for r in b["history"]]
    assert (tmp_path / "b/metrics.csv").read_text().count("\n") == 4  # header + 3 epochs, none twice


def test_metrics_file_a_kill_left_behind_its_checkpoint_is_rewritten_on_resume(tmp_path, small_train, small_validation):
    _fit(tmp_path / "run", small_train, small_validation, epochs=2)
    metrics = tmp_path / "run" / "metrics.csv"
    complete = metrics.read_text()
    metrics.write_text("".join(complete.splitlines(keepends=True)[:2]))  # killed after last.pt, before metrics.csv
    (tmp_path / "run" / "checkpoints" / ".last.pt.x1y2.partial").write_bytes(b"half a checkpoint")
    _fit(tmp_path / "run", small_train, small_validation, epochs=2)  # nothing left to train
    assert metrics.read_text() == complete
    assert not list((tmp_path / "run").rglob("*.partial"))


def test_a_run_whose_config_file_is_gone_resumes_only_with_the_config_its_checkpoint_records(
        tmp_path, small_train, small_validation):
    from kdrecon.training.supervised import train_model

    settings = {"model": {"name": "D2C3", "channels": 4}, "optimization": {"epochs": 2, "batch_size": 8}}

    def stop(epoch, row):
        raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_model(TrainConfig.model_validate(settings), run_dir, False, small_train, small_validation, stop)
    (run_dir / "config.yaml").unlink()
    other = {**settings, "optimization": {**settings["optimization"], "learning_rate": 0.05}}
    with pytest.raises(ConfigError, match=r"run: holds a run with a different config \(differs in: optimization\)"):
        train_model(TrainConfig.model_validate(other), run_dir, False, small_train, small_validation)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    train_model(TrainConfig.model_validate(settings), run_dir, False, small_train, small_validation)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 2 and (run_dir / "config.yaml").is_file()


def test_checkpoint_is_plain_data(tmp_path, small_train, small_validation):
    _fit(tmp_path / "run", small_train, small_validation, epochs=1)
    payload = torch.load(tmp_path / "run/checkpoints/best.pt", weights_only=True)
    assert payload["format"] == "kdrecon-checkpoint" and payload["best_epoch"] == 1
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def psnr(target, prediction):
    return 10 * np.log10(target.max() ** 2 / np.mean((target - prediction) ** 2))


def test_short_training_beats_zero_filling(tmp_path, small_train, small_validation):
    """A tiny D3C5 (16 channels) after 200 steps on 3 subjects beats zero-filling on subject 401 (by 2.7 dB
    when written)."""
    torch.manual_seed(42)
    model = build_model("D3C5", channels=16)
    steps = 200
    epochs = math.ceil(steps / math.ceil(len(small_train) / 4))
    fit(
        ReconstructionObjective(model),
        small_train,
        small_validation,
        tmp_path / "teacher",
        OptimizationConfig(epochs=epochs, batch_size=4),
        seed=42,
        device=torch.device("cpu"),
        progress=False,
    )
    with torch.no_grad():
        prediction = model(small_validation.zero_filled, small_validation.kspace, small_validation.mask)
    target = small_validation.target[:, 0].numpy()
    for volume in small_validation.volumes:
        part = slice(volume.start, volume.stop)
        zero_filled_psnr = psnr(target[part], small_validation.zero_filled[part, 0].numpy())
        model_psnr = psnr(target[part], prediction[part, 0].numpy())
        assert model_psnr > zero_filled_psnr + 1.0, volume.name


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    from kdrecon.training.config import DistillConfig, read_yaml

    cls = DistillConfig if "teacher" in read_yaml(path) and "model" not in read_yaml(path) else TrainConfig
    config = load_config(cls, path)
    assert config.name == path.stem.rsplit("-cardiac", 1)[0]


def test_compile_falls_back_to_eager(monkeypatch, small_train):
    from kdrecon.training.trainer import compile_forward

    def broken_compile(function, mode=None):
        def fails(*args, **kwargs):
            raise RuntimeError("no backend for this op")

        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = build_model("D2C2", channels=4)
    names = list(model.state_dict())
    batch = small_train.batch(torch.arange(2))
    with pytest.warns(UserWarning, match="torch.compile unavailable .*no backend for this op"):
        assert compile_forward(model, batch) is False
    assert model(batch.zero_filled, batch.kspace, batch.mask).shape == batch.target.shape
    assert list(model.state_dict()) == names


def test_compile_uses_cuda_graphs_only_on_a_gpu(monkeypatch, small_train):
    from types import SimpleNamespace

    from kdrecon.training.trainer import compile_forward

    modes = []

    def recording_compile(function, mode=None):
        modes.append(mode)
        return lambda *inputs: None  # the trial call must not run the model on a fake GPU batch

    monkeypatch.setattr(torch, "compile", recording_compile)
    cpu_batch = small_train.batch(torch.arange(2))
    gpu_batch = SimpleNamespace(zero_filled=SimpleNamespace(device=torch.device("cuda")), kspace=None, mask=None)
    assert compile_forward(build_model("D2C2", channels=4), cpu_batch) is True
    assert compile_forward(build_model("D2C2", channels=4), gpu_batch) is True
    assert modes == [None, "reduce-overhead"]  # CUDA graphs on a GPU only


def test_every_training_run_of_one_process_is_compiled(monkeypatch, tmp_path, small_train, small_validation):
    """Stages of ``kdrecon run`` train one after another in one process and share the networks'
    forward code; dynamo gives up on a function after ``recompile_limit`` variants, so without a
    fresh start per run the later runs trained eagerly (from the fourth of these, with dynamo's default limit)."""
    from torch._dynamo.utils import counters

    compile_function = torch.compile
    # dynamo's tracing and its guards as in a real compile, without inductor's code generation
    monkeypatch.setattr(torch, "compile", lambda function, mode=None: compile_function(function, backend="eager"))
    for index, name in enumerate(["D2C2", "D3C2", "D2C3", "D3C3"]):
        captured = counters["stats"]["unique_graphs"]
        fit(ReconstructionObjective(build_model(name, channels=4)), small_train, small_validation, tmp_path / name,
            OptimizationConfig(epochs=1, batch_size=4), seed=index, device=torch.device("cpu"), progress=False,
            compile=True)
        assert counters["stats"]["unique_graphs"] > captured, f"training run {index + 1} ({name}) ran eagerly"


def test_init_from_copies_every_tensor_by_name_or_names_the_one_missing(tmp_path):
    from kdrecon.training.checkpoint import initialise_from, save_checkpoint

    trained = build_model("D3C3", channels=4)
    save_checkpoint(tmp_path / "trained.pt", {"modules": {"model": trained.state_dict()}})
    fresh = build_model("D3C3", channels=4)
    copied = initialise_from(fresh, tmp_path / "trained.pt")
    assert len(copied) == len(trained.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(ValueError, match=r"tensor blocks.0.layers.1.weight is missing \(6 such\)"):
        initialise_from(build_model("D2C3", channels=4), tmp_path / "trained.pt")
    with pytest.raises(ValueError, match=r"tensor blocks.0.layers.0.conv.weight has another shape"):
        initialise_from(build_model("D3C3", channels=8), tmp_path / "trained.pt")


def test_a_diverging_run_stops_at_the_first_non_finite_loss_and_keeps_its_last_good_checkpoint(tmp_path, small_train, small_validation):
    from kdrecon.training.trainer import TrainingDiverged

    model = build_model("D2C3", channels=4)

    def poison_after_first_epoch(epoch, row):
        with torch.no_grad():
            model.blocks[0].layers[0].conv.weight.fill_(float("nan"))  # as a weight blown up by a bad step

    with pytest.raises(TrainingDiverged, match=r"training diverged: the training loss is nan at epoch 2, step 1 of \d+; "
                       r"likely causes: a learning rate too high \(0.001\).*the last good checkpoint .*last.pt is kept"):
        fit(ReconstructionObjective(model), small_train, small_validation, tmp_path / "run",
            OptimizationConfig(epochs=3, batch_size=8), seed=0, device=torch.device("cpu"), progress=False,
            on_epoch_end=poison_after_first_epoch)
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and all(torch.isfinite(t).all() for t in last["modules"]["model"].values())


def test_a_diverging_learning_rate_fails_the_command_and_the_experiment_stage(tmp_path, tiny_overrides, capsys):
    import json

    from kdrecon.cli import main
    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.runner import StageFailed, run_experiment

    code = main(["train", "--model", "D2C3", "--set", "model.channels=4", "--learning-rate", "1e8", "--epochs", "2",
                 "--set", f"data.dataset={tiny_overrides['data.dataset']}", "--run-dir", str(tmp_path / "train"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and error.startswith("kdrecon: error: ") and "training diverged" in error
    config = load_experiment("demo", {**tiny_overrides, "optimization.learning_rate": 1e8})
    with pytest.raises(StageFailed, match=r"stage seed-42/teacher failed: .*training diverged: the training loss is nan"):
        run_experiment(config, tmp_path / "run", progress=False)
    state = json.loads((tmp_path / "run" / "stages" / "seed-42" / "teacher" / "stage.json").read_text())
    assert state["status"] == "failed" and "diverged" in state["error"]


def test_a_stage_stopped_by_any_error_is_recorded_as_failed_not_running(tmp_path, tiny_overrides, monkeypatch):
    import json

    from kdrecon.experiment import runner
    from kdrecon.experiment.config import load_experiment

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(runner, "train_model", disk_full)
    with pytest.raises(OSError, match="No space left"):
        runner.run_experiment(load_experiment("demo", tiny_overrides), tmp_path / "run", progress=False)
    state = json.loads((tmp_path / "run" / "stages" / "seed-42" / "teacher" / "stage.json").read_text())
    assert state["status"] == "failed" and state["error"] == "No space left on device" and state["started"]


def test_automatic_layout_follows_the_measured_cpu_path():
    from kdrecon.training.config import TrainConfig
    from kdrecon.training.fast_path import cpu_training_path, resolve_channels_last

    cpu = torch.device("cpu")
    assert TrainConfig().channels_last == "auto"
    assert resolve_channels_last("auto", cpu, "fp32") is cpu_training_path().float32_channels_last
    assert resolve_channels_last("auto", cpu, "bf16") is True
    assert resolve_channels_last("auto", torch.device("cuda"), "fp32") is True
    assert resolve_channels_last(True, cpu, "fp32") is True and resolve_channels_last(False, cpu, "bf16") is False


def _measured_with(monkeypatch, native: bool, seconds: dict[str, float]):
    """``cpu_training_path`` with ``native_bf16`` and the timings replaced: which steps it timed, and its choice."""
    from kdrecon.training import fast_path

    timed = []

    def fake_timing(steps, device, rounds, warmup):
        timed.extend(steps)
        return {name: seconds[name] for name in steps}

    monkeypatch.setattr(fast_path, "native_bf16", lambda device: native)
    monkeypatch.setattr(fast_path, "interleaved_median_seconds", fake_timing)
    fast_path.cpu_training_path.cache_clear()
    try:
        return timed, fast_path.cpu_training_path(rounds=1)
    finally:
        fast_path.cpu_training_path.cache_clear()


SECONDS = {"fp32 convolution": 2.0, "bf16 convolution": 1.0, "fp32 cascade nchw": 3.0, "fp32 cascade channels-last": 4.0}


def test_cpu_path_measures_bf16_only_where_it_is_native(monkeypatch):
    from kdrecon.training import fast_path

    timed, emulated = _measured_with(monkeypatch, False, SECONDS)
    assert "bf16 convolution" not in timed and emulated.precision == "fp32"  # even though bf16 would be "faster"
    timed, native = _measured_with(monkeypatch, True, SECONDS)
    assert sorted(timed) == sorted(SECONDS) and native.precision == "bf16"
    assert fast_path.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for: never overridden


def test_auto_precision_on_a_gpu_is_bf16_only_for_a_compiled_network(monkeypatch, tmp_path):
    """Eagerly a GPU step at the papers' sizes waits on kernel launches, which bf16's casts add to;
    compiled into CUDA graphs bf16 was the faster (docs/benchmarks.md, "GPU")."""
    from kdrecon.training import fast_path
    from kdrecon.training.trainer import TrainingPath, training_path

    gpu = torch.device("cuda")
    for supported in (True, False):
        monkeypatch.setattr(fast_path, "native_bf16", lambda device: supported)
        assert fast_path.resolve_precision("auto", gpu) == "fp32"
        assert fast_path.resolve_precision("auto", gpu, compiled=True) == ("bf16" if supported else "fp32")
        assert fast_path.resolve_precision("bf16", gpu) == "bf16"  # asked for: never overridden
    monkeypatch.setattr(fast_path, "native_bf16", lambda device: True)
    assert training_path(tmp_path / "last.pt", gpu, "auto", "auto") == TrainingPath("fp32", True)
    assert training_path(tmp_path / "last.pt", gpu, "auto", "auto", compiled=True) == TrainingPath("bf16", True)


@pytest.mark.parametrize("changes, precision, channels_last", [
    ({}, "bf16", False),
    ({"bf16 convolution": 2.5}, "fp32", False),  # native bf16 slower than float32 (session 13's Intel CPU)
    ({"fp32 cascade channels-last": 2.0}, "bf16", True),
])
def test_cpu_path_picks_the_faster_of_each_pair(monkeypatch, changes, precision, channels_last):
    _, path = _measured_with(monkeypatch, True, SECONDS | changes)
    assert (path.precision, path.float32_channels_last) == (precision, channels_last)


def test_cpu_path_times_every_candidate_on_this_machine():
    from kdrecon.training.fast_path import cpu_training_path, native_bf16

    seconds = cpu_training_path().seconds
    assert ("bf16 convolution" in seconds) == native_bf16(torch.device("cpu"))
    assert {"fp32 convolution", "fp32 cascade nchw", "fp32 cascade channels-last"} <= set(seconds)
    assert all(value > 0 for value in seconds.values())


@pytest.mark.parametrize("precision, trained_in, fast, expected", [
    ("as-trained", "bf16", "bf16", "bf16"),  # run as trained where bf16 is the device's fast path
    ("as-trained", "bf16", "fp32", "fp32"),  # a CPU whose bf16 is slower (or emulated): float32
    ("as-trained", "fp32", "bf16", "fp32"),
    ("as-trained", None, "bf16", "fp32"),    # a weights file that records no precision
    ("fp32", "bf16", "bf16", "fp32"),        # asked for explicitly
    ("bf16", "fp32", "fp32", "bf16"),
])
def test_inference_precision_is_the_trained_one_where_it_is_the_fast_path(precision, trained_in, fast, expected,
                                                                           monkeypatch):
    from kdrecon.training import fast_path

    monkeypatch.setattr(fast_path, "cpu_training_path", lambda: fast_path.CpuTrainingPath(fast, True, {}))
    assert fast_path.inference_precision(precision, trained_in, torch.device("cpu")) == expected


def test_bf16_stated_where_it_is_emulated_is_kept_with_a_warning(tmp_path, monkeypatch):
    from kdrecon.training import fast_path

    cpu = torch.device("cpu")
    from kdrecon.training.trainer import TrainingPath, training_path

    monkeypatch.setattr(fast_path, "native_bf16", lambda device: False)
    for resolve in (lambda: training_path(tmp_path / "last.pt", cpu, "bf16", "auto").precision,
                    lambda: fast_path.inference_precision("bf16", "fp32", cpu)):
        with pytest.warns(fast_path.EmulatedPrecisionWarning, match="bf16 is emulated here"):
            assert resolve() == "bf16"
    monkeypatch.setattr(fast_path, "native_bf16", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert training_path(tmp_path / "last.pt", cpu, "bf16", "auto") == TrainingPath("bf16", True)
        assert fast_path.inference_precision("bf16", "fp32", cpu) == "bf16"


def test_unresolved_or_unknown_precisions_are_refused():
    from kdrecon.training.fast_path import autocast, inference_precision

    with pytest.raises(ValueError, match="precision: expected one of as-trained, fp32, bf16, got 'float32'"):
        inference_precision("float32", "fp32", torch.device("cpu"))
    for unresolved in ("auto", "as-trained"):
        with pytest.raises(ValueError, match=f"expected fp32 or bf16 \\(resolved\\), got '{unresolved}'"):
            autocast(torch.device("cpu"), unresolved)


def test_a_resumed_run_keeps_the_precision_and_layout_it_began_with(tmp_path, monkeypatch):
    """'auto' is measured per process on a CPU; resuming must not switch layout mid-run."""
    from kdrecon.training import fast_path
    from kdrecon.training.checkpoint import save_checkpoint
    from kdrecon.training.trainer import TrainingPath, training_path

    cpu, last = torch.device("cpu"), tmp_path / "last.pt"
    measured = fast_path.CpuTrainingPath("fp32", float32_channels_last=False, seconds={})
    monkeypatch.setattr(fast_path, "cpu_training_path", lambda: measured)
    assert training_path(last, cpu, "auto", "auto") == TrainingPath("fp32", False)  # nothing to resume: measured
    save_checkpoint(last, {"precision": "bf16", "channels_last": True, "epoch": 1})
    assert training_path(last, cpu, "auto", "auto") == TrainingPath("bf16", True)  # resumed: as recorded
    assert training_path(last, cpu, "fp32", False) == TrainingPath("fp32", False)  # stated settings win
    assert training_path(last, cpu, "fp32", "auto") == TrainingPath("fp32", True)


def test_a_run_directory_without_the_asked_checkpoint_says_what_it_holds(tmp_path):
    from kdrecon.training.checkpoint import resolve_checkpoint

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"run: the run directory has no checkpoints/best.pt \(no epoch has finished\)"):
        resolve_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "last.pt").touch()
    with pytest.raises(ValueError, match=r"run: the run directory has no checkpoints/best.pt \(it holds last.pt\)"):
        resolve_checkpoint(tmp_path / "run")
    assert resolve_checkpoint(tmp_path / "run", "last") == tmp_path / "run" / "checkpoints" / "last.pt"
    with pytest.raises(ValueError, match=r"elsewhere: no checkpoint found \(expected a .pt file or a run directory\)"):
        resolve_checkpoint(tmp_path / "elsewhere")
