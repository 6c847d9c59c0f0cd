"""The one registry of model families: build, validate and describe networks by name.

A model name carries its family and shape (``D5C5``: DC-CNN, 5 convolutions per block, 5
cascades; ``U2C5``: DC-UNet with 2 down-samplings, 5 cascades; ``R25B5``: residual CNN of 25
convolutions in 5 blocks; ``VDSR12B4``: super-resolution VDSR of 12 convolutions in 4 blocks).
``sft-teacher`` is the
student-friendly teacher built from a ``teacher`` and a ``student`` name of any families with
the same number of cascades.

Adding a family: write its module with a :class:`~kdrecon.models.cascade.CascadeNetwork` and a
``FAMILY`` declaration, and add that ``FAMILY`` to :data:`MODEL_FAMILIES` below.

Example:
    >>> canonical_model_name("d3c5"), family_of("U2C5").name
    ('D3C5', 'DC-UNet')
    >>> count_parameters(build_model("D3C5"))
    49285
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn

from kdrecon.models import dc_unet, dccnn, residual_cnn, vdsr
from kdrecon.models.cascade import CascadeNetwork
from kdrecon.models.family import ModelFamily
from kdrecon.models.sft import StudentFriendlyTeacher

#: Every model family kdrecon can build, by name.
MODEL_FAMILIES: dict[str, ModelFamily] = {
    family.name: family for family in (dccnn.FAMILY, dc_unet.FAMILY, residual_cnn.FAMILY, vdsr.FAMILY)
}
#: The student-friendly teacher, built from a teacher and a student name.
SFT_TEACHER = "sft-teacher"
#: The papers' pair, every default teacher and student.
DEFAULT_TEACHER, DEFAULT_STUDENT = "D5C5", "D3C5"


def model_name_help() -> str:
    """The accepted names for messages and ``--help``: ``D5C5 (DC-CNN) or U2C5 (DC-UNet)``."""
    return " or ".join(f"{family.example} ({family.name})" for family in MODEL_FAMILIES.values())


def family_of(name: str) -> ModelFamily:
    """The family whose names ``name`` matches; an unknown name is an error listing the families."""
    for family in MODEL_FAMILIES.values():
        if family.parse(name) is not None:
            return family
    raise ValueError(f"unknown model {name!r}: expected a name such as {model_name_help()}")


#: The largest number a model name may carry (convolutions, cascades, levels): beyond any
#: network of the papers, and small enough to build in a moment.
MAX_SHAPE_NUMBER = 100


def canonical_model_name(name: str) -> str:
    """``name`` as stored in configs and checkpoints (upper case); raises for a name that is
    unknown or whose network cannot be built (``D0C5``: a block needs two convolutions).

    The network is built on PyTorch's ``meta`` device: its constructor's checks run, nothing is allocated.
    """
    return _checked_name(name)


@functools.lru_cache(maxsize=None)
def _checked_name(name: str) -> str:
    family = family_of(name)
    shape = family.parse(name)
    if max(shape.values()) > MAX_SHAPE_NUMBER:
        raise ValueError(f"model {name}: numbers in a model name go up to {MAX_SHAPE_NUMBER}")
    if shape[family.blocks_group] < 1:
        raise ValueError(f"model {name}: needs at least one of its {family.blocks_group}")
    try:
        with torch.device("meta"):
            family.create(name)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"model {name}: {error}") from None
    return name.upper()


def cascades_of(name: str) -> int:
    """The number of cascades (blocks) of the network ``name``, without building it."""
    family = family_of(name)
    return family.parse(name)[family.blocks_group]


def state_kind_of(name: str) -> str:
    """What the blocks of network ``name`` pass on (``image`` or ``features``); SFT pairs only equal kinds."""
    return family_of(name).build.state_kind


def default_channels_of(name: str) -> int:
    """The width network ``name`` is built with when none is given (its constructor's default)."""
    return inspect.signature(family_of(name).build).parameters["channels"].default


def build_model(name: str, **options: Any) -> nn.Module:
    """Build a network by name; ``options`` go to its family's constructor.

    ``sft-teacher`` takes ``teacher`` and ``student`` names (default D5C5 and D3C5); each of the
    two networks receives the options its family has.
    """
    if name == SFT_TEACHER:
        teacher = options.pop("teacher", DEFAULT_TEACHER)
        student = options.pop("student", DEFAULT_STUDENT)
        return StudentFriendlyTeacher(_build_part(teacher, options), _build_part(student, options))
    return family_of(name).create(name, **options)


def _build_part(name: str, options: dict[str, Any]) -> CascadeNetwork:
    family = family_of(name)
    return family.create(name, **{key: value for key, value in options.items() if key in family.options})


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
