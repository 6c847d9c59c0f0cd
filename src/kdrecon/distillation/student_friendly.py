"""The SFT step of SFT-KD-Recon: the teacher trained jointly with branches of the student.

With ``x`` the target, ``x_T`` the teacher's reconstruction and ``x_S,j`` the output of branch
``j`` (teacher blocks ``T1..Tj`` followed by student blocks ``S(j+1)..SN``, j = 1..N−1), the
loss of eqs. 3–5 (Gayathri et al., MIDL 2023) with a weight per term is::

    L = w_T · L1(x_T, x) + w_S · (1/(N−1)) Σ_j L1(x_S,j, x) + w_I · (1/(N−1)) Σ_j L1(x_S,j, x_T)

where L1 is the mean absolute difference. The imitation term lets gradients reach both the
teacher and the branches, as in the equation. The paper prints ``w_T = w_S = w_I = 1``; the
public code divided the imitation term by the element count a second time, so it effectively
trained with ``w_I ≈ 0`` (spec §4). The checkpoint is selected on the teacher's validation L1.

Example:
    >>> import torch
    >>> from kdrecon.models import build_model
    >>> from kdrecon.data.dataset import Batch
    >>> sft = build_model("sft-teacher", teacher="D3C2", student="D2C2", channels=4)
    >>> batch = Batch(torch.rand(2, 1, 8, 8), torch.zeros(2, 8, 8, dtype=torch.complex64),
    ...               torch.zeros(8, 8), torch.rand(2, 1, 8, 8))
    >>> sorted(StudentFriendlyObjective(sft).training_losses(batch))
    ['branch_reconstruction', 'imitation', 'teacher_reconstruction', 'total']
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from kdrecon.data.dataset import Batch
from kdrecon.models.sft import StudentFriendlyTeacher


class StudentFriendlyObjective:
    """Objective for :func:`kdrecon.training.trainer.fit` that trains a :class:`StudentFriendlyTeacher`."""

    def __init__(
        self,
        model: StudentFriendlyTeacher,
        teacher_weight: float = 1.0,
        branch_weight: float = 1.0,
        imitation_weight: float = 0.0,
    ) -> None:
        if not isinstance(model, StudentFriendlyTeacher):
            raise ValueError(f"the SFT step needs a StudentFriendlyTeacher, got {type(model).__name__}")
        self.model = model
        self.network: nn.Module = model  # what is called: the model, or its DistributedDataParallel wrapper
        self.teacher_weight = teacher_weight
        self.branch_weight = branch_weight
        self.imitation_weight = imitation_weight

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.network = wrap(self.model)

    def training_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        teacher_output, branch_outputs = self.network(batch.zero_filled, batch.kspace, batch.mask, branches=True)
        losses = {
            "teacher_reconstruction": F.l1_loss(teacher_output, batch.target),
            "branch_reconstruction": torch.stack([F.l1_loss(b, batch.target) for b in branch_outputs]).mean(),
            "imitation": torch.stack([F.l1_loss(b, teacher_output) for b in branch_outputs]).mean(),
        }
        losses["total"] = (
            self.teacher_weight * losses["teacher_reconstruction"]
            + self.branch_weight * losses["branch_reconstruction"]
            + self.imitation_weight * losses["imitation"]
        )
        return losses

    def validation_loss(self, batch: Batch) -> torch.Tensor:
        """The teacher's L1 to the target: the SFT teacher is chosen as a teacher."""
        return F.l1_loss(self.network(batch.zero_filled, batch.kspace, batch.mask), batch.target)
