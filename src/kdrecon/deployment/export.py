"""``kdrecon export``: a deployable model written for another runtime and checked before it is kept.

The graph and its real-arithmetic data consistency are :mod:`kdrecon.models.export`; here the
model is resolved by name or path, exported with its own mask, and its output on real slices is
compared with PyTorch's network with the FFT data consistency, in the same precision: float32
to :data:`FLOAT32_TOLERANCE` of the output's maximum, bf16 (an AOTInductor package on a CPU with
native bf16) to :data:`BF16_TOLERANCE`, the size of bf16's rounding after five cascades.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kdrecon.data import layout
from kdrecon.data.dataset import load_sample
from kdrecon.data.task import RECONSTRUCTION, SUPER_RESOLUTION
from kdrecon.mri.masks import mask_from_description
from kdrecon.deployment.reconstruct import load_deployable
from kdrecon.models.cascade import use_matrix_consistency
from kdrecon.models.export import BF16_FORMATS, export_network, run_exported
from kdrecon.models.sft import StudentFriendlyTeacher
from kdrecon.models.weights import WeightsInfo
from kdrecon.mri.channels import COMPLEX_CHANNELS, to_channels
from kdrecon.mri.fft import ifft2
from kdrecon.mri.undersample import undersample
from kdrecon.training.config import AS_TRAINED
from kdrecon.training.fast_path import autocast, inference_precision

#: Largest difference from PyTorch accepted, as a fraction of the output's maximum, per precision.
FLOAT32_TOLERANCE = 1e-4
BF16_TOLERANCE = 2e-2


@dataclass(frozen=True)
class ExportCheck:
    """How far the exported network's output is from PyTorch's on the check slices."""

    slices: int
    max_abs_difference: float
    max_reference: float
    precision: str = "fp32"
    #: Whether the package runs the blocks' thin convolutions as kdrecon's kernels (:mod:`kdrecon.models.thin_kernels`).
    thin_kernels: bool = False


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


#: What an exported graph's inputs hold, by task, stored in an ONNX export beside the model's description.
INPUTS = {
    RECONSTRUCTION: "zero_filled (B, C, H, W): the inverse FFT of the undersampled k-space, its magnitude (C = 1) or "
                    "its real and imaginary parts (C = 2); kspace_real, kspace_imag (B, H, W): that k-space, un-centred, "
                    "zero where not sampled; each slice scaled as 'normalisation' in 'data' says",
    SUPER_RESOLUTION: "low_resolution (B, 1, H, W): the low-resolution image on the full H x W grid (its k-space zero "
                      "outside the central block of 1/factor per side, 'acceleration' in 'data'); each slice scaled as "
                      "'normalisation' in 'data' says",
}


def image_input(info: WeightsInfo) -> str:
    """The name of the exported graph's image input: what the network is given, by its task."""
    return "low_resolution" if info.data.get("task") == SUPER_RESOLUTION else "zero_filled"


def onnx_metadata(info: WeightsInfo) -> dict[str, str]:
    """The weights file's description (model, data, provenance, as JSON) and what the inputs hold."""
    return {"model": json.dumps(info.model), "data": json.dumps(info.data), "provenance": json.dumps(info.provenance),
            "inputs": INPUTS[info.data.get("task", RECONSTRUCTION)]}


def export_and_check(model: str | Path, output: Path, export_format: str, slices: int = 8,
                     precision: str = AS_TRAINED, overwrite: bool = False, thin_kernels_allowed: bool = True) -> ExportCheck:
    """Export a deployable model (a shipped name, weights file, run or checkpoint) and check it on real
    slices against PyTorch's own network with the FFT data consistency; a larger difference than the
    precision's tolerance is an error and leaves no file. ``precision`` applies to AOTInductor
    (resolved as :func:`kdrecon.training.fast_path.inference_precision` does, from what the model
    was trained in); the other formats are float32. An existing ``output`` is refused unless
    ``overwrite``, and replaced only by an export that passed its check. ``thin_kernels_allowed``: see
    :func:`kdrecon.models.export.export_network`."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise ValueError(f"--output {output}: exists already; choose another file or pass --overwrite to replace it")
    network, info = load_deployable(model)
    if isinstance(network, StudentFriendlyTeacher):  # what it deploys is its teacher: the branches only train it
        network = network.teacher
    cpu = torch.device("cpu")
    if export_format in BF16_FORMATS:
        precision = inference_precision(precision, info.provenance.get("precision"), cpu)
    elif precision == AS_TRAINED:
        precision = "fp32"
    inputs = check_slices(info, slices)
    mask = mask_from_description(info.data["mask"])
    # An AOTInductor package is compiled for batch 1 (one slice per call); torch.export specialises a
    # batch of 1 to a constant, so the others get an example of 2.
    example = tuple(t[: 1 if export_format in BF16_FORMATS else 2] for t in inputs)
    # Checked under a temporary name (the runtimes want the format's suffix), then moved into place.
    staged = output.with_name(f"{layout.partial_name(output)}checking{layout.PARTIAL_SUFFIX}{output.suffix}")
    try:
        in_kernels = export_network(network, mask, staged, export_format, example, precision, image_input(info),
                                    onnx_metadata(info), thin_kernels_allowed)
        check = replace(_compare(network, mask, run_exported(staged, export_format, inputs), inputs, precision),
                        thin_kernels=in_kernels > 0)
        tolerance = BF16_TOLERANCE if precision == "bf16" else FLOAT32_TOLERANCE
        if not check.max_abs_difference <= tolerance * check.max_reference:
            raise ValueError(f"{output}: the exported network differs from PyTorch's by {check.max_abs_difference:.3g} "
                             f"(output max {check.max_reference:.3g}, {precision}); nothing was written")
        staged.replace(output)
    finally:
        staged.unlink(missing_ok=True)
    return check


def _compare(network, mask: np.ndarray, exported: np.ndarray, inputs: tuple[torch.Tensor, ...], precision: str) -> ExportCheck:
    """How far ``exported`` (the exported network's output on ``inputs``) is from PyTorch's with the FFT data consistency."""
    use_matrix_consistency(network, False)  # the reference: the FFT form
    with torch.no_grad(), autocast(torch.device("cpu"), precision):
        reference = network(inputs[0], torch.complex(inputs[1], inputs[2]), torch.from_numpy(mask)).float().numpy()
    return ExportCheck(len(inputs[0]), float(np.abs(exported - reference).max()), float(np.abs(reference).max()), precision)
