"""The student-friendly teacher of SFT-KD-Recon (Gayathri et al., MIDL 2023, Fig. 2).

A teacher DC-CNN (blocks T1..TN) trained jointly with branches of the student DC-CNN: branch
``j`` (j = 1..N−1) takes the teacher's image after block ``T_j`` (after its data consistency)
and runs student blocks ``S_{j+1}..S_N``, each followed by data consistency. ``S_N`` is shared
by all N−1 branches, ``S_{N−1}`` by N−2, and so on; ``S_1`` belongs to no branch and is not
trained here (its parameters are frozen so the optimiser never touches them).

The student blocks live in a complete student :class:`DCCNN` (``student.blocks.{i}``), so after
training they load by name into a fresh student (``student.blocks.1`` … ``student.blocks.4``).

Example:
    >>> import torch
    >>> sft = StudentFriendlyTeacher(teacher_convs=5, student_convs=3, cascades=5)
    >>> x, k, m = torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.complex64), torch.zeros(8, 8)
    >>> teacher_output, branch_outputs = sft.forward_with_branches(x, k, m)
    >>> len(branch_outputs)
    4
"""

from __future__ import annotations

import torch
from torch import nn

from kdrecon.models.dccnn import DCCNN


class StudentFriendlyTeacher(nn.Module):
    """Teacher DnCm plus student branches; ``forward`` returns the teacher's reconstruction."""

    def __init__(
        self,
        teacher_convs: int = 5,
        student_convs: int = 3,
        cascades: int = 5,
        channels: int = 32,
        residual: bool = False,
        padding: int = 0,
    ) -> None:
        super().__init__()
        if cascades < 2:
            raise ValueError(f"a student-friendly teacher needs at least 2 cascades, got {cascades}")
        self.teacher = DCCNN(teacher_convs, cascades, channels, residual, padding)
        self.student = DCCNN(student_convs, cascades, channels, residual, padding)
        self.student.blocks[0].requires_grad_(False)

    def forward(
        self, zero_filled: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor, branches: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """The teacher's reconstruction, or with ``branches=True`` :meth:`forward_with_branches`."""
        if branches:
            return self.forward_with_branches(zero_filled, kspace, mask)
        return self.teacher(zero_filled, kspace, mask)

    def forward_with_branches(
        self, zero_filled: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Teacher output and the N−1 branch outputs (branch j starts after teacher block j)."""
        image = zero_filled
        branch_outputs = []
        cascades = len(self.teacher.blocks)
        for index, block in enumerate(self.teacher.blocks):
            image = DCCNN.cascade(block, image, kspace, mask)
            if index < cascades - 1:
                branch = image
                for student_block in self.student.blocks[index + 1 :]:
                    branch = DCCNN.cascade(student_block, branch, kspace, mask)
                branch_outputs.append(branch)
        return image, branch_outputs

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained student blocks S2..SN, named as in a plain student :class:`DCCNN`."""
        return {name: tensor for name, tensor in self.student.state_dict().items() if not name.startswith("blocks.0.")}
