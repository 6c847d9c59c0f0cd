"""Distillation runs end to end on real data: Std-KD and SFT-KD with each method, resume, errors."""

import os

import pytest
import torch

from kdrecon.distillation.layer_pairs import default_layer_pairs
from kdrecon.evaluation.evaluate import evaluate
from kdrecon.models import build_model
from kdrecon.training.checkpoint import load_checkpoint, load_model
from kdrecon.training.config import ConfigError, DistillConfig, TrainConfig, validate
from kdrecon.training.distill import FEATURE_STAGE, distill_student
from kdrecon.training.supervised import train_model

TINY = {"epochs": 1, "batch_size": 8}
#: Three convolutions per block: FSP compares the flow between two hidden layers of each.
STUDENT = {"name": "D3C3", "channels": 8}
METHODS = ("at", "fitnets", "sp", "fsp", "cc")


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, small_train, small_validation):
    """A plain teacher and a student-friendly teacher, briefly trained on real 64×64 slices."""
    root = tmp_path_factory.mktemp("teachers")
    plain = validate(TrainConfig, {"model": {"name": "D4C3", "channels": 8}, "optimization": TINY})
    friendly = validate(
        TrainConfig,
        {"model": {"name": "sft-teacher", "teacher": "D4C3", "student": "D3C3", "channels": 8}, "optimization": TINY},
    )
    train_model(plain, root / "teacher", False, small_train, small_validation)
    train_model(friendly, root / "sft-teacher", False, small_train, small_validation)
    return root


def distill(run_dir, splits, **settings):
    config = validate(DistillConfig, {"student": STUDENT, "optimization": TINY, **settings})
    return distill_student(config, run_dir, False, *splits)


def test_papers_layer_pairs_are_the_default():
    pairs = default_layer_pairs("at", build_model("D5C5"), build_model("D3C5"))
    assert pairs.teacher == [f"blocks.{i}.layers.2" for i in range(5)]
    assert pairs.student == [f"blocks.{i}.layers.1" for i in range(5)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", ["std-kd", "sft-kd"])
def test_each_method_runs_both_paths(tmp_path, teachers, small_train, small_validation, method, path):
    teacher = teachers / ("teacher" if path == "std-kd" else "sft-teacher")
    init = "random" if path == "std-kd" else "sft"
    result = distill(tmp_path / "run", (small_train, small_validation), teacher=str(teacher), method=method, init=init)

    feature_stage = load_checkpoint(tmp_path / "run" / FEATURE_STAGE / "checkpoints" / "last.pt")
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert feature_stage["distillation"]["weights"]["reconstruction"] == 0
    assert feature_stage["history"][0]["train_feature"] > 0
    assert final["stage"] == "fine-tune" and final["model"]["name"] == "D3C3"
    assert {"train_reconstruction", "train_imitation", "train_total"} <= set(final["history"][0])
    assert 0 < result.best_validation_loss < 1
    if path == "sft-kd":
        assert final["distillation"]["initialised_tensors"] == 2 * 6  # S2, S3: three convolutions each


def test_sft_kd_starts_from_the_branches_and_is_evaluated(tmp_path, teachers, small_train, small_validation):
    sft, _ = load_model(teachers / "sft-teacher")
    seen = {}

    def first_epoch(stage, epoch, row):
        seen.setdefault(stage, epoch)

    result = distill_student(
        validate(DistillConfig, {"student": STUDENT, "optimization": {**TINY, "learning_rate": 1e-12},
                                 "teacher": str(teachers / "sft-teacher"), "init": "sft", "procedure": "single-stage"}),
        tmp_path / "run",
        False,
        small_train,
        small_validation,
        on_epoch_end=first_epoch,
    )
    assert seen == {"distill": 1}
    student, _ = load_model(result.run_dir)
    # With a negligible learning rate the student still holds the SFT branches' S2..S3.
    for name, value in sft.student_state_dict().items():
        assert torch.allclose(student.state_dict()[name], value, atol=1e-9), name
    summary = evaluate(result.run_dir, tmp_path / "evaluation", dataset="sample").summary
    assert summary["model"]["name"] == "D3C3" and summary["model_metrics"]["psnr"]["mean"] > 0


def test_first_block_from_a_baseline_student(tmp_path, teachers, small_train, small_validation):
    data = (small_train, small_validation)
    distill(tmp_path / "baseline", data, teacher=str(teachers / "teacher"), method="imitation")
    baseline, _ = load_model(tmp_path / "baseline")
    config = validate(
        DistillConfig,
        {"student": STUDENT, "optimization": {**TINY, "learning_rate": 1e-12}, "teacher": str(teachers / "sft-teacher"),
         "method": "imitation", "init": "sft", "first_block": "baseline", "baseline": str(tmp_path / "baseline")},
    )
    distill_student(config, tmp_path / "run", False, *data)
    student, _ = load_model(tmp_path / "run")
    for name, value in baseline.state_dict().items():
        if name.startswith("blocks.0."):
            assert torch.allclose(student.state_dict()[name], value, atol=1e-9), name
    # A baseline trained for another acceleration is refused, as such a teacher is.
    checkpoint = tmp_path / "baseline" / "checkpoints" / "best.pt"
    payload = torch.load(checkpoint, weights_only=True)
    payload["config"]["data"]["acceleration"] = "5x"
    torch.save(payload, checkpoint)
    with pytest.raises(ConfigError, match=r"data.acceleration: 4x, but the baseline .*baseline was trained for 5x"):
        distill_student(config, tmp_path / "run-5x", False, *data)
    assert not (tmp_path / "run-5x").exists()


def test_fitnets_connectors_are_trained_and_saved(tmp_path, teachers, small_train, small_validation):
    wide_teacher = validate(TrainConfig, {"model": {"name": "D4C3", "channels": 16}, "optimization": TINY})
    train_model(wide_teacher, tmp_path / "wide", False, small_train, small_validation)
    distill(tmp_path / "run", (small_train, small_validation), teacher=str(tmp_path / "wide"), method="fitnets")
    feature_stage = load_checkpoint(tmp_path / "run" / FEATURE_STAGE / "checkpoints" / "last.pt")
    connectors = feature_stage["modules"]["connectors"]
    assert feature_stage["distillation"]["connector_parameters"] == 3 * (8 * 16 + 16)  # a 1×1 conv per cascade
    assert sum(t.numel() for t in connectors.values()) == 3 * (8 * 16 + 16)


def test_interrupted_distillation_resumes_to_the_same_student(tmp_path, teachers, small_train, small_validation):
    data = (small_train, small_validation)
    settings = {"teacher": str(teachers / "sft-teacher"), "method": "at", "init": "sft",
                "optimization": {**TINY, "epochs": 2}}
    distill(tmp_path / "whole", data, **settings)

    def stop(stage, epoch, row):
        if stage == "fine-tune" and epoch == 1:
            raise KeyboardInterrupt

    config = validate(DistillConfig, {"student": STUDENT, **settings})
    with pytest.raises(KeyboardInterrupt):
        distill_student(config, tmp_path / "resumed", False, *data, on_epoch_end=stop)
    distill_student(config, tmp_path / "resumed", False, *data)
    whole, _ = load_model(tmp_path / "whole", "last")
    resumed, _ = load_model(tmp_path / "resumed", "last")
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_resumed_factor_transfer_keeps_its_paraphraser_losses(tmp_path, teachers, small_train, small_validation):
    data = (small_train, small_validation)
    settings = {"teacher": str(teachers / "teacher"), "method": "ft", "procedure": "single-stage",
                "method_options": {"paraphraser_epochs": 2}, "optimization": {**TINY, "epochs": 2}}
    distill(tmp_path / "whole", data, **settings)

    def stop(stage, epoch, row):
        raise KeyboardInterrupt

    config = validate(DistillConfig, {"student": STUDENT, **settings})
    with pytest.raises(KeyboardInterrupt):
        distill_student(config, tmp_path / "resumed", False, *data, on_epoch_end=stop)
    distill_student(config, tmp_path / "resumed", False, *data)
    for which in ("best", "last"):
        whole, resumed = (load_checkpoint(tmp_path / run / "checkpoints" / f"{which}.pt") for run in ("whole", "resumed"))
        assert resumed["epoch"] == whole["epoch"]  # best.pt: the better epoch, whichever it was
        losses = resumed["distillation"]["preparation_losses"]
        assert len(losses) == 2 and losses == whole["distillation"]["preparation_losses"]
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["epoch"] == 2


@pytest.mark.parametrize("interrupted", ["feature", "fine-tune"])
def test_a_resumed_distillation_keeps_the_layout_it_began_with(interrupted, tmp_path, teachers, small_train,
                                                              small_validation, monkeypatch):
    """``channels_last: auto`` is measured per process on a CPU: a distillation resumed in a process
    that measures the other layout must go on as it began, teacher included, to the same student."""
    from kdrecon.training import fast_path

    def measure(channels_last):
        measured = fast_path.CpuTrainingPath("fp32", float32_channels_last=channels_last, seconds={})
        monkeypatch.setattr(fast_path, "cpu_training_path", lambda: measured)

    data = (small_train, small_validation)
    settings = {"teacher": str(teachers / "teacher"), "method": "at", "precision": "fp32", "channels_last": "auto",
                "optimization": {**TINY, "epochs": 2}}
    measure(True)
    distill(tmp_path / "whole", data, **settings)

    def stop(stage, epoch, row):
        if stage == interrupted:
            raise KeyboardInterrupt

    config = validate(DistillConfig, {"student": STUDENT, **settings})
    with pytest.raises(KeyboardInterrupt):
        distill_student(config, tmp_path / "resumed", False, *data, on_epoch_end=stop)
    measure(False)
    result = distill_student(config, tmp_path / "resumed", False, *data)
    whole, _ = load_model(tmp_path / "whole", "last")
    resumed, _ = load_model(tmp_path / "resumed", "last")
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["channels_last"] is True
    assert (result.precision, result.channels_last) == ("fp32", True)  # what an experiment's stage.json records


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"init": "sft"}, r"init: sft needs a student-friendly teacher"),
        ({"layers": {"teacher": ["blocks.0.layers.7"], "student": ["blocks.0.layers.0"]}}, r"layers\.teacher: no module"),
        ({"method": "fsp", "layers": {"teacher": ["blocks.0.layers.0"], "student": ["blocks.0.layers.0"]}},
         r"layers: fsp: features come in pairs"),
        ({"method_options": {"power": 2}}, r"method_options: at has no option 'power' \(it has: p\)"),
        ({"data": {"acceleration": "5x"}}, r"data.acceleration: 5x, but the teacher .*teacher was trained for 4x"),
        ({"data": {"task": "super-resolution"}}, r"data.task: super-resolution, but the teacher .* was trained for reconstruction"),
    ],
)
def test_bad_distillation_settings_leave_no_run_directory(tmp_path, teachers, small_train, small_validation, settings, message):
    with pytest.raises(ConfigError, match=message):
        distill(tmp_path / "run", (small_train, small_validation), teacher=str(teachers / "teacher"), **settings)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["at", "fitnets"])
def test_paired_features_of_other_sizes_are_refused_before_anything_is_written(tmp_path, small_train, small_validation,
                                                                               method):
    config = validate(TrainConfig, {"model": {"name": "D3C3", "channels": 8, "padding": 5}, "optimization": TINY})
    train_model(config, tmp_path / "teacher", False, small_train, small_validation)  # maps 74×74, the student's 64×64
    with pytest.raises(ConfigError, match=r"^layers: the paired features do not fit: .*\(64, 64\).*\(74, 74\)"):
        distill(tmp_path / "run", (small_train, small_validation), teacher=str(tmp_path / "teacher"), method=method)
    assert not (tmp_path / "run").exists()


def test_a_teacher_whose_training_stopped_is_refused_unless_its_checkpoint_is_named(tmp_path, small_train,
                                                                                 small_validation):
    def stop_after_the_first(epoch, row):
        raise KeyboardInterrupt

    config = validate(TrainConfig, {"model": {"name": "D3C3", "channels": 8}, "optimization": {"epochs": 2, "batch_size": 8}})
    with pytest.raises(KeyboardInterrupt):
        train_model(config, tmp_path / "teacher", False, small_train, small_validation, on_epoch_end=stop_after_the_first)
    with pytest.raises(ConfigError, match=r"^teacher: .*teacher: its training stopped at epoch 1 of 2; finish it"):
        distill(tmp_path / "run", (small_train, small_validation), teacher=str(tmp_path / "teacher"), procedure="single-stage")
    assert not (tmp_path / "run").exists()
    best = tmp_path / "teacher" / "checkpoints" / "best.pt"
    distill(tmp_path / "run", (small_train, small_validation), teacher=str(best), procedure="single-stage")
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["distillation"]["teacher"] == str(best)


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, r"^config: teacher: Field required"),
        ({"teacher": "t", "method": "kd"}, r"^config: method: "),
        ({"teacher": "t", "first_block": "baseline"}, r"^config: first_block: baseline needs init: sft"),
        ({"teacher": "t", "init": "sft", "first_block": "baseline"}, r"^config: baseline: give it"),
        ({"teacher": "t", "student": {"name": "sft-teacher"}}, r"^config: student: the student must be a network such as D3C5, not sft-teacher"),
        ({"teacher": "t", "alpha": 1.5}, r"^config: alpha: "),
        ({"teacher": "t", "layers": {"teacher": ["a", "b"], "student": ["a"]}}, r"^config: layers: 2 teacher layers"),
        ({"teacher": "t", "method": "imitation", "feature_weight": 100},
         r"^config: feature_weight: method imitation distils no features"),
        ({"teacher": "t", "method": "imitation", "method_options": {"p": 2}},
         r"^config: method_options: method imitation distils no features"),
        ({"teacher": "t", "procedure": "single-stage", "feature_epochs": 5},
         r"^config: feature_epochs: the single-stage procedure has no feature stage"),
        ({"teacher": "t", "teacher_cache_gib": "lots"}, r"^config: teacher_cache_gib"),
        ({"teacher": "t", "teacher_cache_gib": -1}, r"^config: teacher_cache_gib"),
    ],
)
def test_bad_distillation_config_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        validate(DistillConfig, data)


def test_factor_transfer_trains_its_paraphraser_first_then_keeps_it_fixed(tmp_path, teachers, small_train, small_validation):
    from kdrecon.distillation.hooks import FeatureTap
    from kdrecon.distillation.losses import build_feature_loss

    settings = {"method": "ft", "procedure": "single-stage", "method_options": {"paraphraser_epochs": 3},
                "optimization": {"epochs": 2, "batch_size": 8}}
    distill(tmp_path / "run", (small_train, small_validation), teacher=str(teachers / "teacher"), **settings)
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    losses = final["distillation"]["preparation_losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    # The saved paraphraser reconstructs the teacher's features far better than an untrained one,
    # and distillation left it as the preparatory step did: its loss now is the last epoch's level.
    teacher, _ = load_model(teachers / "teacher")
    layers = [f"blocks.{i}.layers.1" for i in range(3)]
    tap = FeatureTap(teacher, layers)
    batch = small_train.batch(torch.arange(len(small_train)))
    with torch.no_grad():
        teacher(batch.zero_filled, batch.kspace, batch.mask)
        features = tap.features()
        trained, untrained = (build_feature_loss("ft", [8] * 3, [8] * 3) for _ in range(2))
        trained.load_state_dict(final["modules"]["connectors"])
        assert trained.paraphraser_reconstruction_loss(features) < 0.5 * untrained.paraphraser_reconstruction_loss(features)
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    paraphrasers = [k for k in final["modules"]["connectors"] if k.startswith("paraphrasers.")]
    assert paraphrasers and all(torch.equal(final["modules"]["connectors"][k], best["modules"]["connectors"][k]) for k in paraphrasers)


@pytest.fixture
def one_process(monkeypatch):
    """No torchrun ranks or --parallel workers sharing this process's memory, no cgroup limit."""
    from kdrecon.training import teacher_cache

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv(teacher_cache.SHARING_PROCESSES, raising=False)
    monkeypatch.setattr(teacher_cache, "_cgroup_headroom", lambda: None)
    return teacher_cache


def test_the_teacher_cache_is_sized_from_free_memory_unless_given(monkeypatch, one_process):
    import types

    teacher_cache, cpu = one_process, torch.device("cpu")
    assert teacher_cache.teacher_cache_bytes(2, cpu) == 2 * 1024**3
    assert teacher_cache.teacher_cache_bytes(0, cpu) == 0
    # auto: half of what the system reports available (here a made-up 10 GiB) ...
    monkeypatch.setattr(teacher_cache.psutil, "virtual_memory", lambda: types.SimpleNamespace(available=10 * 1024**3))
    assert teacher_cache.teacher_cache_bytes("auto", cpu) == 5 * 1024**3
    # ... or of a smaller cgroup headroom, shared by the processes that start together.
    monkeypatch.setattr(teacher_cache, "_cgroup_headroom", lambda: 3 * 1024**3)
    assert teacher_cache.teacher_cache_bytes("auto", cpu) == 3 * 1024**3 // 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun ranks on this machine, each caching the split
    monkeypatch.setenv(teacher_cache.SHARING_PROCESSES, "3")  # in each of three --parallel workers
    assert teacher_cache.teacher_cache_bytes("auto", cpu) == 3 * 1024**3 // 6 // 2
    assert validate(DistillConfig, {"teacher": "t"}).teacher_cache_gib == "auto"
    assert validate(DistillConfig, {"teacher": "t", "teacher_cache_gib": 8}).teacher_cache_gib == 8


def test_a_gpu_counts_its_allocator_s_unused_memory_as_free(monkeypatch, one_process):
    teacher_cache, gpu = one_process, torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (6 * 1024**3, 80 * 1024**3))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5 * 1024**3)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 * 1024**3)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun's ranks each have their own GPU
    assert teacher_cache.free_memory_bytes(gpu) == 10 * 1024**3
    monkeypatch.setenv(teacher_cache.SHARING_PROCESSES, "2")  # two --parallel workers on this one
    assert teacher_cache.teacher_cache_bytes("auto", gpu) == 10 * 1024**3 // 2 // 2


@pytest.mark.parametrize("files, headroom", [
    (("1000", "300"), 700),  # cgroup v2: limit and use, in bytes
    (("max", "300"), None),  # v2 without a limit
    (("9223372036854771712", "300"), None),  # v1 without a limit
])
def test_the_cgroup_limit_caps_the_free_memory(tmp_path, monkeypatch, files, headroom):
    from kdrecon.training import teacher_cache

    (tmp_path / "max").write_text(files[0] + "\n")
    (tmp_path / "current").write_text(files[1] + "\n")
    monkeypatch.setattr(teacher_cache, "CGROUP_FILES", ((str(tmp_path / "none"), str(tmp_path / "none")),
                                                        (str(tmp_path / "max"), str(tmp_path / "current"))))
    assert teacher_cache._cgroup_headroom() == headroom


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="Linux reports available memory in /proc/meminfo")
def test_free_memory_on_a_cpu_is_what_linux_reports_available(one_process):
    meminfo = open("/proc/meminfo").read()
    available = int(next(line for line in meminfo.splitlines() if line.startswith("MemAvailable:")).split()[1]) * 1024
    assert abs(one_process.free_memory_bytes(torch.device("cpu")) - available) < 0.1 * available  # another moment


def test_an_interrupted_distillation_resumes_with_another_cache_size_but_not_another_method(
        tmp_path, teachers, small_train, small_validation):
    data = (small_train, small_validation)
    settings = {"teacher": str(teachers / "teacher"), "method": "sp", "procedure": "single-stage",
                "teacher_cache_gib": 0, "optimization": {**TINY, "epochs": 2}}

    def stop(stage, epoch, row):
        raise KeyboardInterrupt

    config = validate(DistillConfig, {"student": STUDENT, **settings})
    with pytest.raises(KeyboardInterrupt):
        distill_student(config, tmp_path / "run", False, *data, on_epoch_end=stop)
    record = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["distillation"]["teacher_cache"]
    assert record == {"budget_bytes": 0, "features_cached": False}  # the teacher ran at every step
    distill(tmp_path / "run", data, **{**settings, "teacher_cache_gib": "auto"})
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["distillation"]["teacher_cache"]["features_cached"]  # 64×64 slices fit
    with pytest.raises(ConfigError, match=r"different config \(differs in: method\)"):
        distill(tmp_path / "run", data, **{**settings, "method": "fitnets"})
