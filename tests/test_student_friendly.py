"""The SFT step's loss (SFT-KD-Recon eqs. 3–5), its presets, and student initialisation from it."""

import numpy as np
import pytest
import torch

from kdrecon.data.dataset import Batch
from kdrecon.distillation.initialisation import initialise_from_student_friendly_teacher
from kdrecon.distillation.student_friendly import StudentFriendlyObjective
from kdrecon.models import build_model
from kdrecon.mri.undersample import undersample
from kdrecon.training.config import ConfigError, TrainConfig, validate


def scaling_block(block, scale):
    """Make a two-convolution CNN block compute ``scale · image`` (for images above −10)."""
    first, last = block.layers[0].conv, block.layers[1]
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.zero_()
        first.weight[0, 0, 1, 1] = 1.0
        first.bias[0] = 10.0  # keeps the ReLU in its linear part
        last.weight[0, 0, 1, 1] = scale
        last.bias[0] = -10.0 * scale


def numpy_data_consistency(image, kspace, mask):
    """Re(ifft2(M·k0 + (1 − M)·fft2(image))) with the ortho, un-centred FFT, in NumPy."""
    merged = mask * kspace + (1 - mask) * np.fft.fft2(image, norm="ortho")
    return np.real(np.fft.ifft2(merged, norm="ortho"))


def test_sft_loss_matches_equations_3_to_5_on_a_known_case(real_slices, cardiac_mask_4x):
    # Every block scales its input by a known factor, so the teacher and both branches can be
    # computed independently with NumPy.
    mask = torch.from_numpy(cardiac_mask_4x).float()
    target = torch.from_numpy(real_slices[:2]).float()
    kspace, zero_filled = undersample(target, mask)
    sft = build_model("sft-teacher", teacher="D2C3", student="D2C3", channels=4)
    teacher_scales, student_scales = (0.9, 1.1, 0.8), (1.0, 1.2, 0.7)
    for block, scale in zip(list(sft.teacher.blocks) + list(sft.student.blocks), teacher_scales + student_scales):
        scaling_block(block, scale)
    batch = Batch(zero_filled.unsqueeze(1), kspace, mask, target.unsqueeze(1))

    weights = (1.0, 2.0, 0.5)
    losses = {k: float(v.detach()) for k, v in StudentFriendlyObjective(sft, *weights).training_losses(batch).items()}

    k, m, x = kspace.numpy().astype(np.complex128), cardiac_mask_4x, real_slices[:2]
    dc = lambda image: numpy_data_consistency(image, k, m)  # noqa: E731
    t1 = dc(0.9 * zero_filled.numpy().astype(np.float64))
    t2 = dc(1.1 * t1)
    teacher = dc(0.8 * t2)
    branches = [dc(0.7 * dc(1.2 * t1)), dc(0.7 * t2)]  # T1→S2→S3 and T1→T2→S3
    expected = {
        "teacher_reconstruction": np.abs(teacher - x).mean(),  # eq. 3
        "branch_reconstruction": np.mean([np.abs(b - x).mean() for b in branches]),  # eq. 4
        "imitation": np.mean([np.abs(b - teacher).mean() for b in branches]),  # eq. 5
    }
    for name, value in expected.items():
        assert losses[name] == pytest.approx(value, rel=1e-4), name
    assert expected["imitation"] > 1e-3  # the case distinguishes the three terms
    total = sum(w * expected[name] for w, name in zip(weights, expected))
    assert losses["total"] == pytest.approx(total, rel=1e-4)


def test_branch_terms_average_over_the_branches(small_train):
    sft = build_model("sft-teacher", teacher="D3C4", student="D2C4", channels=4)
    batch = small_train.batch(torch.arange(3))
    teacher_output, branches = sft.forward_with_branches(batch.zero_filled, batch.kspace, batch.mask)
    losses = {k: v.detach() for k, v in StudentFriendlyObjective(sft).training_losses(batch).items()}
    by_hand = np.mean([np.abs((b - batch.target).detach().numpy()).mean() for b in branches])
    imitation = np.mean([np.abs((b - teacher_output).detach().numpy()).mean() for b in branches])
    assert len(branches) == 3
    assert float(losses["branch_reconstruction"]) == pytest.approx(by_hand, rel=1e-5)
    assert float(losses["imitation"]) == pytest.approx(imitation, rel=1e-5)
    # sft-code weights (1, 1, 0): the imitation term is logged but not trained on.
    assert float(losses["total"]) == pytest.approx(float(losses["teacher_reconstruction"]) + by_hand, rel=1e-5)


def test_presets_and_explicit_weights():
    code = validate(TrainConfig, {"model": {"name": "sft-teacher"}}).sft
    assert (code.preset, code.teacher_weight, code.branch_weight, code.imitation_weight) == ("sft-code", 1, 1, 0)
    paper = validate(TrainConfig, {"model": {"name": "sft-teacher"}, "sft": {"preset": "sft-paper-equations"}}).sft
    assert (paper.teacher_weight, paper.branch_weight, paper.imitation_weight) == (1, 1, 1)
    mixed = validate(TrainConfig, {"model": {"name": "sft-teacher"}, "sft": {"imitation_weight": 0.25}}).sft
    assert (mixed.teacher_weight, mixed.branch_weight, mixed.imitation_weight) == (1, 1, 0.25)
    model = validate(TrainConfig, {"model": {"name": "SFT-Teacher"}}).model
    assert (model.teacher, model.student) == ("D5C5", "D3C5")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"name": "D5C5"}, "sft": {}}, r"^config: sft: only for model sft-teacher"),
        ({"model": {"name": "D5C5", "student": "D3C5"}}, r"^config: model\.student: only for model sft-teacher"),
        ({"model": {"name": "sft-teacher", "student": "D3C4"}}, r"same number of cascades"),
        ({"model": {"name": "sft-teacher"}, "sft": {"preset": "paper"}}, r"^config: sft\.preset: "),
        ({"model": {"name": "sft-teacher"}, "sft": {"imitation_weight": -1}}, r"^config: sft\.imitation_weight: "),
    ],
)
def test_bad_sft_config_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        validate(TrainConfig, data)


def test_initialisation_copies_exactly_the_branch_blocks():
    torch.manual_seed(1)
    sft = build_model("sft-teacher", teacher="D5C5", student="D3C5")
    baseline = build_model("D3C5")
    student = build_model("D3C5")
    untouched_first_block = {k: v.clone() for k, v in student.state_dict().items() if k.startswith("blocks.0.")}

    copied = initialise_from_student_friendly_teacher(student, sft.student_state_dict())

    state, source = student.state_dict(), sft.student.state_dict()
    assert copied == [name for name in state if not name.startswith("blocks.0.")]
    assert len(copied) == 4 * 6  # S2..S5, three convolutions with weight and bias each
    for name in copied:
        assert torch.equal(state[name], source[name]), name
    for name, value in untouched_first_block.items():
        assert torch.equal(state[name], value), name  # S1 keeps its random initialisation

    copied = initialise_from_student_friendly_teacher(student, sft.student_state_dict(), baseline.state_dict())
    assert len(copied) == 5 * 6
    for name, value in baseline.state_dict().items():
        if name.startswith("blocks.0."):
            assert torch.equal(student.state_dict()[name], value), name


def test_initialisation_is_strict():
    sft = build_model("sft-teacher", teacher="D5C5", student="D3C5")
    partial = dict(sft.student_state_dict())
    del partial["blocks.3.layers.1.conv.weight"]
    with pytest.raises(ValueError, match=r"1 of 24 tensors missing .*blocks\.3\.layers\.1\.conv\.weight"):
        initialise_from_student_friendly_teacher(build_model("D3C5"), partial)
    with pytest.raises(ValueError, match=r"is \(16, 1, 3, 3\) in the source but \(32, 1, 3, 3\)"):
        narrow = build_model("sft-teacher", teacher="D5C5", student="D3C5", channels=16)
        initialise_from_student_friendly_teacher(build_model("D3C5"), narrow.student_state_dict())
    with pytest.raises(ValueError, match=r"tensors missing"):
        initialise_from_student_friendly_teacher(build_model("D4C5"), sft.student_state_dict())
