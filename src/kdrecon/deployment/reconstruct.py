"""Apply a trained network to new data and write the result in the input's own format.

``kdrecon reconstruct --model MODEL --input FILE_OR_DIR --output DIR``. MODEL is a shipped model's
name (:mod:`kdrecon.models.shipped`), a ``.safetensors`` weights file, a run directory or a
``.pt`` checkpoint. Inputs:

* **NIfTI** (``.nii``, ``.nii.gz``): a 3-D magnitude volume (slices along the third axis) or a
  4-D series such as a cardiac cine (``H × W × slices × frames``); written back with the input's
  shape, affine and header, the reconstruction in place of the image.
* **papers' h5** (``volfs`` (H, W, S) magnitude, and optionally ``kspace_volus_{acc}``): stored
  k-space of the model's acceleration is used **as acquired** (it must hold nothing outside the
  model's mask, and no phase for a magnitude model), each slice scaled by its ``volfs`` maximum as
  in training (by its zero-filled image's where the file has no ``volfs``); otherwise ``volfs`` is
  undersampled. Written as ``reconstruction`` (S, H, W), the papers' results layout, with the
  input's attributes.
* **fastMRI single-coil h5** (``kspace``, ``reconstruction_esc``): the magnitude target image (or
  the cropped image of the fully sampled ``kspace``) is undersampled and reconstructed. A test- or
  challenge-split file (it has a ``mask``) is reconstructed **as acquired**: its undersampled
  ``kspace`` with its own mask on the whole phase-encoding grid, the readout oversampling removed
  (:mod:`kdrecon.deployment.acquired`), the result centre-cropped to 320×320 as fastMRI's.
  Written as fastMRI's ``reconstruction`` (S, H, W) with the input's attributes, so fastMRI's
  ``evaluate.py`` scores it against the original file.
* **raw k-space** (``.npy``, a scanner's ``(lines, coils, readout)`` or ``(lines, readout)``
  centred k-space, as :mod:`kdrecon.data.sources.raw_kspace` reads it): lines left at zero are
  taken as skipped and the k-space is reconstructed as acquired with that mask; fully sampled
  k-space is undersampled like an image. Each coil is reconstructed on its own and the coils
  combined by root-sum-of-squares, written as a float32 ``(lines, readout / oversampling)`` ``.npy``.
* **DICOM** (single-frame MR images, found by their ``DICM`` mark; files without an image, such as a
  ``DICOMDIR``, are skipped): written as a new series, see :func:`reconstruct_dicom`.

A **complex model** (trained on ``data.image: complex``) takes the complex image wherever the input has
one: the stored k-space or ``volfs_complex`` of a papers' h5 file, and always the ``kspace`` of a
fastMRI file or a raw ``.npy`` (phase kept); from magnitude-only formats it gets a real image. Every
output is the magnitude of the network's output. Acquired k-space with phase needs a complex model
(a magnitude model's data consistency keeps only the real part) of the acquisition's acceleration.

A slice is scaled to maximum magnitude 1 (as in training), undersampled with the model's own mask
(or, for another image size, a mask of ``--mask`` kind at the model's acceleration; in
super-resolution the low-pass box of that size), reconstructed, and multiplied back by its maximum;
a blank slice stays blank. A super-resolution model's inputs are genuine low-resolution images with
``low_resolution_input`` (``--low-resolution-input``): each is restored ``r`` times larger per side
(:func:`kdrecon.mri.resolution.embedded_kspace`), NIfTI voxels and DICOM pixel spacing made ``r``
times smaller.
Every output file is written under a temporary name and renamed, so a failure leaves no half file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import torch
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from torch import nn
from tqdm.auto import tqdm

from kdrecon.data import layout
from kdrecon.data.integrity import ACCELERATION_TOLERANCE, OUTSIDE_MASK, check_kspace_of_target
from kdrecon.data.prepare import make_mask, mask_parameters
from kdrecon.data.slicing import recorded_slice_axis
from kdrecon.data.sources import dicom as dicom_source
from kdrecon.data.sources import fastmri, nifti, raw_kspace
from kdrecon.data.task import SUPER_RESOLUTION, factor_of
from kdrecon.deployment.acquired import AcquiredSlices, from_centred, refuse_empty_lines, sampled_lines
from kdrecon.deployment.package import describe_run
from kdrecon.models.shipped import shipped_models, shipped_weights
from kdrecon.models.inference import inference_batch_size, inference_layout
from kdrecon.models.weights import SUFFIX, WeightsInfo, load_weights
from kdrecon.mri.channels import COMPLEX_CHANNELS, magnitude, to_channels
from kdrecon.mri.fft import hermitian_mismatch, ifft2
from kdrecon.mri.masks import mask_from_description
from kdrecon.mri.resolution import IndivisibleSize, embedded_kspace, low_pass_mask
from kdrecon.mri.undersample import undersample
from kdrecon.training.checkpoint import refuse_unfinished
from kdrecon.training.config import AS_TRAINED
from kdrecon.training.fast_path import autocast, inference_precision
from kdrecon.training.trainer import prepare_module, resolve_device

NIFTI_SUFFIXES = (".nii.gz", ".nii")
H5_SUFFIX = ".h5"
RAW_KSPACE_SUFFIX = raw_kspace.SUFFIX
#: The dataset that marks a fastMRI single-coil file (papers' files hold ``kspace_volus_{acc}``).
FASTMRI_KSPACE = "kspace"
#: :func:`kdrecon.mri.fft.hermitian_mismatch` above which k-space is taken as that of images with
#: phase: float32 rounding of real images' k-space stays orders of magnitude below it.
PHASE_TOLERANCE = 1e-3
MAGNITUDE_MODEL_ON_PHASE = ("the k-space has phase (it is not that of a magnitude image), which a magnitude "
                            "model's data consistency discards: use a complex model (trained with data.image: complex)")


def load_deployable(model: str | Path) -> tuple[nn.Module, WeightsInfo]:
    """A shipped model's name, a weights file, a run directory or a checkpoint → network and description."""
    if str(model) in shipped_models():
        return load_weights(shipped_weights(str(model)))
    path = Path(model)
    if path.suffix == SUFFIX:
        return load_weights(path)
    if path.is_dir() or path.suffix == ".pt":
        refuse_unfinished(path, "--model")
        return describe_run(path)
    raise ValueError(f"--model {model}: not a shipped model ({', '.join(shipped_models())}), a {SUFFIX} file, "
                     "a run directory or a .pt checkpoint")


#: How far an acquisition's stated acceleration may be from the model's: the same factor, up to rounding.
STATED_ACCELERATION_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Reconstructor:
    """A network with its description, applied slice batch by slice batch."""

    model: nn.Module
    info: WeightsInfo
    device: torch.device
    batch_size: int | None = None  # None: the device's (kdrecon.models.inference)
    mask_kind: str | None = None
    precision: str = "fp32"  # fp32 or bf16 (autocast of the convolutions; data consistency stays float32)
    low_resolution_input: bool = False  # super-resolution: images are genuine low-resolution ones, to upsample
    #: What the inputs so far were: "images" (undersampled here) and/or "acquired" k-space, for :attr:`derivation`.
    inputs_seen: set[str] = field(default_factory=set, compare=False)

    def __post_init__(self) -> None:
        if self.low_resolution_input and not self.is_super_resolution:
            raise ValueError(f"a low-resolution input needs a super-resolution model; this one was trained for "
                             f"{self.info.data['task']}")
        if self.mask_kind is not None and self.is_super_resolution:
            raise ValueError(f"--mask {self.mask_kind}: a super-resolution model takes no mask (its low-pass "
                             "filter follows from its factor and the image size)")
        if self.mask_kind is not None:
            mask_parameters(self.mask_kind)  # an unknown kind is refused before any file is read
            if self.mask_kind.endswith(".npy") and not Path(self.mask_kind).is_file():
                raise ValueError(f"--mask {self.mask_kind}: no such file")

    @property
    def is_super_resolution(self) -> bool:
        return self.info.data["task"] == SUPER_RESOLUTION

    @property
    def derivation(self) -> str:
        """How an output image came about, for its DICOM ``DerivationDescription`` and the CLI."""
        acceleration = self.info.data["acceleration"]
        if self.low_resolution_input:
            return f"super-resolved {acceleration} from the low-resolution image"
        if self.is_super_resolution:
            return f"super-resolved from the image low-passed to 1/{acceleration} of its k-space (a simulation)"
        acquired = f"reconstructed from k-space acquired {acceleration}"
        mask = f" ({self.mask_kind} mask)" if self.mask_kind is not None else ""
        retrospective = f"reconstructed from the image's k-space retrospectively undersampled {acceleration}{mask}"
        if self.inputs_seen == {"acquired"}:
            return acquired
        if self.inputs_seen == {"acquired", "images"}:
            return f"{retrospective}, or {acquired} where a file stores it"
        return retrospective

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask --mask asks for, else the model's own for images of ``shape``, or one made for that size."""
        own = self.info.data["mask"]
        if tuple(own["shape"]) == tuple(shape) and self.mask_kind is None:
            return mask_from_description(own)
        acceleration = self.info.data["acceleration"]
        if self.is_super_resolution:
            try:
                return low_pass_mask(shape, factor_of(acceleration))
            except IndivisibleSize as error:
                raise ValueError(f"{error}: this model super-resolves {acceleration}; crop or pad the images "
                                 "to a size that factor divides") from None
        if self.mask_kind is None:
            raise ValueError(f"images are {shape[0]}×{shape[1]}, the model's {acceleration} mask is "
                             f"{own['shape'][0]}×{own['shape'][1]}: give --mask recipe|random|equispaced|PATH.npy")
        return make_mask(self.mask_kind, acceleration, shape)

    @property
    def is_complex(self) -> bool:
        """Whether the network takes complex images as two channels (:mod:`kdrecon.mri.channels`)."""
        return self.info.image_channels == COMPLEX_CHANNELS

    @torch.no_grad()
    def run(self, kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The magnitude of the network's output ``(S, H, W)`` for un-centred k-space scaled as in training."""
        prepare_module(self.model, self.device).eval()
        mask_tensor = torch.from_numpy(mask).to(self.device)
        batch_size = self.batch_size or inference_batch_size(self.device, kspace.shape)
        outputs = []
        with inference_layout(self.model), autocast(self.device, self.precision):
            for start in range(0, len(kspace), batch_size):
                k = torch.from_numpy(kspace[start : start + batch_size]).to(self.device)
                zero_filled = ifft2(k)
                x = to_channels(zero_filled) if self.is_complex else zero_filled.abs()[:, None]
                outputs.append(magnitude(self.model(x, k, mask_tensor).float()).cpu().numpy())
        result = np.concatenate(outputs)
        if not np.isfinite(result).all():
            raise ValueError("the network's output has NaN or infinite values; nothing was written for this input")
        return result

    def images(self, images: np.ndarray) -> np.ndarray:
        """Retrospectively undersample slices ``(S, H, W)`` (magnitude, or complex for a complex model) and
        reconstruct them, in their own scale; genuine low-resolution slices (``low_resolution_input``)
        are restored on the model's full grid, ``(S, r·H, r·W)``."""
        self.inputs_seen.add("images")
        if not np.isfinite(images).all():
            raise ValueError("the images contain NaN or infinite values")
        if not np.abs(images).max(initial=0) > 0:
            raise ValueError("the images are all zeros")
        if np.iscomplexobj(images) and not self.is_complex:
            images = np.abs(images)
        maxima = np.abs(images).max(axis=(1, 2), keepdims=True)
        scale = np.where(maxima > 0, maxima, 1).astype(np.float32)
        if self.low_resolution_input:
            kspace = embedded_kspace(images / scale, factor_of(self.info.data["acceleration"]))
            mask = self.mask(kspace.shape[1:])
        else:
            mask = self.mask(images.shape[1:])
            kspace = undersample(torch.from_numpy(images / scale), torch.from_numpy(mask))[0].to(torch.complex64).numpy()
        # A blank slice (a volume's padding) stays blank: the network's biases would paint noise on it.
        return self.run(kspace, mask) * scale * (maxima > 0)

    def acquired(self, kspace: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
        """Reconstruct un-centred k-space ``(S, H, W)`` sampled with the model's own mask, as acquired,
        in its own scale: each slice divided by the maximum magnitude of its fully sampled image
        ``target`` (S, H, W), where the file stores one (the training data's normalisation; the k-space
        must then be its masked spectrum), else by its zero-filled image's, and multiplied back."""
        self._refuse_mask_option()
        if not np.iscomplexobj(kspace):
            raise ValueError(f"the k-space must be complex, got {kspace.dtype} (real values are not an acquisition)")
        if not np.isfinite(kspace).all():
            raise ValueError("the k-space contains NaN or infinite values")
        mask = self.mask(kspace.shape[1:])
        outside = np.abs(kspace * (1 - mask)).max()
        if outside > OUTSIDE_MASK * max(np.abs(kspace).max(), 1e-12):
            raise ValueError(f"the k-space has energy outside the model's {self.info.data['acceleration']} mask "
                             "(acquired with another mask, or in the centred layout)")
        acquired = np.abs(kspace).max(axis=(1, 2)) > 0  # a blank slice (a volume's padding) stays blank
        _check_sampled_lines(np.abs(kspace[acquired]), mask > 0)
        if target is not None:
            check_kspace_of_target(target, kspace, mask, f"its k-space and {layout.TARGET_KEY!r}")
        kspace = kspace[acquired].astype(np.complex64)
        if not self.is_complex and hermitian_mismatch(torch.from_numpy(kspace), torch.from_numpy(mask)) > PHASE_TOLERANCE:
            raise ValueError(MAGNITUDE_MODEL_ON_PHASE)
        if target is None:
            maxima = np.abs(ifft2(torch.from_numpy(kspace)).numpy()).max(axis=(1, 2))
        else:
            maxima = np.abs(target).max(axis=(1, 2))[acquired]
        scale = np.where(maxima > 0, maxima, 1).astype(np.float32)[:, None, None]
        result = np.zeros((len(acquired), *mask.shape), np.float32)
        result[acquired] = self.run(kspace / scale, mask) * scale
        return result

    def measured(self, slices: AcquiredSlices, acceleration: float | None = None) -> np.ndarray:
        """Reconstruct k-space acquired with its own mask, each slice scaled to a zero-filled maximum of 1
        and back. ``acceleration``: the acquisition's stated one, else lines / sampled lines, which a
        fully sampled centre makes lower than the nominal one. A stated acceleration must be the model's; a
        measured one within ACCELERATION_TOLERANCE of it (relative), as drawn masks vary."""
        if self.is_super_resolution:
            raise ValueError("a super-resolution model cannot reconstruct undersampled k-space")
        self._refuse_mask_option()
        if not self.is_complex:
            raise ValueError(MAGNITUDE_MODEL_ON_PHASE)
        ours, theirs = factor_of(self.info.data["acceleration"]), acceleration or 1 / slices.sampled_fraction
        if abs(theirs / ours - 1) > (ACCELERATION_TOLERANCE if acceleration is None else STATED_ACCELERATION_TOLERANCE):
            raise ValueError(f"the k-space was acquired at {theirs:.3g}x, the model is for {self.info.data['acceleration']}")
        maxima = np.abs(slices.images()).max(axis=(1, 2), keepdims=True)
        scale = np.where(maxima > 0, maxima, 1).astype(np.float32)
        return self.run(slices.kspace / scale, slices.mask) * scale


    def _refuse_mask_option(self) -> None:
        """Acquired k-space is used with the mask it was acquired with: a --mask would go unused."""
        self.inputs_seen.add("acquired")
        if self.mask_kind is not None:
            raise ValueError(f"its k-space is used as acquired, with the mask it was acquired with; --mask "
                             f"{self.mask_kind} applies only to images (leave it out for acquired k-space)")


def _check_sampled_lines(magnitudes: np.ndarray, mask: np.ndarray) -> None:
    """Refuse all-zero k-space ``(S, H, W)``, or a row or column ``mask`` samples whole left empty in a slice."""
    if not magnitudes.max(initial=0) > 0:
        raise ValueError("the k-space is all zeros")
    refuse_empty_lines(magnitudes, mask.all(axis=1), -2, "row")
    refuse_empty_lines(magnitudes, mask.all(axis=0), -1, "column")


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (the ``DICM`` mark after the 128-byte preamble)."""
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def _supported(path: Path) -> bool:
    return path.name.endswith((*NIFTI_SUFFIXES, H5_SUFFIX, RAW_KSPACE_SUFFIX)) or is_dicom(path)


def input_files(path: Path) -> list[Path]:
    """The NIfTI, h5, raw k-space and DICOM files at ``path`` (a file, or a directory searched recursively), sorted."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _supported(p))
    else:
        raise ValueError(f"{path}: input not found")
    for file in files:
        if not _supported(file):
            raise ValueError(f"{file}: not a NIfTI (.nii, .nii.gz), h5 (.h5), raw k-space (.npy) or DICOM file")
    if not files:
        raise ValueError(f"{path}: no NIfTI, h5, raw k-space or DICOM files")
    return files


#: Series numbers of reconstructed series: the input's plus this, so a viewer lists both apart.
SERIES_NUMBER_OFFSET = 1000


def reconstruct_dicom(reconstructor: Reconstructor, sources: list[Path], root: Path, output: Path) -> list[Path]:
    """Single-frame DICOM images, each reconstructed and written as an image of a **new series**:
    new Series and SOP Instance UIDs, a series number :data:`SERIES_NUMBER_OFFSET` above the
    input's, ``ImageType`` ``DERIVED\\SECONDARY``, the input's geometry (super-resolved: ``r`` times
    the rows and columns, ``PixelSpacing`` ``r`` times finer), patient and study tags, its pixel
    encoding (values rounded and clipped to the stored range, ``RescaleSlope``/``Intercept`` kept).
    Every image is reconstructed before any is written, so a failing group of images leaves none
    of the others behind."""
    datasets, pixels = [], []
    for file in sources:
        try:
            datasets.append(pydicom.dcmread(str(file)))
            # Images phase-encoded along the rows are reconstructed transposed, as `prepare dicom` reads them.
            pixels.append(_in_mask_orientation(_pixel_values(datasets[-1]), datasets[-1]))
        except (OSError, ValueError, AttributeError) as error:  # truncated, or pixel data it cannot decode
            raise ValueError(f"{file}: {error}") from None
    series = {uid: generate_uid() for uid in dict.fromkeys(str(ds.get("SeriesInstanceUID", "")) for ds in datasets)}
    shapes: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(pixels):
        shapes.setdefault(image.shape, []).append(index)
    reconstructed: dict[int, np.ndarray] = {}
    for shape, indices in shapes.items():  # slices are reconstructed independently: batch those of one size
        try:
            images = reconstructor.images(np.stack([pixels[i] for i in indices]))
        except (ValueError, AttributeError) as error:
            first = datasets[indices[0]]
            more = f" and {len(indices) - 1} more of that size" if len(indices) > 1 else ""
            turned = ", phase-encoded along its rows: read transposed" if dicom_source.phase_encoding_along_rows(first) else ""
            raise ValueError(f"{sources[indices[0]]}{more} ({first.Rows}×{first.Columns}{turned}): {error}") from None
        reconstructed.update((i, _in_mask_orientation(image, datasets[i])) for i, image in zip(indices, images))
    written = []
    for index, ds in enumerate(datasets):
        _encode(ds, reconstructed[index])
        _resize(ds, reconstructed[index].shape)  # after encoding, which reads the input's pixels for their type
        _label_as_derived(ds, series[str(ds.get("SeriesInstanceUID", ""))], reconstructor.info.model["name"],
                          reconstructor.derivation)
        destination = output / sources[index].relative_to(root)
        with layout.atomic_path(destination) as temporary:
            ds.save_as(str(temporary), enforce_file_format=True)
        written.append(destination)
    return written


def _label_as_derived(ds: pydicom.Dataset, series_uid: str, model: str, derivation: str) -> None:
    """Mark ``ds`` as an image of the reconstructed series ``series_uid``, derived by ``model`` as ``derivation`` says."""
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesDescription = f"{ds.get('SeriesDescription', '')} kdrecon {model}".strip()
    if ds.get("SeriesNumber") not in (None, ""):
        ds.SeriesNumber = int(ds.SeriesNumber) + SERIES_NUMBER_OFFSET
    values = ds.get("ImageType", [])
    ds.ImageType = ["DERIVED", "SECONDARY", *([] if isinstance(values, str) else list(values)[2:])]  # str: one value
    ds.DerivationDescription = f"kdrecon {model}: {derivation}"
    for stale in ("LargestImagePixelValue", "SmallestImagePixelValue"):  # of the input's pixels
        if stale in ds:
            del ds[stale]


def _resize(ds: pydicom.Dataset, shape: tuple[int, int]) -> None:
    """A super-resolved image's size and pixel spacing. ``ImagePositionPatient`` (the centre of the
    first pixel) stays: low-resolution pixel ``i`` lies at full-grid pixel ``r·i``."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    if (rows, columns) == tuple(shape):
        return
    if "PixelSpacing" in ds:
        ds.PixelSpacing = [float(ds.PixelSpacing[0]) * rows / shape[0], float(ds.PixelSpacing[1]) * columns / shape[1]]
    ds.Rows, ds.Columns = shape


def _in_mask_orientation(image: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """``image`` transposed if ``ds`` is phase-encoded along its rows (and back: the transpose is its own inverse)."""
    return np.ascontiguousarray(image.T) if dicom_source.phase_encoding_along_rows(ds) else image


def _pixel_values(ds: pydicom.Dataset) -> np.ndarray:
    return (ds.pixel_array * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)).astype(np.float32)


def _stored_range(ds: pydicom.Dataset, dtype: np.dtype) -> tuple[float, float]:
    """The values ``ds``'s pixels can hold: ``BitsStored`` bits, signed or not, within the array's type
    (a 12-bit image read as uint16 would wrap round above 4095: 4100 reads back as 4)."""
    if dtype.kind not in "iu":
        limits = np.finfo(dtype)
        return float(limits.min), float(limits.max)
    bits = int(ds.get("BitsStored", 8 * dtype.itemsize) or 8 * dtype.itemsize)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    limits = np.iinfo(dtype)
    return float(max(low, limits.min)), float(min(high, limits.max))


def _encode(ds: pydicom.Dataset, image: np.ndarray) -> None:
    """Store ``image`` in ``ds``'s pixel encoding (uncompressed)."""
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    dtype = ds.pixel_array.dtype
    low, high = _stored_range(ds, dtype)
    stored = np.clip(np.round((image - intercept) / slope), low, high).astype(dtype)
    ds.PixelData = stored.tobytes()
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def reconstruct_nifti(reconstructor: Reconstructor, source: Path, destination: Path,
                      slice_axis: int = nifti.SLICE_AXIS) -> None:
    """A 3-D NIfTI volume or a 4-D series such as a cardiac cine (``(X, Y, Z, frames)``: each
    frame's slices reconstructed with their own scale), its slices along the spatial axis
    ``slice_axis`` (the other two, in stored order, are each slice's rows and columns, as
    ``prepare nifti`` reads them), written with the input's shape, affine and header
    (super-resolved: ``r`` times the in-plane size, voxels ``r`` times smaller)."""
    nifti.check_slice_axis(slice_axis)
    image, data = nifti.read_image(source)
    if len(image.shape) not in (3, 4):
        raise ValueError(f"{source}: expected a 3-D volume or a 4-D series of volumes, got shape {image.shape}")
    axis = slice_axis % 3
    in_plane = [a for a in range(3) if a != axis]
    stacked = np.moveaxis(data, axis, 2)  # (rows, columns, slices[, frames])
    height, width = stacked.shape[:2]
    # every (slice, frame) pair becomes one 2-D slice, in the order of the file
    slices = np.moveaxis(stacked.reshape(height, width, -1), -1, 0)
    images = reconstructor.images(slices)
    result = np.moveaxis(np.moveaxis(images, 0, -1).reshape(*images.shape[1:], *stacked.shape[2:]), 2, axis)
    # Super-resolved voxels are r times smaller in-plane; voxel (0, 0) stays where it was (pixel i at r·i).
    affine = image.affine.copy()
    affine[:3, in_plane] *= np.array([height, width]) / images.shape[1:]
    header = image.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1, 0)
    output = nib.Nifti1Image(result.astype(np.float32), affine, header) if isinstance(image, nib.Nifti1Image) \
        else nib.Nifti2Image(result.astype(np.float32), affine, header)
    suffix = next(s for s in NIFTI_SUFFIXES if source.name.endswith(s))
    with layout.atomic_path(destination) as temporary:
        nib.save(output, str(temporary.with_name(temporary.name + suffix)))
        temporary.with_name(temporary.name + suffix).replace(temporary)


def _volume(file: h5py.File, key: str) -> np.ndarray:
    """Dataset ``key`` of a papers'-layout file, (H, W, S) there, as (S, H, W)."""
    item = file[key]
    if not isinstance(item, h5py.Dataset) or item.ndim != 3:
        what = f"a {item.ndim}-D array" if isinstance(item, h5py.Dataset) else "a group"
        raise ValueError(f"{key!r} is {what}; the papers' layout stores (H, W, S) arrays")
    return np.moveaxis(item[()], -1, 0)


def reconstruct_papers_h5(reconstructor: Reconstructor, source: Path, destination: Path) -> None:
    """A papers'-layout file: its k-space of the model's acceleration as acquired, else ``volfs`` undersampled."""
    key = layout.kspace_key(reconstructor.info.data["acceleration"])
    with h5py.File(source, "r") as file:
        attributes = dict(file.attrs)
        if key in file and reconstructor.low_resolution_input:
            raise ValueError(f"{key!r} is k-space on the full grid, not a low-resolution image: "
                             f"reconstruct it without {LOW_RESOLUTION_OPTION}")
        if key in file:
            # The fully sampled image whose masked spectrum the k-space must be: complex for a complex model.
            target_key = layout.COMPLEX_TARGET_KEY if reconstructor.is_complex else layout.TARGET_KEY
            target = _volume(file, target_key) if target_key in file else None
            result = reconstructor.acquired(_volume(file, key), target)
        elif reconstructor.is_complex and layout.COMPLEX_TARGET_KEY in file:
            result = reconstructor.images(_volume(file, layout.COMPLEX_TARGET_KEY).astype(np.complex64))
        elif layout.TARGET_KEY in file:
            result = reconstructor.images(_volume(file, layout.TARGET_KEY).astype(np.float32))
        else:
            raise ValueError(f"neither {key!r} nor {layout.TARGET_KEY!r} (has: {', '.join(sorted(file))})")
    with layout.atomic_path(destination) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("reconstruction", data=result.astype(np.float32))
        file.attrs.update(attributes)


def reconstruct_fastmri(reconstructor: Reconstructor, source: Path, destination: Path) -> None:
    """A fastMRI single-coil file: a test-split file's k-space as acquired, else its magnitude image
    (``reconstruction_esc``, or the cropped image of ``kspace`` where that is absent) undersampled and
    reconstructed; written as fastMRI's ``reconstruction`` (S, H, W) with the input's attributes,
    the file fastMRI's ``evaluate.py`` scores."""
    _refuse_low_resolution(reconstructor, "a fastMRI file")
    with h5py.File(source, "r") as file:
        attributes = dict(file.attrs)
        acquired = fastmri.MASK_KEY in file
        # A complex model needs the phase, which only the k-space has.
        image_source = "reconstruction" if "reconstruction_esc" in file and not reconstructor.is_complex else "kspace"
    # In kdrecon's orientation, the phase-encoding lines along the rows as its networks were trained
    # (fastmri.swap_phase_encoding_axis), and back to fastMRI's for the output.
    if acquired:
        kspace, lines, acceleration = fastmri.read_acquired(source)
        slices = from_centred(fastmri.swap_phase_encoding_axis(kspace), lines, line_axis=-2,
                              readout_size=fastmri.DEFAULT_CROP[0])
        result = fastmri.centre_crop(fastmri.swap_phase_encoding_axis(reconstructor.measured(slices, acceleration)),
                                     fastmri.DEFAULT_CROP)
    else:
        volume = next(fastmri.read_volumes(source, image_source=image_source, complex_images=reconstructor.is_complex))
        result = fastmri.swap_phase_encoding_axis(reconstructor.images(volume.images))
    with layout.atomic_path(destination) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("reconstruction", data=result.astype(np.float32))
        file.attrs.update(attributes)


def reconstruct_raw_kspace(reconstructor: Reconstructor, source: Path, destination: Path, readout_oversampling: int) -> None:
    """A scanner's centred ``.npy`` k-space: skipped (all-zero) lines make it an acquisition with that
    mask, else it is undersampled with the model's; every coil reconstructed, combined by
    root-sum-of-squares and written as a float32 ``.npy`` image."""
    _refuse_low_resolution(reconstructor, "raw k-space")
    per_coil = np.moveaxis(raw_kspace.load_kspace(source), 1, 0)  # (coils, lines, readout), coils as slices
    readout = raw_kspace.kept_readout(per_coil.shape[-1], readout_oversampling, source)
    slices = from_centred(per_coil, sampled_lines(per_coil, line_axis=-2), line_axis=-2, readout_size=readout)
    coils = reconstructor.images(slices.images()) if slices.fully_sampled else reconstructor.measured(slices)
    with layout.atomic_path(destination) as temporary, open(temporary, "wb") as file:
        np.save(file, np.sqrt((coils.astype(np.float64) ** 2).sum(axis=0)).astype(np.float32))


#: The CLI option that says the inputs are genuine low-resolution images (named in refusals).
LOW_RESOLUTION_OPTION = "--low-resolution-input"


def _refuse_low_resolution(reconstructor: Reconstructor, what: str) -> None:
    if reconstructor.low_resolution_input:
        raise ValueError(f"{what} is a full-resolution acquisition: reconstruct it without {LOW_RESOLUTION_OPTION}")


def reconstruct_h5(reconstructor: Reconstructor, source: Path, destination: Path) -> None:
    """A fastMRI file (it has ``kspace``) or a papers'-layout file."""
    with h5py.File(source, "r") as file:
        is_fastmri = FASTMRI_KSPACE in file
    (reconstruct_fastmri if is_fastmri else reconstruct_papers_h5)(reconstructor, source, destination)


#: The option that keeps the reconstructions an interrupted run wrote (named in messages).
SKIP_EXISTING_OPTION = "--skip-existing"
#: The option that names the axis NIfTI volumes are sliced along (named in refusals).
SLICE_AXIS_OPTION = "--slice-axis"


def _to_reconstruct(files: list[Path], root: Path, output: Path, overwrite: bool, skip_existing: bool) -> list[Path]:
    """The inputs to reconstruct. An output file (``output`` / its input's path below ``root``) must
    never be one of the inputs, and must not exist already unless ``overwrite`` (replace it) or
    ``skip_existing`` (keep it and skip its input; written atomically, it is complete): an earlier
    reconstruction is work too. A DICOM series is written whole, so it is skipped only whole."""
    inputs = {file.resolve() for file in files}
    for file in files:
        if (output / file.relative_to(root)).resolve() in inputs:
            raise ValueError(f"--output {output}: its reconstruction of {file} would replace an input file; "
                             "choose another output directory")
    existing = [file for file in files if (output / file.relative_to(root)).exists()]
    if not existing or overwrite:
        return files
    if not skip_existing:
        more = f" (and {len(existing) - 1} more of the reconstructions' names)" if len(existing) > 1 else ""
        raise ValueError(f"--output {output}: {output / existing[0].relative_to(root)} exists already{more}; choose "
                         f"another output directory, pass --overwrite to replace, or {SKIP_EXISTING_OPTION} to keep")
    dicom = [file for file in files if is_dicom(file)]
    kept_dicom = [file for file in dicom if file in existing]
    if kept_dicom and len(kept_dicom) < len(dicom):
        raise ValueError(f"--output {output}: {len(kept_dicom)} of the {len(dicom)} DICOM images' reconstructions exist; "
                         f"a series is written whole: remove them, or pass --overwrite")
    return [file for file in files if file not in existing]


def _remove_own_debris(files: list[Path], root: Path, output: Path) -> None:
    """The temporaries a killed earlier run left under the names this run writes; no others, which
    another process may be writing."""
    for file in files:
        destination = output / file.relative_to(root)
        layout.remove_debris(destination.parent, destination.name, recursive=False)


@dataclass(frozen=True)
class Reconstructions:
    """What :func:`reconstruct_files` wrote, the precision the network ran in, and how the images came about."""

    files: tuple[Path, ...]
    precision: str
    derivation: str
    kept: tuple[Path, ...] = ()  # reconstructions already in the output folder, kept (``skip_existing``)


def _nifti_slice_axis(given: int | None, info: WeightsInfo, has_nifti: bool) -> int:
    """The axis NIfTI inputs are sliced along: ``given``, else the one the model was trained along, else
    the last; a warning where the given one is not the model's."""
    trained = recorded_slice_axis(info.data, info.path)
    if given is None:
        return nifti.SLICE_AXIS if trained is None else trained
    if has_nifti and trained is not None and given % 3 != trained:
        warnings.warn(f"{SLICE_AXIS_OPTION} {given}: {info.path} was trained on NIfTI slices along axis {trained}; "
                      "slicing along the one given", stacklevel=3)
    return given


def reconstruct_files(model: str | Path, input_path: Path, output: Path, batch_size: int | None = None, device: str = "auto",
                      mask_kind: str | None = None, progress: bool = True, readout_oversampling: int = raw_kspace.READOUT_OVERSAMPLING,
                      precision: str = AS_TRAINED, overwrite: bool = False, low_resolution_input: bool = False,
                      skip_existing: bool = False, slice_axis: int | None = None) -> Reconstructions:
    """Reconstruct every file at ``input_path`` into ``output`` (same names); returns the files
    written, the precision the network ran in and how the images came about. Files already in
    ``output`` under those names are refused unless ``overwrite`` (replaced) or ``skip_existing`` (kept,
    their inputs skipped: how an interrupted run continues); if one input fails, the reconstructions
    written before it are kept (the error says how many).
    ``readout_oversampling`` applies to raw ``.npy`` k-space (the central 1/N of its readout is kept);
    ``precision`` as :func:`kdrecon.training.fast_path.inference_precision` resolves it, from the
    precision the model's weights file or checkpoint records (float32 where none is recorded);
    ``slice_axis``: the spatial axis NIfTI inputs are sliced along (:func:`reconstruct_nifti`); None: the
    one the model's weights record (:mod:`kdrecon.data.slicing`), else the last."""
    if slice_axis is not None:
        nifti.check_slice_axis(slice_axis)
    network, info = load_deployable(model)
    torch_device = resolve_device(device)
    precision = inference_precision(precision, info.provenance.get("precision"), torch_device)
    reconstructor = Reconstructor(network, info, torch_device, batch_size, mask_kind, precision, low_resolution_input)
    files = input_files(input_path)
    has_nifti = any(file.name.endswith(NIFTI_SUFFIXES) for file in files)
    if slice_axis is not None and slice_axis % 3 != nifti.SLICE_AXIS % 3 and not has_nifti:
        raise ValueError(f"{SLICE_AXIS_OPTION} {slice_axis}: applies to NIfTI volumes, and {input_path} holds none")
    slice_axis = _nifti_slice_axis(slice_axis, info, has_nifti)
    root = Path(input_path) if Path(input_path).is_dir() else Path(input_path).parent
    dicom = [file for file in files if is_dicom(file)]
    others = [file for file in files if file not in dicom]
    dicom = [file for file in dicom if dicom_source.read_image_header(file) is not None]  # not DICOMDIR, reports
    if not dicom and not others:
        raise ValueError(f"{input_path}: no images to reconstruct (its DICOM files hold none)")
    pending = _to_reconstruct([*dicom, *others], root, Path(output), overwrite, skip_existing)
    _remove_own_debris(pending, root, Path(output))
    dicom_all, others_all = dicom, others
    dicom, others = [file for file in dicom if file in pending], [file for file in others if file in pending]
    try:
        written = reconstruct_dicom(reconstructor, dicom, root, Path(output)) if dicom else []
    except (OSError, ValueError, AttributeError) as error:  # named by file where one is to blame
        raise ValueError(error if str(error).startswith(str(root)) else f"DICOM input under {root}: {error}") from None
    for source in tqdm(others, desc="reconstruct", unit="file", disable=None if progress else True):
        destination = Path(output) / source.relative_to(root)
        try:
            if source.suffix == H5_SUFFIX:
                reconstruct_h5(reconstructor, source, destination)
            elif source.suffix == RAW_KSPACE_SUFFIX:
                reconstruct_raw_kspace(reconstructor, source, destination, readout_oversampling)
            else:
                reconstruct_nifti(reconstructor, source, destination, slice_axis)
        except (OSError, ValueError) as error:  # named once: a reader's message may name the file already
            message = str(error) if str(error).startswith(f"{source}:") else f"{source}: {error}"
            kept = (f" ({len(written)} reconstruction(s) written before it are kept in {output}: rerun with "
                    f"{SKIP_EXISTING_OPTION} to continue after them)") if written else ""
            raise ValueError(message + kept) from None
        written.append(destination)
    kept = tuple(Path(output) / file.relative_to(root) for file in [*dicom_all, *others_all] if file not in pending)
    return Reconstructions(tuple(written), precision, reconstructor.derivation, kept)
