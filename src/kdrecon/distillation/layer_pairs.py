"""Which teacher and student layers a feature loss compares, by default.

Cascade networks pair block by block: cascade ``i`` of the teacher with cascade ``i`` of the
student, each represented by the layer its family names
(:meth:`~kdrecon.models.cascade.CascadeNetwork.feature_layers`). For the papers' pair that is
the 3rd convolution of every D5C5 cascade with the 2nd of the D3C5's (``blocks.{i}.layers.2`` ↔
``blocks.{i}.layers.1``, spec §4), the middle hidden layer of each block; a DC-UNet teacher
offers its last full-resolution decoder layer, so the maps compared have the student's
resolution. A method that compares the *flow* between k layers of one network (FSP,
``layers_per_pair = 2``) takes the k layers ending at that one in every cascade. A cascade
where either network offers no layer (VDSR's last block, which passes no features on) is left out.

Any other pairing is configuration (``layers`` in a distillation config): module paths, tapped
with forward hooks, so a model need not be edited to be distilled.

Example:
    >>> from kdrecon.models import build_model
    >>> teacher, student = build_model("D5C5"), build_model("D3C5")
    >>> pairs = default_layer_pairs("at", teacher, student)
    >>> pairs.teacher[0], pairs.student[0], len(pairs.teacher)
    ('blocks.0.layers.2', 'blocks.0.layers.1', 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from kdrecon.distillation.losses import FEATURE_LOSSES
from kdrecon.models.cascade import CascadeNetwork


@dataclass(frozen=True)
class LayerPairs:
    """Module paths whose outputs a feature loss compares, ``teacher[i]`` with ``student[i]`` (named
    fields: the two lists are easily swapped, and losses take the student's first)."""

    teacher: list[str] = field(default_factory=list)
    student: list[str] = field(default_factory=list)


def default_layer_pairs(method: str, teacher: nn.Module, student: nn.Module) -> LayerPairs:
    """The default pairs: one layer (or the method's ``layers_per_pair``) per cascade of each network."""
    if not isinstance(teacher, CascadeNetwork) or not isinstance(student, CascadeNetwork):
        raise ValueError(
            f"no default layer pairs for {type(teacher).__name__} → {type(student).__name__}; "
            "give 'layers' (teacher and student module paths) in the config"
        )
    if teacher.cascades != student.cascades:
        raise ValueError(
            f"default layer pairs need as many teacher as student cascades ({teacher.cascades} vs "
            f"{student.cascades}); give 'layers' in the config"
        )
    layers = FEATURE_LOSSES[method].layers_per_pair if method in FEATURE_LOSSES else 1
    pairs = LayerPairs()
    for cascade in range(teacher.cascades):
        teacher_layers = _block_layers("teacher", teacher, cascade, method, layers)
        student_layers = _block_layers("student", student, cascade, method, layers)
        if teacher_layers and student_layers:  # a block that passes no features on (VDSR's last) pairs with none
            pairs.teacher.extend(teacher_layers)
            pairs.student.extend(student_layers)
    return pairs


def _block_layers(role: str, network: CascadeNetwork, cascade: int, method: str, layers: int) -> list[str]:
    try:
        return network.feature_layers(cascade, layers)
    except ValueError as error:
        raise ValueError(f"{method} takes {layers} layers per block, and the {role} has too few ({error}); give 'layers' in the config") from None


def feature_channels(model: nn.Module, paths: list[str]) -> list[int]:
    """The width of the features at each path (what a feature loss is built for): the module's declared
    ``out_channels``, else that of the last convolution inside it."""
    modules = dict(model.named_modules())
    channels = []
    for path in paths:
        module = modules.get(path)
        if module is None:
            raise ValueError(f"no module {path!r} in {type(model).__name__}")
        if isinstance(getattr(module, "out_channels", None), int):  # a convolution, or a tap that declares it
            channels.append(module.out_channels)
            continue
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(f"{path!r} in {type(model).__name__} has no convolution to take the width from")
        channels.append(convs[-1].out_channels)
    return channels
