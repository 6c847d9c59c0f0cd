"""How a device trains fastest: its precision (bf16 or float32) and memory layout; and the
precision a trained network then runs in (:func:`inference_precision`).

``precision: auto`` and ``channels_last: auto`` in a config resolve here. On a GPU the answer is
fixed: channels-last (cuDNN's preferred layout), and bf16 where the GPU supports it and the network
runs compiled, else float32. At the papers' sizes an eager step on a GPU is bound by launching its
many small kernels, and autocast's casts add more: bf16 was slower than float32 eagerly and faster
compiled into CUDA graphs, for every stage kind at the papers' batch of four (one H200, figures in
``docs/benchmarks.md``). On a CPU the
answer depends on the processor in ways its flags do not tell, so it is **measured**, once per
process, by :func:`cpu_training_path` (or adopted from an earlier process: :func:`adopted_cpu_path`):

* where oneDNN emulates bf16 (no AVX-512 BF16), bf16 is many times slower than float32 and is
  never a candidate (:func:`native_bf16`);
* where bf16 is native it was much faster than float32 on one AVX-512 CPU and much slower on
  another;
* float32 training ran faster in NCHW on an AVX2 CPU and faster in channels-last on an
  AVX-512 one (the figures are in ``docs/benchmarks.md``).

The measurement times small training steps in each candidate path, alternating call by call,
and keeps the faster median; it takes under a second. bf16 always runs channels-last (oneDNN's
bf16 kernels want it).

Example:
    >>> import torch
    >>> resolve_precision("fp32", torch.device("cpu")), resolve_channels_last(True, torch.device("cpu"), "fp32")
    ('fp32', True)
    >>> resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    True
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from kdrecon.models import build_model
from kdrecon.models.dccnn import use_depthwise_forms
from kdrecon.mri.undersample import undersample
from kdrecon.training.config import AS_TRAINED, INFERENCE_PRECISIONS
from kdrecon.training.timing import interleaved_median_seconds

#: The ``channels_last`` setting that picks the layout per device and precision.
AUTO_LAYOUT = "auto"
#: The ``precision`` setting that picks the precision per device.
AUTO_PRECISION = "auto"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 convolutions natively: a CUDA GPU with bf16 support, or a CPU
    with the AVX-512 subsets (BW, VL, DQ, BF16) that oneDNN's bf16 kernels need (AMX included).
    Elsewhere bf16 is emulated and far slower than float32 (docs/benchmarks.md). Native is not
    the same as faster: :func:`cpu_training_path` measures that."""
    if device.type == "cuda":  # Ampere and later; torch's own check counts emulation as support
        return torch.cuda.get_device_capability(device) >= (8, 0)
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


@dataclass(frozen=True)
class CpuTrainingPath:
    """What the measurement chose: the precision, and the layout float32 trains fastest in."""

    precision: str
    float32_channels_last: bool
    #: Median seconds of each timed step (see :func:`cpu_training_path`), for the record.
    seconds: dict[str, float]


def _convolution_step(precision: str) -> Callable[[], None]:
    """Forward and backward of one channels-last 32→32 3×3 convolution on a batch of four 32×128×128
    inputs (a training batch: with one, a fresh process once timed bf16 slower than float32), the
    input already in ``precision`` (as a hidden layer's is in training: under autocast the layer
    before hands it over in bf16; a cast per step here would charge bf16 for work training does not do)."""
    generator = torch.Generator().manual_seed(0)
    convolution = nn.Conv2d(32, 32, 3, padding=1).to(memory_format=torch.channels_last)
    features = torch.rand(4, 32, 128, 128, generator=generator).contiguous(memory_format=torch.channels_last)
    if precision == "bf16":
        features = features.to(torch.bfloat16)
    features.requires_grad_(True)

    def step() -> None:
        convolution.zero_grad(set_to_none=True)
        features.grad = None
        with autocast(torch.device("cpu"), precision):
            output = convolution(features)
        output.float().sum().backward()

    return step


def _cascade_step(channels_last: bool) -> Callable[[], None]:
    """A float32 training step (forward, L1, backward) of one D5 cascade with data consistency on
    one 128×128 image, in the given layout."""
    generator = torch.Generator().manual_seed(0)
    network = use_depthwise_forms(build_model("D5C1"), True)
    if channels_last:
        network.to(memory_format=torch.channels_last)
    target = torch.rand(1, 1, 128, 128, generator=generator)
    mask = torch.zeros(128, 128)
    mask[::4] = 1
    kspace, zero_filled = undersample(target, mask)

    def step() -> None:
        network.zero_grad(set_to_none=True)
        nn.functional.l1_loss(network(zero_filled, kspace[:, 0], mask), target).backward()

    return step


@functools.lru_cache(maxsize=None)
def cpu_training_path(rounds: int = 9) -> CpuTrainingPath:
    """Measure which precision and float32 layout train fastest on this CPU (once per process).

    The precision is decided on the networks' hot loop, a 32→32 convolution forward and backward
    in channels-last (bf16 only where :func:`native_bf16`); the float32 layout on a whole D5
    cascade step, where the thin convolutions, ReLUs and data consistency also differ by layout.
    """
    steps = {f"{precision} convolution": _convolution_step(precision)
             for precision in (("fp32", "bf16") if native_bf16(torch.device("cpu")) else ("fp32",))}
    steps |= {"fp32 cascade nchw": _cascade_step(False), "fp32 cascade channels-last": _cascade_step(True)}
    seconds = interleaved_median_seconds(steps, torch.device("cpu"), rounds, warmup=3)
    faster_bf16 = seconds.get("bf16 convolution", math.inf) < seconds["fp32 convolution"]
    return CpuTrainingPath(
        precision="bf16" if faster_bf16 else "fp32",
        float32_channels_last=seconds["fp32 cascade channels-last"] < seconds["fp32 cascade nchw"],
        seconds=seconds,
    )


class EmulatedPrecisionWarning(UserWarning):
    """bf16 was asked for on a device that only emulates it."""


def warn_if_emulated(precision: str, device: torch.device) -> None:
    """Say so when a network is about to run in bf16 where ``device`` only emulates it, many times
    slower than float32: allowed (the numbers are the same), but not silently. Shown once per
    process (one warning location)."""
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(f"precision bf16 on this {device.type}: bf16 is emulated here, many times slower than fp32",
                      EmulatedPrecisionWarning, stacklevel=1)


#: A path measured by an earlier process and adopted by this one (:func:`adopted_cpu_path`).
_ADOPTED: list[CpuTrainingPath] = []


def current_cpu_path() -> CpuTrainingPath:
    """How ``auto`` resolves on a CPU here: the adopted path if there is one (:func:`adopted_cpu_path`),
    else this process's measurement (:func:`cpu_training_path`)."""
    return _ADOPTED[-1] if _ADOPTED else cpu_training_path()


@contextlib.contextmanager
def adopted_cpu_path(path: CpuTrainingPath) -> Iterator[None]:
    """Within the block, ``auto`` resolves on a CPU as ``path`` says instead of as this process
    measures: every process of one experiment (resumed later, or a parallel worker) then trains
    its stages the same way (:mod:`kdrecon.experiment.training_path` records the path in the run directory)."""
    _ADOPTED.append(path)
    try:
        yield
    finally:
        _ADOPTED.pop()


def resolve_precision(precision: str, device: torch.device, compiled: bool = False) -> str:
    """``auto`` becomes the faster of ``bf16`` and ``fp32`` on ``device``: on a GPU, bf16 for a
    ``compiled`` network where the GPU supports it, float32 for an eager one (see the module
    docstring); on a CPU the measured choice (:func:`cpu_training_path`), compiled or not."""
    if precision != AUTO_PRECISION:
        return precision
    if device.type == "cuda":
        return "bf16" if compiled and native_bf16(device) else "fp32"
    return current_cpu_path().precision


def resolve_channels_last(channels_last: bool | str, device: torch.device, precision: str) -> bool:
    """``auto`` becomes channels-last on a GPU or under bf16; for float32 on a CPU, the layout
    measured faster there (:func:`cpu_training_path`)."""
    if channels_last != AUTO_LAYOUT:
        return bool(channels_last)
    if device.type == "cuda" or resolve_precision(precision, device) == "bf16":
        return True
    return current_cpu_path().float32_channels_last


def inference_precision(precision: str, trained_in: str | None, device: torch.device) -> str:
    """The precision a trained network runs in for evaluation or deployment: ``fp32`` or ``bf16``
    as asked, or for ``as-trained`` (:data:`kdrecon.training.config.AS_TRAINED`) bf16 if it was
    trained in bf16 (``trained_in``, from its checkpoint or weights file) and bf16 is this
    device's fast path (:func:`resolve_precision` of ``auto``: measured on a CPU, where native bf16
    can be slower than float32), else float32.

    A network trained under bf16 autocast had its best checkpoint chosen by a bf16 validation;
    its scores in float32 and bf16 differ by thousandths of a dB (docs/benchmarks.md).

    Example:
        >>> cpu = torch.device("cpu")
        >>> inference_precision(AS_TRAINED, "fp32", cpu), inference_precision("fp32", "bf16", cpu)
        ('fp32', 'fp32')
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    if precision != AS_TRAINED:
        warn_if_emulated(precision, device)
        return precision
    return "bf16" if trained_in == "bf16" and resolve_precision(AUTO_PRECISION, device) == "bf16" else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the convolutions; FFTs stay float32. ``fp32``: no autocast. Any other
    value (``auto``, ``as-trained``) must be resolved first."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision: expected fp32 or bf16 (resolved), got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
