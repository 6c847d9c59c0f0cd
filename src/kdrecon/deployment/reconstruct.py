"""Apply a trained network to new data and write the result in the input's own format.

``kdrecon reconstruct --model MODEL --input FILE_OR_DIR --output DIR``. MODEL is a shipped model's
name (:mod:`kdrecon.deployment.shipped`), a ``.safetensors`` weights file, a run directory or a
``.pt`` checkpoint. Inputs:

* **NIfTI** (``.nii``, ``.nii.gz``, 3-D magnitude, slices along the last axis): written back with
  the input's affine and header, the reconstruction in place of the image.
* **papers' h5** (``volfs`` (H, W, S) magnitude, and optionally ``kspace_volus_{acc}``): stored
  k-space of the model's acceleration is used **as acquired** (it must hold nothing outside the
  model's mask); otherwise ``volfs`` is undersampled. Written as ``reconstruction`` (S, H, W), the
  papers' results layout, with the input's attributes.

A magnitude slice is scaled to max 1 (as in training), undersampled with the model's own mask
(or, for another image size, a mask of ``--mask`` kind at the model's acceleration; in
super-resolution the low-pass box of that size), reconstructed, and multiplied back by its maximum.
Every output file is written under a temporary name and renamed, so a failure leaves no half file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdrecon.data import layout
from kdrecon.data.prepare import make_mask
from kdrecon.data.task import SUPER_RESOLUTION, factor_of
from kdrecon.deployment.package import describe_run, mask_from_description
from kdrecon.deployment.shipped import shipped_models, shipped_weights
from kdrecon.models.weights import SUFFIX, WeightsInfo, load_weights
from kdrecon.mri.resolution import low_pass_mask
from kdrecon.mri.undersample import undersample
from kdrecon.training.trainer import resolve_device

NIFTI_SUFFIXES = (".nii.gz", ".nii")
H5_SUFFIX = ".h5"


def load_deployable(model: str | Path) -> tuple[nn.Module, WeightsInfo]:
    """A shipped model's name, a weights file, a run directory or a checkpoint → network and description."""
    if str(model) in shipped_models():
        return load_weights(shipped_weights(str(model)))
    path = Path(model)
    if path.suffix == SUFFIX:
        return load_weights(path)
    if path.is_dir() or path.suffix == ".pt":
        return describe_run(path)
    raise ValueError(f"--model {model}: not a shipped model ({', '.join(shipped_models())}), a {SUFFIX} file, "
                     "a run directory or a .pt checkpoint")


@dataclass(frozen=True)
class Reconstructor:
    """A network with its description, applied slice batch by slice batch."""

    model: nn.Module
    info: WeightsInfo
    device: torch.device
    batch_size: int = 8
    mask_kind: str | None = None

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The model's mask for images of ``shape``: its own, or one made for that size."""
        own = self.info.data["mask"]
        if tuple(own["shape"]) == tuple(shape):
            return mask_from_description(own)
        acceleration = self.info.data["acceleration"]
        if self.info.data["task"] == SUPER_RESOLUTION:
            return low_pass_mask(shape, factor_of(acceleration))
        if self.mask_kind is None:
            raise ValueError(f"images are {shape[0]}×{shape[1]}, the model's {acceleration} mask is "
                             f"{own['shape'][0]}×{own['shape'][1]}: give --mask recipe|random|equispaced|PATH.npy")
        return make_mask(self.mask_kind, acceleration, shape)

    @torch.no_grad()
    def run(self, zero_filled: np.ndarray, kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The network's output ``(S, H, W)`` for inputs already scaled as in training."""
        self.model.to(self.device).eval()
        mask_tensor = torch.from_numpy(mask).to(self.device)
        outputs = []
        for start in range(0, len(zero_filled), self.batch_size):
            x = torch.from_numpy(zero_filled[start : start + self.batch_size]).to(self.device)[:, None]
            k = torch.from_numpy(kspace[start : start + self.batch_size]).to(self.device)
            outputs.append(self.model(x, k, mask_tensor)[:, 0].float().cpu().numpy())
        return np.concatenate(outputs)

    def magnitude(self, images: np.ndarray) -> np.ndarray:
        """Retrospectively undersample magnitude slices ``(S, H, W)`` and reconstruct them, in their own scale."""
        if not np.isfinite(images).all():
            raise ValueError("the images contain NaN or infinite values")
        maxima = np.abs(images).max(axis=(1, 2), keepdims=True)
        scale = np.where(maxima > 0, maxima, 1).astype(np.float32)
        mask = self.mask(images.shape[1:])
        kspace, zero_filled = undersample(torch.from_numpy((images / scale).astype(np.float32)), torch.from_numpy(mask))
        return self.run(zero_filled.numpy(), kspace.numpy(), mask) * scale

    def acquired(self, kspace: np.ndarray) -> np.ndarray:
        """Reconstruct un-centred undersampled k-space ``(S, H, W)`` as acquired (scaled as the training data)."""
        if not np.isfinite(kspace).all():
            raise ValueError("the k-space contains NaN or infinite values")
        mask = self.mask(kspace.shape[1:])
        outside = np.abs(kspace * (1 - mask)).max()
        if outside > 1e-6 * max(np.abs(kspace).max(), 1e-12):
            raise ValueError(f"the k-space has energy outside the model's {self.info.data['acceleration']} mask "
                             "(acquired with another mask, or in the centred layout)")
        zero_filled = np.abs(np.fft.ifft2(kspace, norm="ortho")).astype(np.float32)
        return self.run(zero_filled, kspace.astype(np.complex64), mask)


def input_files(path: Path) -> list[Path]:
    """The NIfTI and h5 files at ``path`` (a file, or a directory searched recursively), sorted."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((*NIFTI_SUFFIXES, H5_SUFFIX)))
    else:
        raise ValueError(f"{path}: input not found")
    for file in files:
        if not file.name.endswith((*NIFTI_SUFFIXES, H5_SUFFIX)):
            raise ValueError(f"{file}: not a NIfTI (.nii, .nii.gz) or papers' h5 (.h5) file")
    if not files:
        raise ValueError(f"{path}: no NIfTI or h5 files")
    return files


def reconstruct_nifti(reconstructor: Reconstructor, source: Path, destination: Path) -> None:
    """A 3-D NIfTI volume, slices along the last axis, written with the input's affine and header."""
    image = nib.load(str(source))
    if len(image.shape) != 3:
        raise ValueError(f"{source}: expected a 3-D volume, got shape {image.shape}")
    volume = np.moveaxis(image.get_fdata(dtype=np.float32), -1, 0)
    result = np.moveaxis(reconstructor.magnitude(volume), 0, -1)
    header = image.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1, 0)
    output = nib.Nifti1Image(result.astype(np.float32), image.affine, header) if isinstance(image, nib.Nifti1Image) \
        else nib.Nifti2Image(result.astype(np.float32), image.affine, header)
    suffix = next(s for s in NIFTI_SUFFIXES if source.name.endswith(s))
    with layout.atomic_path(destination) as temporary:
        nib.save(output, str(temporary.with_name(temporary.name + suffix)))
        temporary.with_name(temporary.name + suffix).replace(temporary)


def reconstruct_papers_h5(reconstructor: Reconstructor, source: Path, destination: Path) -> None:
    """A papers'-layout file: its k-space of the model's acceleration as acquired, else ``volfs`` undersampled."""
    key = layout.kspace_key(reconstructor.info.data["acceleration"])
    with h5py.File(source, "r") as file:
        attributes = dict(file.attrs)
        if key in file:
            result = reconstructor.acquired(np.moveaxis(file[key][()], -1, 0))
        elif layout.TARGET_KEY in file:
            result = reconstructor.magnitude(np.moveaxis(file[layout.TARGET_KEY][()], -1, 0).astype(np.float32))
        else:
            raise ValueError(f"neither {key!r} nor {layout.TARGET_KEY!r} (has: {', '.join(sorted(file))})")
    with layout.atomic_path(destination) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("reconstruction", data=result.astype(np.float32))
        file.attrs.update(attributes)


def reconstruct_files(model: str | Path, input_path: Path, output: Path, batch_size: int = 8, device: str = "auto",
                      mask_kind: str | None = None, progress: bool = True) -> list[Path]:
    """Reconstruct every file at ``input_path`` into ``output`` (same names); returns the files written."""
    network, info = load_deployable(model)
    reconstructor = Reconstructor(network, info, resolve_device(device), batch_size, mask_kind)
    files = input_files(input_path)
    root = Path(input_path) if Path(input_path).is_dir() else Path(input_path).parent
    written = []
    for source in tqdm(files, desc="reconstruct", unit="file", disable=None if progress else True):
        destination = Path(output) / source.relative_to(root)
        try:
            if source.suffix == H5_SUFFIX:
                reconstruct_papers_h5(reconstructor, source, destination)
            else:
                reconstruct_nifti(reconstructor, source, destination)
        except (OSError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None
        written.append(destination)
    return written
