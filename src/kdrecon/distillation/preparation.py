"""The preparatory step of a feature loss that has one, run before the student learns.

Factor transfer trains its paraphraser, an autoencoder of the teacher's features, before
distillation (Kim et al. 2018). Without this step its teacher factors come from a random
network. :func:`prepare_feature_loss` runs any method's step the same way: the frozen teacher
on the training slices, its features at the paired layers, ``preparation_epochs`` epochs of
Adam on :meth:`~kdrecon.distillation.losses.base.FeatureLoss.preparation_loss` over
:meth:`~kdrecon.distillation.losses.base.FeatureLoss.preparation_parameters` only.
"""

from __future__ import annotations

import torch
from torch import nn

from kdrecon.data.dataset import SliceData
from kdrecon.distillation.hooks import FeatureTap
from kdrecon.distillation.losses.base import FeatureLoss


def prepare_feature_loss(
    loss: FeatureLoss,
    teacher: nn.Module,
    teacher_layers: list[str],
    data: SliceData,
    batch_size: int,
    seed: int,
    learning_rate: float = 1e-3,
) -> list[float]:
    """Run ``loss``'s preparatory step; returns the mean preparation loss of each epoch.

    ``teacher`` and ``data`` must be on the same device; the teacher is left unchanged.
    """
    if loss.preparation_epochs == 0:
        return []
    parameters = loss.preparation_parameters()
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    tap = FeatureTap(teacher, teacher_layers)
    teacher.eval()
    history = []
    try:
        for _ in range(loss.preparation_epochs):
            total, batches = 0.0, 0
            for batch in data.batches(batch_size, generator):
                with torch.no_grad():
                    teacher(batch.zero_filled, batch.kspace, batch.mask)
                value = loss.preparation_loss(tap.features())
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                total, batches = total + value.item(), batches + 1
            history.append(total / batches)
    finally:
        tap.remove()
    return history
