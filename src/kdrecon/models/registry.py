"""Build models from a name and options, as stored in configs and checkpoints."""

from __future__ import annotations

from typing import Any

from torch import nn

from kdrecon.models.dccnn import DCCNN, parse_dncm
from kdrecon.models.sft import StudentFriendlyTeacher

SFT_TEACHER = "sft-teacher"


def build_model(name: str, **options: Any) -> nn.Module:
    """Build a reconstruction network by name.

    ``DnCm`` (e.g. ``D5C5`` teacher, ``D3C5`` student) builds a :class:`DCCNN` with ``n``
    convolutions per block and ``m`` cascades; ``options`` go to its constructor
    (``channels``, ``residual``, ``padding``). ``sft-teacher`` builds a
    :class:`StudentFriendlyTeacher` from ``teacher`` and ``student`` DnCm names plus the same
    options.
    """
    if name == SFT_TEACHER:
        teacher, student = options.pop("teacher", "D5C5"), options.pop("student", "D3C5")
        (teacher_convs, cascades), (student_convs, student_cascades) = _dncm(teacher), _dncm(student)
        if cascades != student_cascades:
            raise ValueError(f"sft-teacher: teacher {teacher} and student {student} need the same number of cascades")
        return StudentFriendlyTeacher(teacher_convs, student_convs, cascades, **options)
    shape = parse_dncm(name)
    if shape is not None:
        convs, cascades = shape
        return DCCNN(convs_per_block=convs, cascades=cascades, **options)
    raise ValueError(f"model {name!r}: expected DnCm such as D5C5 or D3C5, or {SFT_TEACHER}")


def _dncm(name: str) -> tuple[int, int]:
    shape = parse_dncm(name)
    if shape is None:
        raise ValueError(f"model {name!r}: expected DnCm such as D5C5 or D3C5")
    return shape


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
