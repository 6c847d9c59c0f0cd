"""The names and roles of an experiment's stages: built by the stage graph, read by the report.

The graph (:mod:`kdrecon.experiment.stages`) names every stage through these functions and gives
it a :class:`Role`; the report finds stages by the same functions and roles, so no other module
spells a stage name or a role.

Example:
    >>> std_kd("at"), sft_kd("at", "D2C5"), other_distillation(sft_kd("at", "D2C5"))
    ('std-kd-at', 'sft-kd-at-D2C5', 'std-kd-at-D2C5')
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a stage is for, in report order; several stages share a role (one per method, variant or
    size). The compression sweep's (Table 8) start with ``sweep``."""

    TEACHER = "teacher"
    SFT_TEACHER = "sft-teacher"
    STUDENT = "student"
    STD_KD = "std-kd"
    SFT_KD = "sft-kd"
    SFT_KD_RANDOM = "sft-kd-random"  # SFT-KD from a randomly initialised student
    KD_MRI = "kd-mri"  # KD-MRI's ablation
    SWEEP = "sweep"  # a baseline student of another size
    SWEEP_SFT_TEACHER = "sweep-sft-teacher"
    SWEEP_STD_KD = "sweep-std-kd"
    SWEEP_SFT_KD = "sweep-sft-kd"


# The main stage of each of these roles is named after its role.
TEACHER, STUDENT, SFT_TEACHER = Role.TEACHER.value, Role.STUDENT.value, Role.SFT_TEACHER.value
_STD_KD, _SFT_KD = "std-kd-", "sft-kd-"


def _with(name: str, suffix: str) -> str:
    return f"{name}-{suffix}" if suffix else name


def std_kd(method: str, suffix: str = "") -> str:
    """The student distilled from the teacher with ``method`` (``suffix``: a variant or student size)."""
    return _with(_STD_KD + method, suffix)


def sft_kd(method: str, suffix: str = "") -> str:
    """The student initialised from and distilled by the SFT teacher with ``method``."""
    return _with(_SFT_KD + method, suffix)


def sft_teacher(suffix: str = "") -> str:
    """The SFT teacher, of a variant (SFT loss) or of another student size."""
    return _with(SFT_TEACHER, suffix)


def student(size: str = "") -> str:
    """The baseline student, or the baseline of another student size (compression sweep)."""
    return _with(STUDENT, size)


def is_sft_kd(name: str) -> bool:
    return name.startswith(_SFT_KD)


def other_distillation(name: str) -> str:
    """The Std-KD stage an SFT-KD stage is compared with (same method and suffix), and back."""
    if is_sft_kd(name):
        return _STD_KD + name.removeprefix(_SFT_KD)
    return _SFT_KD + name.removeprefix(_STD_KD)
