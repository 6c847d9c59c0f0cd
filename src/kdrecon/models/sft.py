"""The student-friendly teacher of SFT-KD-Recon (Gayathri et al., MIDL 2023, Fig. 2).

A teacher cascade network (blocks T1..TN: a DC-CNN in the paper, a DC-UNet in its Table 6)
trained jointly with branches of the student: branch ``j`` (j = 1..N−1) takes the teacher's
image after block ``T_j`` (after its data consistency) and runs student blocks
``S_{j+1}..S_N``, each followed by data consistency. ``S_N`` is shared by all N−1 branches,
``S_{N−1}`` by N−2, and so on; ``S_1`` belongs to no branch and is not trained here (its
parameters are frozen so the optimiser never touches them). Blocks pair one to one, so any
two cascade networks with the same number of cascades can be teacher and student.

The student blocks live in a complete student network (``student.blocks.{i}``), so after
training they load by name into a fresh student (``student.blocks.1`` … ``student.blocks.4``).

Example:
    >>> import torch
    >>> from kdrecon.models.dccnn import DCCNN
    >>> sft = StudentFriendlyTeacher(DCCNN(convs_per_block=5), DCCNN(convs_per_block=3))
    >>> x, k, m = torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.complex64), torch.zeros(8, 8)
    >>> teacher_output, branch_outputs = sft.forward_with_branches(x, k, m)
    >>> len(branch_outputs)
    4
"""

from __future__ import annotations

import torch
from torch import nn

from kdrecon.models.cascade import CascadeNetwork


class StudentFriendlyTeacher(nn.Module):
    """Teacher plus student branches; ``forward`` returns the teacher's reconstruction.

    Args:
        teacher: the teacher network (any :class:`CascadeNetwork`).
        student: a complete student network with as many cascades; its first block is frozen.
    """

    def __init__(self, teacher: CascadeNetwork, student: CascadeNetwork) -> None:
        super().__init__()
        if teacher.cascades != student.cascades:
            raise ValueError(
                f"a student-friendly teacher pairs blocks one to one: the teacher has {teacher.cascades} "
                f"cascades, the student {student.cascades}"
            )
        if teacher.state_kind != student.state_kind:
            raise ValueError(
                f"a student-friendly teacher passes the teacher's {teacher.state_kind} to student blocks that "
                f"take {student.state_kind}"
            )
        if teacher.cascades < 2:
            raise ValueError(f"a student-friendly teacher needs at least 2 cascades, got {teacher.cascades}")
        self.teacher = teacher
        self.student = student
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
        consistency = self.teacher.consistency_for(kspace, mask)  # one operator for every block
        state = zero_filled
        branch_outputs = []
        cascades = self.teacher.cascades
        for index in range(cascades):
            state = self.teacher.step(index, state, zero_filled, consistency)
            if index < cascades - 1:
                branch = state
                for student_index in range(index + 1, cascades):
                    branch = self.student.step(student_index, branch, zero_filled, consistency)
                branch_outputs.append(branch)
        return state, branch_outputs

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained student blocks S2..SN, named as in a plain student network."""
        return {name: tensor for name, tensor in self.student.state_dict().items() if not name.startswith("blocks.0.")}
