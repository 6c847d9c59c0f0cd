"""The interface every feature-distillation loss implements (one KD method per module).

A :class:`FeatureLoss` compares *paired* hidden features of a student and a teacher network:
``student_features[i]`` is matched with ``teacher_features[i]``. Each feature is a 4-D tensor
``(B, C, H, W)``; for DC-CNN these are the post-ReLU outputs tapped at ``blocks.{i}.layers.{j}``
(``(B, 32, H, W)``). The constructor receives the channel count of every paired layer so that a
method can build its *connectors* (learned adapters such as FitNets' regressors) up front; the
optimiser must then be given ``loss.parameters()`` along with the student's.

Conventions shared by all methods:

- ``forward`` validates the inputs (equal list lengths, 4-D tensors, declared channel counts,
  equal batch size and, unless the method allows otherwise, equal spatial size within a pair) and
  raises :class:`ValueError` with one clear line when they do not fit; then it returns a scalar.
- The returned value is the *unweighted* loss. ``default_weight`` is the published β that the
  training objective multiplies it by (see each method's docstring for its source).
- Teacher features are used as given: the distiller produces them under ``torch.no_grad()``
  (frozen teacher), and no method needs gradients through them.
- ``connector_parameter_count()`` is the number of parameters the method adds (all of its own
  parameters, which are all trainable); 0 for methods without connectors.

Example:
    >>> import torch
    >>> from kdrecon.distillation.losses import build_feature_loss
    >>> loss = build_feature_loss("at", [32], [32])
    >>> s, t = torch.rand(2, 32, 8, 8), torch.rand(2, 32, 8, 8)
    >>> loss([s], [t]).shape
    torch.Size([])
    >>> loss([s], [t, t])
    Traceback (most recent call last):
    ...
    ValueError: at: got 1 student and 2 teacher features; they must pair up one to one
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn


class FeatureLoss(nn.Module):
    """Base class of the feature-distillation losses.

    Args:
        student_channels: channel count of each student feature, in pairing order.
        teacher_channels: channel count of each teacher feature, same length.
        **options: method-specific options; subclasses consume theirs by keyword and pass the
            rest here, where any leftover is rejected with :class:`ValueError`.

    Subclasses set ``name``, ``label`` and ``default_weight`` and implement :meth:`compute`, which receives
    validated lists of tensors.
    """

    name: ClassVar[str] = "feature-loss"
    #: how reports and tables name the method
    label: ClassVar[str] = "feature loss"
    default_weight: ClassVar[float] = 1.0
    #: whether the features of a pair must share (H, W); methods that flatten or pool each
    #: feature to a vector (SP, PKT, CC) do not need it.
    requires_equal_spatial_size: ClassVar[bool] = True
    #: consecutive layers per network that one comparison takes (FSP's flow between two layers: 2)
    layers_per_pair: ClassVar[int] = 1
    #: whether the loss takes features in the precision the networks ran in (bf16 under
    #: autocast) and does its own float32 arithmetic where it matters (AT's channel sums); the
    #: distiller hands every other method float32 copies
    takes_low_precision_features: ClassVar[bool] = False

    def __init__(
        self, student_channels: Sequence[int], teacher_channels: Sequence[int], **options: Any
    ) -> None:
        super().__init__()
        if options:
            raise ValueError(f"{self.name}: unknown option(s) {sorted(options)}")
        student = _channel_list(self.name, "student_channels", student_channels)
        teacher = _channel_list(self.name, "teacher_channels", teacher_channels)
        if len(student) != len(teacher):
            raise ValueError(
                f"{self.name}: {len(student)} student and {len(teacher)} teacher channel counts; "
                "they must pair up one to one"
            )
        self.student_channels: tuple[int, ...] = student
        self.teacher_channels: tuple[int, ...] = teacher

    def forward(
        self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor], *, summarised: bool = False
    ) -> Tensor:
        """The loss; with ``summarised``, ``teacher_features`` are :meth:`teacher_summary`'s output."""
        if summarised:
            student = self.validate_side(student_features, "student")
            teacher = list(teacher_features)
            if len(student) != len(teacher):
                raise ValueError(f"{self.name}: got {len(student)} student features and {len(teacher)} teacher summaries")
            return self.compute_summarised(student, teacher)
        student, teacher = self.validate(student_features, teacher_features)
        return self.compute(student, teacher)

    def compute(self, student: list[Tensor], teacher: list[Tensor]) -> Tensor:
        """The loss on validated features; implemented by each method."""
        raise NotImplementedError

    def teacher_summary(self, teacher_features: Sequence[Tensor]) -> list[Tensor] | None:
        """What :meth:`compute` uses of the frozen teacher's features, computed once ahead, or None.

        A method whose loss reads the teacher's features only through a per-slice reduction (AT's
        attention maps: one value per pixel instead of one per channel and pixel) returns that
        reduction here, with the batch axis first and each slice's entry depending on that slice
        alone, and implements :meth:`compute_summarised`. The distiller then caches these
        summaries instead of the features: a fraction of the memory, and no per-step work on the
        teacher's side. ``None`` (the default): the method needs the features themselves.
        """
        return None

    def compute_summarised(self, student: list[Tensor], teacher_summaries: list[Tensor]) -> Tensor:
        """The same loss as :meth:`compute`, from the teacher's :meth:`teacher_summary`."""
        raise NotImplementedError(f"{self.name} has no teacher summary")

    #: epochs of a preparatory step on the teacher's features alone, run before distillation
    #: (:mod:`kdrecon.distillation.preparation`); 0 for methods without one
    preparation_epochs: int = 0

    def preparation_loss(self, teacher_features: Sequence[Tensor]) -> Tensor:
        """The loss the preparatory step minimises over :meth:`preparation_parameters`."""
        raise NotImplementedError(f"{self.name} has no preparatory step")

    def preparation_parameters(self) -> list[nn.Parameter]:
        return []

    def finish_preparation(self) -> None:
        """Called once the preparatory step is done (or restored on resume), e.g. to freeze its part."""

    def connector_parameter_count(self) -> int:
        """Number of parameters this method adds to training (0 without connectors)."""
        return sum(p.numel() for p in self.parameters())

    def validate(
        self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Check the feature lists against each other and the declared channels."""
        name = self.name
        if isinstance(student_features, Tensor) or isinstance(teacher_features, Tensor):
            raise ValueError(f"{name}: features must be given as sequences of tensors, one per layer")
        student, teacher = list(student_features), list(teacher_features)
        if len(student) != len(teacher):
            raise ValueError(
                f"{name}: got {len(student)} student and {len(teacher)} teacher features; "
                "they must pair up one to one"
            )
        self.validate_side(student, "student")
        self.validate_side(teacher, "teacher")
        for i, (s, t) in enumerate(zip(student, teacher)):
            if s.shape[0] != t.shape[0]:
                raise ValueError(
                    f"{name}: pair {i} has batch sizes {s.shape[0]} (student) and {t.shape[0]} (teacher)"
                )
            if self.requires_equal_spatial_size and s.shape[2:] != t.shape[2:]:
                raise ValueError(
                    f"{name}: pair {i} has spatial sizes {tuple(s.shape[2:])} (student) and "
                    f"{tuple(t.shape[2:])} (teacher); they must be equal"
                )
        return student, teacher

    def validate_side(self, features: Sequence[Tensor], role: str) -> list[Tensor]:
        """Check one network's features (``role``: "student" or "teacher") against its channels."""
        name = self.name
        if isinstance(features, Tensor):
            raise ValueError(f"{name}: {role} features must be a sequence of tensors, one per layer")
        features = list(features)
        declared = self.student_channels if role == "student" else self.teacher_channels
        if len(features) != len(declared):
            raise ValueError(f"{name}: got {len(features)} {role} features, built for {len(declared)}")
        for i, (f, channels) in enumerate(zip(features, declared)):
            if not isinstance(f, Tensor) or f.dim() != 4:
                shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                raise ValueError(f"{name}: {role} feature {i} must be (B, C, H, W), got {shape}")
            if f.shape[1] != channels:
                raise ValueError(f"{name}: {role} feature {i} has {f.shape[1]} channels, built for {channels}")
        return features

    def extra_repr(self) -> str:
        return f"student_channels={list(self.student_channels)}, teacher_channels={list(self.teacher_channels)}"


def _channel_list(name: str, what: str, channels: Sequence[int]) -> tuple[int, ...]:
    if isinstance(channels, (int, str)) or not isinstance(channels, Sequence):
        raise ValueError(f"{name}: {what} must be a sequence of channel counts, got {channels!r}")
    values = tuple(int(c) for c in channels)
    if not values:
        raise ValueError(f"{name}: {what} is empty; at least one layer pair is needed")
    if any(c <= 0 for c in values):
        raise ValueError(f"{name}: {what} must be positive, got {list(values)}")
    return values
