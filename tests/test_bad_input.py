"""Generated bad input (hypothesis): configs, masks, volume files and command-line options.

Every case must give exit status 2, one line ``kdrecon: error: …`` naming the problem, and leave
the filesystem as it was (issue 14). The value bounds come from the config classes themselves,
so a bound added to a field is tested at its edge without touching this file.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import types
import typing
from pathlib import Path

import annotated_types
import h5py
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from kdrecon.cli import main
from kdrecon.data.dataset import sample_directory
from kdrecon.experiment.config import ExperimentConfig

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
VOLUME = "train/SCD0000101_phase00.h5"
MASK = "masks/mask_4x.npy"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def refused(arguments: list[str], root: Path) -> str:
    """Run the CLI in-process; assert a one-line refusal that changed nothing under ``root``; return it."""
    before = snapshot(root)
    error = io.StringIO()
    with contextlib.redirect_stderr(error), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in arguments])
        except SystemExit as exit:  # argparse
            code = exit.code
    message = error.getvalue()
    assert code == 2, (arguments, message)
    assert message.startswith("kdrecon: error: ") and message.count("\n") == 1, message
    assert snapshot(root) == before, arguments
    return message


# --- configs -------------------------------------------------------------------------------


def _numeric_type(annotation: object) -> type | None:
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return next((t for t in options if t in (int, float)), None)


def _nested_model(annotation: object) -> type[BaseModel] | None:
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return next((t for t in options if isinstance(t, type) and issubclass(t, BaseModel)), None)


def bounded_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type, object]]:
    """``(dotted key, int or float, bound)`` for every bounded number of ``model``, nested ones included."""
    found = []
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        if nested is not None:
            found += bounded_fields(nested, f"{prefix}{name}.")
        kind = _numeric_type(field.annotation)
        for bound in field.metadata:
            if kind and isinstance(bound, (annotated_types.Gt, annotated_types.Ge, annotated_types.Lt, annotated_types.Le)):
                found.append((f"{prefix}{name}", kind, bound))
    return found


BOUNDED = bounded_fields(ExperimentConfig)


@st.composite
def out_of_bounds(draw) -> tuple[str, object]:
    key, kind, bound = draw(st.sampled_from(BOUNDED))
    limit = next(getattr(bound, name) for name in ("gt", "ge", "lt", "le") if hasattr(bound, name))
    below = isinstance(bound, (annotated_types.Gt, annotated_types.Ge))
    strict = isinstance(bound, (annotated_types.Ge, annotated_types.Le))  # the limit itself is allowed
    if kind is int:
        edge = limit - 1 if below and strict else limit + 1 if strict else limit
        value = draw(st.integers(max_value=edge) if below else st.integers(min_value=edge))
    else:
        options = {"max_value": limit, "exclude_max": strict} if below else {"min_value": limit, "exclude_min": strict}
        value = draw(st.floats(allow_nan=False, allow_infinity=False, **options))
    return key, value


WRONG_TYPES = st.one_of(
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=1),
    st.text(alphabet="xyz!? ", min_size=1, max_size=5),
)


@st.composite
def bad_config(draw) -> tuple[dict, str]:
    """An experiment mapping with one bad entry, and the key the refusal must name."""
    kind = draw(st.sampled_from(["bound", "non-finite", "type", "unknown"]))
    if kind == "bound":
        key, value = draw(out_of_bounds())
    elif kind == "non-finite":
        key = draw(st.sampled_from([k for k, t, _ in BOUNDED if t is float] + ["optimization.learning_rate", "alpha"]))
        value = draw(st.sampled_from([math.inf, -math.inf, math.nan]))
    elif kind == "type":
        key = draw(st.sampled_from([k for k, _, _ in BOUNDED]))
        value = draw(WRONG_TYPES)
    else:
        section = draw(st.sampled_from(["", "optimization.", "data.", "report.", "epochs.", "sft."]))
        key = section + draw(st.text(alphabet="abcdefgh_", min_size=1, max_size=10).filter(
            lambda name: name not in ExperimentConfig.model_fields))
        value = 1
    data: dict = {}
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data, key


@SETTINGS
@given(case=bad_config())
def test_a_bad_experiment_config_is_refused_naming_the_key(tmp_path, case):
    data, key = case
    root = tmp_path / "case"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    (root / "experiment.yaml").write_text(yaml.safe_dump(data))
    message = refused(["run", root / "experiment.yaml", "--run-dir", root / "run"], root)
    assert f"{key}:" in message or f"{key.rsplit('.', 1)[-1]}:" in message, (key, message)


# --- masks and volume files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tiny_dataset, tmp_path_factory):
    copy = tmp_path_factory.mktemp("bad-input") / "dataset"
    shutil.copytree(tiny_dataset, copy)
    return copy


@contextlib.contextmanager
def edited(path: Path):
    """Restore ``path`` after an example edits it."""
    original = path.read_bytes()
    try:
        yield path
    finally:
        path.write_bytes(original)


@st.composite
def bad_mask(draw, good: np.ndarray) -> np.ndarray:
    height = good.shape[0]
    kind = draw(st.sampled_from(["value", "empty", "full", "centred", "centre", "shape", "lines", "acceleration"]))
    mask = good.copy()
    if kind == "value":
        row = draw(st.sampled_from(np.flatnonzero(good[:, 0]).tolist()))
        mask[row, draw(st.integers(0, mask.shape[1] - 1))] = draw(st.sampled_from([0.5, 2.0, -1.0, np.nan]))
    elif kind == "empty":
        mask[:] = 0
    elif kind == "full":
        mask[:] = 1
    elif kind == "centred":
        mask = np.fft.fftshift(good, axes=0)
    elif kind == "centre":
        mask[0] = 0
    elif kind == "shape":
        mask = draw(st.sampled_from([good[:-1], good[..., None], good[:, :-2]]))
    elif kind == "lines":  # one pixel of an unsampled line: no longer whole lines
        row = draw(st.sampled_from(np.flatnonzero(good[:, 0] == 0).tolist()))
        mask[row, draw(st.integers(0, mask.shape[1] - 1))] = 1
    else:  # a valid-looking mask of another acceleration: every line sampled but a few, or one in ten
        rows = draw(st.sampled_from([np.arange(height) % 10 == 0, np.arange(height) < height - 2]))
        mask = np.repeat(rows[:, None], mask.shape[1], axis=1).astype(good.dtype)
    return mask


@SETTINGS
@given(data=st.data())
def test_a_bad_mask_in_a_dataset_is_refused_at_load(dataset, tmp_path, data):
    good = np.load(dataset / MASK)
    mask = data.draw(bad_mask(good))
    with edited(dataset / MASK) as path:
        np.save(path, mask, allow_pickle=False)
        message = refused(["train", "--dataset", dataset, "--run-dir", tmp_path / "run", "--epochs", "1"], dataset)
    assert "mask" in message and ("mask_4x.npy" in message or "SCD" in message), message


VOLUME_EDITS = {
    "rescaled k-space": ("kspace_volus_4x", lambda k, s: k * s),
    "energy outside the mask": ("kspace_volus_4x", lambda k, s: k + s * np.abs(k).max()),
    "rescaled target": ("volfs", lambda x, s: x * s),
    "shifted zero-filled image": ("img_volus_4x", lambda x, s: x + (s - 1) * x.max()),
}


@SETTINGS
@given(edit=st.sampled_from(sorted(VOLUME_EDITS)), scale=st.floats(1.01, 10) | st.floats(0.1, 0.99))
def test_an_edited_volume_is_refused_at_load(dataset, tmp_path, edit, scale):
    key, change = VOLUME_EDITS[edit]
    with edited(dataset / VOLUME) as path:
        with h5py.File(path, "r+") as file:
            file[key][...] = change(file[key][()], scale)
        message = refused(["train", "--dataset", dataset, "--run-dir", tmp_path / "run", "--epochs", "1"], dataset)
    assert "SCD0000101_phase00.h5" in message, message


@SETTINGS
@given(damage=st.sampled_from(["missing key", "garbage", "empty", "not h5"]))
def test_a_damaged_volume_file_is_refused_at_load(dataset, tmp_path, damage):
    with edited(dataset / VOLUME) as path:
        if damage == "missing key":
            with h5py.File(path, "r+") as file:
                del file["kspace_volus_4x"]
        else:
            path.write_bytes({"garbage": b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "empty": b"", "not h5": b"volfs"}[damage])
        message = refused(["train", "--dataset", dataset, "--run-dir", tmp_path / "run", "--epochs", "1"], dataset)
    assert "SCD0000101_phase00.h5" in message, message


# --- command-line options ------------------------------------------------------------------

NOT_A_NUMBER = st.text(alphabet="abc-.", min_size=1, max_size=4).filter(lambda s: not s.lstrip("-").isdigit())
OPTIONS = {
    ("train", "--epochs"): (st.integers(max_value=0) | NOT_A_NUMBER, "epochs"),
    ("train", "--batch-size"): (st.integers(max_value=0) | NOT_A_NUMBER, "batch"),
    ("train", "--learning-rate"): (st.floats(max_value=0) | st.sampled_from(["inf", "nan", "x"]), "learning"),
    ("train", "--seed"): (st.integers(max_value=-1) | st.integers(min_value=2**32), "seed"),
    ("train", "--acceleration"): (st.text(alphabet="xyz0.", min_size=1, max_size=4), "acceleration"),
    ("train", "--model"): (st.sampled_from(["D0C5", "D5C0", "UNet", "x"]), "model"),
    ("run", "--seeds"): (st.integers(max_value=-1), "seeds"),
    ("run", "--parallel"): (st.integers(max_value=0), "--parallel"),
    ("bench", "--size"): (st.integers(max_value=0) | NOT_A_NUMBER, "size"),
    ("bench", "--steps"): (st.integers(max_value=0), "steps"),
    ("evaluate", "--split"): (st.sampled_from(["test", "all"]), "split"),
    ("prepare", "--mask-seed"): (st.integers(max_value=-1) | st.integers(min_value=2**32), "--mask-seed"),
    ("prepare", "--center-fraction"): (st.floats(max_value=0) | st.floats(min_value=1), "--center-fraction"),
    ("prepare", "--validation-fraction"): (st.floats(max_value=0) | st.floats(min_value=1), "--validation-fraction"),
    ("prepare", "--crop"): (st.integers(max_value=-1), "--crop"),
    ("train", "--run-dir"): (st.sampled_from(["/proc/kdrecon", "/dev/null/run"]), "--run-dir"),
    ("run", "--run-dir"): (st.sampled_from(["/proc/kdrecon", "/dev/null/run"]), "--run-dir"),
}


@SETTINGS
@given(option=st.sampled_from(sorted(OPTIONS)), data=st.data())
def test_a_bad_option_is_refused_before_any_work(tmp_path, option, data):
    command, name = option
    values, mentioned = OPTIONS[option]
    value = data.draw(values)
    root = tmp_path / "case"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    arguments = {"train": ["train", "--run-dir", root / "run"], "run": ["run", "demo", "--run-dir", root / "run"],
                 "bench": ["bench", "--output", root / "bench"], "evaluate": ["evaluate", root / "run"],
                 "prepare": ["prepare", "sunnybrook", sample_directory(), root / "data", "--phases", "0", "--crop", "48",
                             "--mask", "equispaced"]}[command]  # a mask that takes every mask option
    message = refused([*arguments, name, value], root)
    assert mentioned in message, message


@pytest.mark.parametrize("options, message", [
    (["--mask-seed", "0"], "--mask-seed: the papers mask is fixed, not drawn; leave it out"),  # the source's default mask
    (["--mask", "papers", "--center-fraction", "0.3"], "--center-fraction: the papers mask has its own centre; leave it out"),
    (["--mask", "recipe", "--center-fraction", "0.3"], "--center-fraction: the recipe mask has its own centre; leave it out"),
    (["--mask", "{npy}", "--mask-seed", "7"], "--mask-seed: the mask file {npy} is fixed, not drawn; leave it out"),
    (["--mask", "{npy}", "--center-fraction", "0.3"], "--center-fraction: the mask file {npy} has its own centre; leave it out"),
    (["--task", "super-resolution", "--mask-seed", "7"], "--mask-seed: super-resolution keeps the central block of k-space"),
    (["--task", "super-resolution", "--center-fraction", "0.3"],
     "--center-fraction: super-resolution keeps the central block of k-space"),
])
def test_prepare_refuses_a_mask_option_the_mask_or_task_does_not_use(tmp_path, shared_dir, options, message):
    npy = str(shared_dir / "masks/cardiac/mask_4x.npy")
    options = [option.replace("{npy}", npy) for option in options]
    arguments = ["prepare", "sunnybrook", sample_directory(), tmp_path / "data", "--phases", "0", *options]
    assert message.replace("{npy}", npy) in refused(arguments, tmp_path)


@pytest.mark.parametrize("content", ["truncated", "not an archive"])
def test_prepare_names_a_damaged_subject_file(tmp_path, content):
    source = tmp_path / "sunnybrook"
    source.mkdir()
    original = next(Path(sample_directory()).glob("SCD*.npz"))
    data = original.read_bytes()
    (source / original.name).write_bytes(data[: len(data) // 2] if content == "truncated" else b"not an npz")
    message = refused(["prepare", "sunnybrook", source, tmp_path / "data", "--phases", "0"], tmp_path)
    assert f"{source / original.name}: not a readable .npz archive" in message


@pytest.mark.parametrize("command", ["train", "run"])
def test_an_unreadable_config_or_set_value_is_refused_in_one_line(tmp_path, command):
    root = tmp_path / "case"
    root.mkdir()
    (root / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    run_dir = ["--run-dir", root / "run"]
    config = ["--config", root / "latin1.yaml"] if command == "train" else [root / "latin1.yaml"]
    assert "latin1.yaml: not UTF-8 text" in refused([command, *config, *run_dir], root)
    directory = ["--config", root] if command == "train" else [root]
    assert "is a directory, not a config file" in refused([command, *directory, *run_dir], root)
    base = ["train", "--model", "D2C2"] if command == "train" else ["run", "demo"]
    assert "--set 'epochs=[': the value is not valid YAML" in refused([*base, *run_dir, "--set", "epochs=["], root)


@pytest.mark.parametrize("setting, message", [
    ("seeds=[true]", "seeds.0: Input should be a valid integer (got True)"),
    ("optimization.epochs='3'", "optimization.epochs: Input should be a valid integer (got '3')"),
    ("optimization.epochs=true", "optimization.epochs: Input should be a valid integer (got True)"),
    ("alpha=false", "alpha: Input should be a valid number (got False)"),
])
def test_a_value_of_another_type_is_refused_not_coerced(tmp_path, setting, message):
    """YAML's true is not seed 1, nor '3' three epochs: the config models are strict."""
    root = tmp_path / "case"
    root.mkdir()
    assert message in refused(["run", "demo", "--run-dir", root / "run", "--set", setting], root)


def test_numbers_in_scientific_notation_are_numbers_in_configs_and_set(tmp_path):
    """YAML 1.1 (PyYAML's) reads ``1e-3`` as a string, which strict validation would refuse."""
    from kdrecon.cli import _key_values
    from kdrecon.training.config import TrainConfig, read_yaml, validate

    (tmp_path / "teacher.yaml").write_text("model:\n  name: D2C2\noptimization:\n  learning_rate: 5e-4\n")
    config = validate(TrainConfig, read_yaml(tmp_path / "teacher.yaml"))
    assert config.optimization.learning_rate == 0.0005
    assert _key_values(["optimization.learning_rate=2e-3", "name=1e3x"]) == {"optimization.learning_rate": 0.002,
                                                                            "name": "1e3x"}


def test_set_null_removes_a_preset_key_so_its_default_applies():
    """A preset's setting that another --set makes unused can be dropped: ``--set KEY=null``."""
    from kdrecon.cli import _key_values
    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.stages import build_stages
    from kdrecon.training.config import ConfigError

    without_ablation = {"kd_mri_ablation": False}
    with pytest.raises(ConfigError, match=r"^epochs.feature_stage: no stage of this experiment distils with the two-stage"):
        build_stages(load_experiment("kd-mri-sunnybrook-4x", without_ablation))
    config = load_experiment("kd-mri-sunnybrook-4x", {**without_ablation, **_key_values(["epochs.feature_stage=null"])})
    assert config.epochs.feature_stage is None and config.optimization.lr_step_epochs == 5  # only that key removed
    assert {stage.config["procedure"] for stage in build_stages(config) if stage.kind == "distill"} == {"single-stage"}


@pytest.mark.parametrize("command,arguments,message", [
    ("train", ["--model", "D3C5", "--epochs", "1", "--set", "optimization.epochs=2"],
     "--set optimization.epochs=2: an option of this command already sets optimization.epochs (to 1); give it once"),
    ("train", ["--set", "model.name=D5C5", "--model", "D3C5"],
     "--set model.name=D5C5: an option of this command already sets model.name (to D3C5)"),
    ("distill", ["--teacher", "runs/t", "--method", "at", "--set", "method=fitnets"],
     "--set method=fitnets: an option of this command already sets method (to at)"),
])
def test_a_key_given_by_an_option_and_by_set_is_refused(tmp_path, command, arguments, message):
    run_dir = tmp_path / "run"
    assert message in refused([command, "--dataset", "sample", "--run-dir", run_dir, *arguments], tmp_path)


def test_set_with_an_empty_value_is_refused_not_read_as_null(tmp_path):
    """``--set name=`` would read as YAML null and quietly restore the default name ``experiment``."""
    root = tmp_path / "case"
    root.mkdir()
    message = refused(["run", "demo", "--run-dir", root / "run", "--set", "name="], root)
    assert "--set 'name=': no value after '='; write name=null to remove the key" in message


def test_set_null_on_a_key_that_is_not_there_changes_nothing():
    """Removing an absent key must not add its parent as an empty mapping, which is a setting of its own."""
    from kdrecon.cli import _key_values
    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.stages import build_stages
    from kdrecon.training.config import DistillConfig, TrainConfig, load_config

    train = load_config(TrainConfig, None, {"model.name": "D3C5", **_key_values(["sft.teacher_weight=null"])})
    assert train.sft is None  # an `sft: {}` is refused for a model other than sft-teacher
    distill = load_config(DistillConfig, None, {"teacher": "t", **_key_values(["layers.student=null"])})
    assert distill.layers is None  # `layers: {}` lacks its teacher and student paths
    config = load_experiment("demo", _key_values(["method_settings.fsp.feature_weight=null"]))
    assert config.method_settings == {} and build_stages(config)  # `fsp: {}` is a method no stage uses


@pytest.mark.parametrize("model, message", [
    ({"name": "U8C1"}, r"^config: model: U8C1 at 32 channels has 1,990,932,641 parameters, more than"),
    ({"name": "U9C1"}, r"^config: model.name: model U9C1: a U-Net block has 1 to 8 levels of down-sampling, got 9"),
    ({"name": "D5C5", "padding": 1000}, r"^config: model.padding: Input should be less than or equal to 64"),
])
def test_a_network_too_large_to_train_is_refused_before_anything_is_allocated(model, message):
    from kdrecon.training.config import ConfigError, TrainConfig, validate

    # U8C1's bottom level is 32·2⁸ channels wide; the count (the formula of dc_unet's docstring) is made without allocating.
    with pytest.raises(ConfigError, match=message):
        validate(TrainConfig, {"model": model})
