"""Initialise a student from the student branches of a student-friendly teacher (SFT-KD).

After the SFT step the student blocks ``S2..SN`` have been trained inside the SFT teacher;
SFT-KD starts distillation from them. ``S1`` was never trained there, so it comes from
elsewhere: its random initialisation (the paper) or a trained baseline student.

Weights are copied **by name** and every tensor the student expects must arrive with the right
shape; anything missing or misshapen is an error. (The public SFT-KD-Recon code loaded by
position with a non-strict load that silently copied nothing.)

Example:
    >>> from kdrecon.models import build_model
    >>> sft = build_model("sft-teacher", teacher="D3C3", student="D2C3", channels=4)
    >>> student = build_model("D2C3", channels=4)
    >>> copied = initialise_from_student_friendly_teacher(student, sft.student_state_dict())
    >>> copied[:2]
    ['blocks.1.layers.0.conv.weight', 'blocks.1.layers.0.conv.bias']
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

FIRST_BLOCK = "blocks.0."


def initialise_from_student_friendly_teacher(
    student: nn.Module,
    branch_state: Mapping[str, torch.Tensor],
    first_block_state: Mapping[str, torch.Tensor] | None = None,
) -> list[str]:
    """Copy ``S2..SN`` from ``branch_state`` and, if given, ``S1`` from ``first_block_state``.

    Args:
        student: a fresh student DC-CNN (its ``S1`` stays as initialised unless
            ``first_block_state`` is given).
        branch_state: :meth:`StudentFriendlyTeacher.student_state_dict` of the trained SFT
            teacher (names as in a plain student, ``blocks.1.*`` … ``blocks.{N-1}.*``).
        first_block_state: a state dict holding ``blocks.0.*`` (e.g. a trained baseline
            student's); other entries are ignored.

    Returns:
        The names of the tensors copied, in the student's order.

    Raises:
        ValueError: if a tensor the student expects is missing or has another shape.
    """
    expected = student.state_dict()
    sources = {name: tensor for name, tensor in branch_state.items() if not name.startswith(FIRST_BLOCK)}
    if first_block_state is not None:
        sources.update({name: t for name, t in first_block_state.items() if name.startswith(FIRST_BLOCK)})
    wanted = [name for name in expected if first_block_state is not None or not name.startswith(FIRST_BLOCK)]
    missing = [name for name in wanted if name not in sources]
    if missing:
        raise ValueError(
            f"student initialisation: {len(missing)} of {len(wanted)} tensors missing from the source "
            f"(first: {missing[0]}); is the student the one the SFT teacher was trained with?"
        )
    for name in wanted:
        if sources[name].shape != expected[name].shape:
            raise ValueError(
                f"student initialisation: {name} is {tuple(sources[name].shape)} in the source but "
                f"{tuple(expected[name].shape)} in the student"
            )
    unexpected = sorted(set(sources) - set(expected))
    if unexpected:
        raise ValueError(f"student initialisation: the source has tensors the student lacks (first: {unexpected[0]})")
    with torch.no_grad():
        for name in wanted:
            expected[name].copy_(sources[name])
    return wanted
