"""The benchmark's counts and its reference data path (speed itself is measured, never asserted)."""

import json

import pytest
import torch

from kdrecon.cli import main
from kdrecon.evaluation.benchmark import PerItemH5Slices, count_macs, training_flops_per_slice
from kdrecon.models import build_model
from conftest import TWO_STAGE


@pytest.mark.parametrize("name, convs", [("D5C5", 5), ("D3C5", 3), ("D2C5", 2)])
def test_macs_per_slice_match_the_hand_count(small_train, name, convs):
    height, width = small_train.image_shape
    per_block = height * width * (1 * 32 * 9 + (convs - 2) * 32 * 32 * 9 + 32 * 1 * 9)
    assert count_macs(build_model(name), small_train.batch(torch.arange(3))) == 5 * per_block


def test_reference_path_reads_the_same_slices_from_h5(tmp_path, small_train):
    slices = PerItemH5Slices(small_train, tmp_path)
    assert len(slices.items) == len(small_train)
    batch = next(slices.batches(4, torch.device("cpu")))
    # Find each slice of the batch in memory by its target and compare all inputs.
    for zero_filled, kspace, target in zip(batch.zero_filled, batch.kspace, batch.target):
        index = int(torch.argmin((small_train.target - target).abs().flatten(1).sum(1)))
        assert torch.equal(small_train.target[index], target)
        assert torch.equal(small_train.zero_filled[index], zero_filled)
        assert torch.equal(small_train.kspace[index], kspace)
    assert torch.equal(batch.mask, small_train.mask)


def test_training_flops_count_a_backward_pass_as_two_forwards():
    result = {"models": {"teacher": {"macs_per_slice": 100, "cascades": 5}, "student": {"macs_per_slice": 40, "cascades": 5}}}
    assert training_flops_per_slice(result, "train") == 600
    assert training_flops_per_slice(result, "distill") == 3 * 80 + 200
    assert training_flops_per_slice(result, "sft-teacher") == pytest.approx(3 * (200 + 80 * 10 / 5))
    # Three cascades: the branches run 2 + 1 student blocks, 3/3 of one student forward.
    three = {"models": {"teacher": {"macs_per_slice": 100, "cascades": 3}, "student": {"macs_per_slice": 30, "cascades": 3}}}
    assert training_flops_per_slice(three, "sft-teacher") == pytest.approx(3 * (200 + 60))


def test_sft_training_flops_agree_with_a_flop_counter_on_the_branches():
    from torch.utils.flop_counter import FlopCounterMode

    from kdrecon.models.cascade import use_matrix_consistency
    from kdrecon.models.registry import SFT_TEACHER

    sft = use_matrix_consistency(build_model(SFT_TEACHER, teacher="D3C4", student="D2C4", channels=8), False)
    image, kspace, mask = torch.rand(1, 1, 16, 16), torch.zeros(1, 16, 16, dtype=torch.complex64), torch.ones(16, 16)

    def forward_flops(call) -> int:  # convolutions only: the FFT form of data consistency counts none
        with FlopCounterMode(display=False) as counter:
            call()
        return counter.get_total_flops()

    teacher = forward_flops(lambda: sft.teacher(image, kspace, mask))
    student = forward_flops(lambda: sft.student(image, kspace, mask))
    both = forward_flops(lambda: sft(image, kspace, mask, branches=True))
    result = {"models": {"teacher": {"macs_per_slice": teacher // 2, "cascades": 4},
                         "student": {"macs_per_slice": student // 2, "cascades": 4}}}
    assert training_flops_per_slice(result, SFT_TEACHER) == pytest.approx(3 * both)


def test_bench_command_writes_json_and_markdown(tmp_path):
    output = tmp_path / "bench"
    arguments = ["bench", "--size", "40", "--steps", "1", "--repeats", "1", "--no-compile", "--batch-size", "2",
                 "--output", str(output)]
    assert main(arguments) == 0
    result = json.loads((output / "bench.json").read_text())
    assert result["training_batch_size"] == 2 and "| training (slices/s, batch 2) |" in (output / "bench.md").read_text()
    assert result["models"]["teacher"]["parameters"] == 141_765
    assert result["models"]["student"]["parameters"] == 49_285
    assert set(result["training"]) == {f"{k}/{p}" for k in ("train", "sft-teacher", "distill") for p in ("fast", "reference")}
    assert set(result["peak_flops"]) == {"inference/batch1", "inference/batch16", "training/train",
                                         "training/sft-teacher", "training/distill"}
    assert all(rate > 0 for rate in result["training"].values())
    assert "| teacher D5C5 (L1) |" in (output / "bench.md").read_text()
    assert "student/batch1/onnxruntime" in result["inference"] and "student/batch1/compiled" not in result["inference"]


def test_compiled_path_is_timed_beside_the_others_and_tabulated(small_validation):
    import torch

    from kdrecon.evaluation.benchmark import _deployed_lines, inference_seconds_per_slice

    measured = inference_seconds_per_slice("D2C1", "D2C1", small_validation, torch.device("cpu"), 1, 1, compile=True)
    seconds = measured.values
    assert measured.peak_flops > 0
    assert set(seconds) == {f"{role}/{path}" for role in ("teacher", "student")
                            for path in ("fast", "reference", "onnxruntime", "compiled", "aot-inductor")}
    assert all(value > 0 for value in seconds.values())
    result = {"models": {"teacher": {"name": "D5C5"}, "student": {"name": "D3C5"}},
              "inference": {f"{role}/batch{b}/compiled": value for role, value in (("teacher", 0.03), ("student", 0.01))
                            for b in (1, 16)}}
    table = "\n".join(_deployed_lines(result))
    assert "torch.compile" in table and "ONNX" not in table and "| student speed-up over teacher | 3.00× | 3.00× |" in table


def test_macs_of_a_u_net_block_match_the_hand_count():
    import torch

    from kdrecon.data.dataset import Batch
    from kdrecon.models import build_model

    # U1C1, 2 channels, on 8×8 (64 px; the bottom level 4×4, 16 px), per layer: encoder 64·2·9·1 +
    # 64·2·9·2, bottom 16·4·9·2 + 16·4·9·4, up (2×2, stride 2) 16·4·2·4, decoder 64·2·9·4 +
    # 64·2·9·2, output (1×1) 64·1·2.
    expected = 1152 + 2304 + 1152 + 2304 + 512 + 4608 + 2304 + 128
    batch = Batch(torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.complex64), torch.zeros(8, 8), torch.rand(1, 1, 8, 8))
    assert count_macs(build_model("U1C1", channels=2), batch) == expected == 14_464


def test_experiment_estimate_costs_every_stage_from_its_kind(tiny_overrides, monkeypatch):
    from kdrecon.distillation.distiller import Distiller
    from kdrecon.experiment import estimate as estimate_module
    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.estimate import CostKey, estimate_experiment
    from kdrecon.experiment.stages import build_stages
    from kdrecon.training.trainer import ReconstructionObjective

    validated = []  # what each validation pass ran: a distiller (feature loss, teacher too) or a network alone
    real_validate = estimate_module.validate
    monkeypatch.setattr(estimate_module, "validate", lambda objective, *args: (
        validated.append(type(objective)), real_validate(objective, *args))[1])
    config = load_experiment("demo", {**tiny_overrides, **TWO_STAGE, "procedure": "two-stage", "alpha": 0.5})
    estimate = estimate_experiment(config, steps=1)
    assert [s.stage for s in estimate.stages] == [s.id for s in build_stages(config)]
    # Teacher and student on L1, the SFT step, and for Std-KD and SFT-KD alike the two runs of a
    # two-stage distillation: AT's feature run, then L1 with imitation.
    imitation = CostKey("distill", "D3C3", "D2C3", "imitation")
    assert set(estimate.costs) == {CostKey("train", "D3C3"), CostKey("train", "D2C3"),
                                   CostKey("sft-teacher", "D3C3", "D2C3"), CostKey("distill", "D3C3", "D2C3", "at"),
                                   imitation}
    assert all(stage.seconds > 0 for stage in estimate.stages)
    distillation = next(s for s in estimate.stages if s.role == "std-kd")
    assert distillation.fine_tuning == imitation and distillation.epochs == 1 + 2
    assert estimate.costs[distillation.cost].cache > 0 and estimate.costs[distillation.cost].feature_validation > 0
    assert all(c.feature_validation == 0 for key, c in estimate.costs.items() if key.method != "at")
    # Teacher, student and both distillation runs validate a network alone, the SFT teacher as it
    # trains, and AT's feature run also on its feature loss (the teacher run on the slices).
    assert sorted(t.__name__ for t in validated) == sorted(
        ["ReconstructionObjective"] * 4 + ["StudentFriendlyObjective", "Distiller"])
    assert validated.count(Distiller) == 1 and validated.count(ReconstructionObjective) == 4
    # One stage per role in the demo, grouped in the order the roles first run.
    assert [(role, count) for role, count, _ in estimate.by_role()] == [
        ("teacher", 1), ("student", 1), ("sft-teacher", 1), ("std-kd", 1), ("sft-kd", 1)]


def test_each_distillation_method_is_timed_as_itself(tiny_overrides, monkeypatch):
    from kdrecon.experiment import estimate as estimate_module
    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.estimate import CostKey, estimate_experiment, format_estimate

    timed = []  # (method, teacher layers) of each distillation step the estimate built
    real_training_step = estimate_module.training_step

    def recording(kind, *args, method, layers, **options):
        step = real_training_step(kind, *args, method=method, layers=layers, **options)
        if kind == "distill":
            timed.append((method, tuple(layers.teacher) if layers else ()))
            assert (step.objective.feature_loss is None) == (method == "imitation")
        return step

    monkeypatch.setattr(estimate_module, "training_step", recording)
    sp_layers = {"teacher": ["blocks.0.layers.0", "blocks.1.layers.0"], "student": ["blocks.0.layers.0", "blocks.1.layers.0"]}
    config = load_experiment("demo", {**tiny_overrides, **TWO_STAGE, "methods": ["at", "sp"], "kd_mri_ablation": True,
                                      "method_settings": {"sp": {"layers": sp_layers}}})
    estimate = estimate_experiment(config, steps=1)
    own_layers = CostKey("distill", "D3C3", "D2C3", "sp", tuple(sp_layers["teacher"]), tuple(sp_layers["student"]))
    # KD-MRI's ablation adds imitation alone; its AT-alone and AT-then-imitation stages cost as AT.
    assert {key for key in estimate.costs if key.kind == "distill"} == {
        CostKey("distill", "D3C3", "D2C3", "at"), CostKey("distill", "D3C3", "D2C3", "imitation"), own_layers}
    assert sorted(timed) == sorted([("at", ()), ("imitation", ()), ("sp", tuple(sp_layers["teacher"]))])
    # Only AT has a two-stage stage here (KD-MRI's AT, then imitation): only its feature run is validated
    # on the feature loss; the single-stage SP's is not, nor shown.
    assert {key.method for key, cost in estimate.costs.items() if cost.feature_validation > 0} == {"at"}
    assert "feature stage" not in next(line for line in format_estimate(estimate).splitlines() if "SP D3C3" in line)
    assert own_layers.label() == "distillation SP D3C3→D2C3 (its own layers)"


def test_a_stage_costs_what_the_formula_says_by_hand(tiny_overrides):
    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.estimate import MeasuredCost, stage_seconds
    from kdrecon.experiment.stages import build_stages

    config = load_experiment("demo", {**tiny_overrides, **TWO_STAGE, "procedure": "two-stage"})
    stages = {stage.role: stage for stage in build_stages(config)}
    cost = MeasuredCost(step=2.0, cache=5.0, validation=3.0, scores=7.0, feature_validation=13.0)
    tuning = MeasuredCost(step=1.0, cache=4.0, validation=3.0, scores=7.0)
    batch = stages["std-kd"].config["optimization"]["batch_size"]
    # 10 training slices in ceil(10 / B) steps per epoch. A two-stage distillation: its feature run, 1
    # epoch validated on the feature loss (13 s) and its cache (5 s); its fine-tuning run, 2 epochs of
    # another step validated on L1 (3 s) and its own cache (4 s); then one evaluation (3 + 7 s).
    steps = -(-10 // batch)
    assert (stage_seconds(stages["std-kd"], cost, 10, tuning)
            == (steps * 2.0 + 13.0) + 5.0 + 2 * (steps * 1.0 + 3.0) + 4.0 + 3.0 + 7.0)
    teacher_epochs = stages["teacher"].config["optimization"]["epochs"]
    assert stage_seconds(stages["teacher"], cost, 10) == teacher_epochs * (steps * 2.0 + 3.0) + 5.0 + 3.0 + 7.0
    # Compiled: each training run compiles its network once (two runs for the two-stage distillation).
    compiled = MeasuredCost(step=2.0, cache=0.0, validation=3.0, scores=7.0, compile=11.0, feature_validation=13.0)
    tuning_compiled = MeasuredCost(step=1.0, cache=4.0, validation=3.0, scores=7.0, compile=17.0)
    assert (stage_seconds(stages["std-kd"], compiled, 10, tuning_compiled)
            == (steps * 2.0 + 13.0) + 11.0 + 2 * (steps * 1.0 + 3.0) + 17.0 + 4.0 + 3.0 + 7.0)
    assert stage_seconds(stages["teacher"], compiled, 10) == teacher_epochs * (steps * 2.0 + 3.0) + 11.0 + 3.0 + 7.0
    # Single-stage: one run, every epoch validating the student alone.
    single = {s.role: s for s in build_stages(load_experiment("demo", {**tiny_overrides, "procedure": "single-stage"}))}
    epochs = single["std-kd"].config["optimization"]["epochs"]
    assert stage_seconds(single["std-kd"], cost, 10) == epochs * (steps * 2.0 + 3.0) + 5.0 + 3.0 + 7.0


def test_a_two_stage_distillation_at_alpha_one_fine_tunes_on_l1_alone(tiny_overrides):
    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.estimate import CostKey, cost_key, fine_tuning_key
    from kdrecon.experiment.stages import build_stages

    stages = build_stages(load_experiment("demo", {**tiny_overrides, **TWO_STAGE, "procedure": "two-stage", "alpha": 1.0}))
    by_id = {stage.id: stage for stage in stages}
    distillation = next(s for s in stages if s.role == "std-kd")
    assert fine_tuning_key(distillation, cost_key(distillation, by_id)) == CostKey("train", "D2C3")  # no teacher, no cache
    teacher = next(s for s in stages if s.role == "teacher")
    assert fine_tuning_key(teacher, cost_key(teacher, by_id)) is None


def test_a_compiled_experiment_is_costed_with_its_compilation(tiny_overrides, monkeypatch):
    """``compile: true`` compiles each stage kind's trained network as training does, and the seconds
    its first steps take beyond the measured step are the compilation (a stand-in compiler here:
    inductor needs a minute per network on this CPU)."""
    import time

    from kdrecon.experiment import estimate as estimate_module
    from kdrecon.experiment.config import load_experiment

    compiled_models = []

    def slow_compile(model, example, fresh=False):
        assert fresh  # each stage kind compiles afresh, as its training run would
        compiled_models.append(type(model).__name__)
        time.sleep(2.5)
        return True

    monkeypatch.setattr(estimate_module, "compile_forward", slow_compile)
    result = estimate_module.estimate_experiment(load_experiment("demo", {**tiny_overrides, "compile": True}), steps=1)
    assert len(compiled_models) == len(result.costs) == 4  # teacher, student, SFT teacher, distillation
    # 2.5 s, less or more by how far the first three steps differ from the median step deducted for them
    # (by up to 0.8 s seen on a machine running other tests beside)
    assert all(1.0 <= cost.compile < 30 for cost in result.costs.values()), [c.compile for c in result.costs.values()]
    assert "compilation (s)" in estimate_module.format_estimate(result)
    plain = estimate_module.estimate_experiment(load_experiment("demo", tiny_overrides), steps=1)
    assert all(cost.compile == 0 for cost in plain.costs.values()) and len(compiled_models) == 4
    assert "compilation (s)" not in estimate_module.format_estimate(plain)


def test_bench_refuses_a_pair_whose_stages_cannot_be_built_before_measuring(tmp_path, capsys, monkeypatch):
    from kdrecon.evaluation import benchmark

    monkeypatch.setattr(benchmark, "run_benchmark", lambda *args, **kwargs: pytest.fail("measured an impossible pair"))
    assert main(["bench", "--teacher", "VDSR12B4", "--student", "D3C5", "--output", str(tmp_path / "bench")]) == 2
    assert "a student-friendly teacher pairs blocks one to one: the teacher has 4 cascades, the student 5" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_bench_experiment_writes_the_estimate(tiny_dataset, tmp_path):
    import yaml

    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(yaml.safe_dump({"name": "tiny", "data": {"dataset": str(tiny_dataset)}, "teacher": "D3C3",
                                          "student": "D2C3", "channels": 8, "optimization": {"epochs": 1}}))
    output = tmp_path / "estimate"
    assert main(["bench", "--experiment", str(experiment), "--steps", "1", "--output", str(output)]) == 0
    result = json.loads((output / "estimate.json").read_text())
    assert result["experiment"] == "tiny" and result["total_seconds"] > 0
    assert "| teacher | 1 |" in (output / "estimate.md").read_text()
    # An earlier measurement (a GPU machine's, say) is kept unless --overwrite; a run directory is no place for one.
    before = (output / "estimate.json").read_text()
    assert main(["bench", "--experiment", str(experiment), "--steps", "1", "--output", str(output)]) == 2
    assert (output / "estimate.json").read_text() == before
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert main(["bench", "--steps", "1", "--output", str(tmp_path / "run")]) == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]
    assert main(["bench", "--experiment", str(experiment), "--steps", "1", "--output", str(output), "--overwrite"]) == 0
    # The experiment names its networks: a --teacher beside it would be ignored, so it is refused.
    for ignored in (["--teacher", "D2C3"], ["--repeats", "3"], ["--no-compile"]):
        assert main(["bench", "--experiment", str(experiment), *ignored, "--output", str(tmp_path / "e2")]) == 2, ignored
    assert not (tmp_path / "e2").exists()
