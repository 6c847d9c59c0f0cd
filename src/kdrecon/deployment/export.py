"""``kdrecon export``: a deployable model written for another runtime and checked before it is kept.

The graph and its real-arithmetic data consistency are :mod:`kdrecon.models.export`; here the
model is resolved by name or path, exported with its own mask, and its output on real slices is
compared with PyTorch's network with the FFT data consistency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdrecon.data.dataset import load_sample
from kdrecon.deployment.package import mask_from_description
from kdrecon.deployment.reconstruct import load_deployable
from kdrecon.models.export import export_network, run_exported
from kdrecon.models.weights import WeightsInfo
from kdrecon.mri.channels import COMPLEX_CHANNELS, to_channels
from kdrecon.mri.fft import ifft2
from kdrecon.mri.undersample import undersample


@dataclass(frozen=True)
class ExportCheck:
    """How far the exported network's output is from PyTorch's on the check slices."""

    slices: int
    max_abs_difference: float
    max_reference: float


def check_slices(info: WeightsInfo, count: int) -> tuple[torch.Tensor, ...]:
    """Real inputs of the model's size: the embedded sample's validation slices, centre-cropped or
    zero-padded to the image size, scaled to max 1 and undersampled with the model's mask (for a
    complex model, the zero-filled image as two channels)."""
    height, width = info.data["mask"]["shape"]
    images = load_sample("validation").target[:count, 0]
    top, left = (images.shape[1] - height) // 2, (images.shape[2] - width) // 2
    canvas = torch.zeros(len(images), height, width)
    source = images[:, max(top, 0) : max(top, 0) + height, max(left, 0) : max(left, 0) + width]
    canvas[:, max(-top, 0) : max(-top, 0) + source.shape[1], max(-left, 0) : max(-left, 0) + source.shape[2]] = source
    canvas = canvas / canvas.amax(dim=(1, 2), keepdim=True)
    kspace, zero_filled = undersample(canvas, torch.from_numpy(mask_from_description(info.data["mask"])))
    if info.image_channels == COMPLEX_CHANNELS:
        network_input = to_channels(ifft2(kspace))
    else:
        network_input = zero_filled[:, None].float()
    return network_input.contiguous(), kspace.real.contiguous(), kspace.imag.contiguous()


def export_and_check(model: str | Path, output: Path, export_format: str, slices: int = 8,
                     tolerance: float = 1e-4) -> ExportCheck:
    """Export a deployable model (a shipped name, weights file, run or checkpoint) and check it on real
    slices against PyTorch's own network with the FFT data consistency; a larger difference than
    ``tolerance`` times the output's maximum is an error and leaves no file."""
    network, info = load_deployable(model)
    inputs = check_slices(info, slices)
    # The example batch is 2: torch.export specialises a batch of 1 to a constant.
    export_network(network, mask_from_description(info.data["mask"]), output, export_format, tuple(t[:2] for t in inputs))
    exported = run_exported(output, export_format, inputs)
    mask = torch.from_numpy(mask_from_description(info.data["mask"]))
    with torch.no_grad():
        reference = network(inputs[0], torch.complex(inputs[1], inputs[2]), mask).numpy()
    check = ExportCheck(len(inputs[0]), float(np.abs(exported - reference).max()), float(np.abs(reference).max()))
    if not check.max_abs_difference <= tolerance * check.max_reference:
        Path(output).unlink(missing_ok=True)
        raise ValueError(f"{output}: the exported network differs from PyTorch's by {check.max_abs_difference:.3g} "
                         f"(output max {check.max_reference:.3g}); nothing was kept")
    return check


