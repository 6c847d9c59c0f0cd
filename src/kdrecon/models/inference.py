"""How forward-only passes run (validation, the teacher cache, evaluation, reconstruction).

Two settings differ from training's, both measured (``docs/benchmarks.md``):

* **Layout.** A forward pass runs faster in channels-last layout, also on a float32 CPU where
  training runs faster in NCHW. :func:`inference_layout` switches modules to channels-last for
  a block of code and back afterwards.
* **Batch size.** On a CPU, passes over batches of about :data:`CPU_PIXELS_PER_BATCH` pixels
  (four 150×150 slices) filled a distiller's teacher cache and evaluated faster per slice than
  batches of two, and much faster than batches of 16, whose activations no longer stay in the
  processor's caches. A GPU gets large batches.

Example:
    >>> import torch
    >>> from kdrecon.models import build_model
    >>> model = build_model("D3C5")
    >>> with inference_layout(model):
    ...     memory_format(model)
    torch.channels_last
    >>> memory_format(model)
    torch.contiguous_format
    >>> inference_batch_size(torch.device("cpu"), (150, 150)), inference_batch_size(torch.device("cpu"), (320, 320))
    (4, 1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

#: Pixels per forward pass on a CPU: four 150×150 slices.
CPU_PIXELS_PER_BATCH = 4 * 150 * 150
#: Slices per forward pass on a GPU.
GPU_BATCH_SIZE = 16


def inference_batch_size(device: torch.device, image_shape: Sequence[int]) -> int:
    """Slices per forward pass for images of ``image_shape`` (``(..., H, W)``) on ``device``."""
    if device.type != "cpu":
        return GPU_BATCH_SIZE
    height, width = image_shape[-2:]
    return max(1, CPU_PIXELS_PER_BATCH // (height * width))


def memory_format(module: nn.Module) -> torch.memory_format:
    """``torch.channels_last`` if ``module``'s convolution weights are in that layout."""
    weights = [p for p in module.parameters() if p.dim() == 4]
    # A weight with one input channel is contiguous in both layouts; the others tell them apart.
    channels_last = (all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
                     and any(not w.is_contiguous() for w in weights))
    return torch.channels_last if channels_last else torch.contiguous_format


@contextlib.contextmanager
def inference_layout(*modules: nn.Module) -> Iterator[None]:
    """Run the block with ``modules`` in channels-last layout, then restore each one's layout.

    The parameters are converted in place (``module.to`` keeps the same parameter objects), so an
    optimiser holding them is unaffected; their values do not change.
    """
    restore = [module for module in modules if memory_format(module) != torch.channels_last]
    for module in restore:
        module.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for module in restore:
            module.to(memory_format=torch.contiguous_format)
