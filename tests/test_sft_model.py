"""The student-friendly teacher's branch structure (SFT-KD-Recon Fig. 2)."""

import torch

from kdrecon.models import build_model
from kdrecon.mri.undersample import data_consistency, undersample


def inputs(real_slices, cardiac_mask_4x):
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, zero_filled = undersample(torch.from_numpy(real_slices[:2]).float(), mask)
    return zero_filled.unsqueeze(1), kspace, mask


def test_branches_share_student_blocks_as_in_the_paper(real_slices, cardiac_mask_4x):
    sft = build_model("sft-teacher", teacher="D5C5", student="D3C5")
    calls = [0] * 5
    for index, block in enumerate(sft.student.blocks):
        block.register_forward_hook(lambda m, i, o, index=index: calls.__setitem__(index, calls[index] + 1))
    teacher_output, branches = sft.forward_with_branches(*inputs(real_slices, cardiac_mask_4x))
    assert len(branches) == 4
    assert calls == [0, 1, 2, 3, 4]  # S1 unused, S5 used by all four branches
    torch.testing.assert_close(teacher_output, sft(*inputs(real_slices, cardiac_mask_4x)))


def test_branch_equals_teacher_prefix_then_student_suffix(real_slices, cardiac_mask_4x):
    torch.manual_seed(0)
    sft = build_model("sft-teacher")
    zero_filled, kspace, mask = inputs(real_slices, cardiac_mask_4x)
    _, branches = sft.forward_with_branches(zero_filled, kspace, mask)
    for j in range(1, 5):  # branch j: teacher blocks T1..Tj, then student blocks S(j+1)..S5
        image = zero_filled
        for block in list(sft.teacher.blocks[:j]) + list(sft.student.blocks[j:]):
            image = data_consistency(block(image), kspace, mask)
        torch.testing.assert_close(branches[j - 1], image)


def test_first_student_block_gets_no_gradient(real_slices, cardiac_mask_4x):
    sft = build_model("sft-teacher")
    teacher_output, branches = sft.forward_with_branches(*inputs(real_slices, cardiac_mask_4x))
    (teacher_output.abs().mean() + sum(b.abs().mean() for b in branches)).backward()
    assert all(p.grad is None and not p.requires_grad for p in sft.student.blocks[0].parameters())
    assert all(p.grad is not None for p in sft.student.blocks[1].parameters())
    assert all(p.grad is not None for p in sft.teacher.parameters())


def test_student_state_dict_names_match_a_plain_student():
    sft = build_model("sft-teacher")
    student = build_model("D3C5")
    names = set(sft.student_state_dict())
    assert names == {n for n in student.state_dict() if not n.startswith("blocks.0.")}
