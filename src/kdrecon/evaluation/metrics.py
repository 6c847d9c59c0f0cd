"""Image-quality metrics for MRI reconstruction (spec §5): PSNR, SSIM, NMSE, HFN, VIF.

Small pure functions on real NumPy arrays: a 2-D slice ``(H, W)`` or a 3-D volume
``(S, H, W)`` with slices on the **first** axis (the results-file layout; the papers' h5 files
keep slices last, so transpose those first). Every function states its ``data_range`` and its
averaging, because the same name means different numbers under different conventions:

- ``nmse``: whole array (fastMRI); no intensity convention (a ratio of energies).
- ``psnr``: whole array (fastMRI); ``data_range`` = target max of the array passed.
- ``ssim``: mean over slices (fastMRI); ``data_range`` = target max of the array passed.
- ``hfn``: mean over slices (papers' code); prediction clipped to [0, 1] (papers' scaling).
- ``vif``: mean over slices; both images rescaled so the target's ``data_range`` maps to 255.

:func:`slice_metrics` and :func:`volume_metrics` bundle all five with the per-slice and the
fastMRI per-volume conventions respectively.

Sources: fastMRI ``fastmri/evaluate.py`` (NMSE, PSNR, SSIM); the SFT-KD-Recon code
``git_cardiac/evaluate.py`` (HFN); Sheikh & Bovik, "Image information and visual quality",
IEEE TIP 2006, and its LIVE reference ``vifp_mscale.m`` (VIFp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from skimage.filters import laplace
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "HFN_CLIP_RANGE",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_WINDOW_SIZE",
    "VIF_MIN_SIZE",
    "VIF_NOISE_VARIANCE",
    "VIF_PEAK",
    "hfn",
    "nmse",
    "psnr",
    "slice_and_volume_metrics",
    "slice_metrics",
    "ssim",
    "vif",
    "volume_metrics",
]

SSIM_WINDOW_SIZE = 7
"""Side of the uniform SSIM window (skimage default, used by fastMRI)."""
SSIM_K1 = 0.01
SSIM_K2 = 0.03

HFN_CLIP_RANGE = (0.0, 1.0)
"""The papers' code clips the prediction to [0, 1] (their images are scaled to max 1)."""

VIF_NOISE_VARIANCE = 2.0
"""σ²_N of VIFp, in grey levels² of an 8-bit image (Sheikh & Bovik's reference code)."""
VIF_PEAK = 255.0
"""Intensity the target's ``data_range`` is mapped to before VIF, so σ²_N keeps its meaning."""
VIF_MIN_SIZE = 41
"""Smallest H and W for which all four VIFp scales have at least one valid window."""


def nmse(target: ArrayLike, prediction: ArrayLike) -> float:
    """Normalised mean squared error over the whole array (fastMRI convention).

    ``NMSE = ‖target − prediction‖² / ‖target‖²``, sums over every element, so a volume is
    *not* averaged slice by slice. Scale-invariant; lower is better, 0 for identical inputs.

    Args:
        target: reference image, real, shape ``(H, W)`` or ``(S, H, W)``.
        prediction: reconstruction, same shape as ``target``.

    Returns:
        The NMSE as a Python float.

    Raises:
        ValueError: bad input (see :func:`psnr`) or an all-zero target.

    Example:
        >>> nmse([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 3.0]])  # 1 / 30
        0.03333333333333333
    """
    target_array, prediction_array = _validated_pair(target, prediction)
    target_energy = np.sum(target_array**2)
    if target_energy == 0:
        raise ValueError("nmse: expected a target with non-zero energy, got an all-zero target")
    return float(np.sum((target_array - prediction_array) ** 2) / target_energy)


def psnr(target: ArrayLike, prediction: ArrayLike, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the whole array (fastMRI convention).

    ``PSNR = 10 · log10(data_range² / MSE)`` with ``MSE`` the mean over every element, computed
    by :func:`skimage.metrics.peak_signal_noise_ratio`. ``data_range`` defaults to
    ``target.max()`` of the array passed: for a volume that is the volume's maximum, as in
    fastMRI's ``evaluate.py``; for a slice, the slice's maximum.

    Args:
        target: reference image, real, shape ``(H, W)`` or ``(S, H, W)``.
        prediction: reconstruction, same shape as ``target``.
        data_range: peak value; ``None`` means ``target.max()``. Must be positive.

    Returns:
        PSNR in dB; ``inf`` when ``prediction`` equals ``target`` exactly.

    Raises:
        ValueError: shape mismatch, wrong ndim, empty, complex or non-finite input, or a
            non-positive ``data_range``.

    Example:
        >>> target = [[0.0, 1.0], [1.0, 0.0]]
        >>> round(psnr(target, [[0.0, 1.0], [1.0, 0.1]]), 2)  # MSE = 0.01 / 4
        26.02
        >>> psnr(target, target)
        inf
    """
    target_array, prediction_array = _validated_pair(target, prediction)
    peak = _resolved_data_range(target_array, data_range)
    if np.array_equal(target_array, prediction_array):
        return float("inf")  # MSE = 0; answer it without skimage's divide-by-zero warning
    return float(peak_signal_noise_ratio(target_array, prediction_array, data_range=peak))


def ssim(target: ArrayLike, prediction: ArrayLike, data_range: float | None = None) -> float:
    """Structural similarity, mean over slices (fastMRI convention).

    Each 2-D slice goes through :func:`skimage.metrics.structural_similarity` with a 7×7
    uniform window, ``K1 = 0.01``, ``K2 = 0.03`` and sample covariance (the skimage defaults
    fastMRI relies on), and the SSIM maps are averaged per slice; a volume's SSIM is the mean
    of its slices' SSIMs. ``data_range`` defaults to ``target.max()`` of the *whole* array
    passed, so every slice of a volume uses the volume's maximum, as fastMRI does.

    Args:
        target: reference image, real, shape ``(H, W)`` or ``(S, H, W)`` with ``H, W ≥ 7``.
        prediction: reconstruction, same shape as ``target``.
        data_range: dynamic range; ``None`` means ``target.max()``. Must be positive.

    Returns:
        Mean SSIM, at most 1 (1 for identical inputs).

    Raises:
        ValueError: bad input (see :func:`psnr`) or slices smaller than 7×7.

    Example:
        >>> target = np.outer(np.linspace(0, 1, 16), np.linspace(0, 1, 16))
        >>> ssim(target, target)
        1.0
        >>> ssim(target, 0.5 * target) < 1
        True
    """
    target_array, prediction_array = _validated_pair(target, prediction)
    peak = _resolved_data_range(target_array, data_range)
    _require_min_size(target_array, SSIM_WINDOW_SIZE, "ssim")
    per_slice = [
        structural_similarity(
            target_slice,
            prediction_slice,
            win_size=SSIM_WINDOW_SIZE,
            K1=SSIM_K1,
            K2=SSIM_K2,
            gaussian_weights=False,
            use_sample_covariance=True,
            data_range=peak,
        )
        for target_slice, prediction_slice in zip(*_as_slices(target_array, prediction_array))
    ]
    return float(np.mean(per_slice))


def hfn(
    target: ArrayLike,
    prediction: ArrayLike,
    clip_range: tuple[float, float] | None = HFN_CLIP_RANGE,
) -> float:
    """High-frequency error norm as the papers' code computed it; mean over slices.

    Per slice, with ``L`` the 3×3 discrete Laplacian ``[[0, −1, 0], [−1, 4, −1], [0, −1, 0]]``
    (:func:`skimage.filters.laplace`, ``ksize=3``; reflect boundary) and the prediction first
    clipped to ``clip_range``::

        HFN = Σ (L(prediction) − L(target))² / Σ L(target)²

    This follows ``hfn`` in SFT-KD-Recon ``git_cardiac/evaluate.py`` (the code behind the
    papers' tables): it is **not** square-rooted, unlike the ``‖LoG(x̂ − x)‖₂ / ‖LoG(x)‖₂`` of
    Ravishankar & Bresler (2011), and the Laplacian is 3×3 rather than a 15×15 LoG with σ 1.5.
    Deliberate differences from that code: the clip works on a copy (the original clipped the
    caller's array in place), and the Laplacian covers the 1-pixel border with reflection
    (scikit-image releases of the papers' time zeroed that border when no mask was given; on
    the 150×150 cardiac fixture that changes HFN by under 0.1 %). Scale: the zero-filled 4x
    cardiac fixture slices give HFN ≈ 0.71; the SFT-KD-Recon paper reports 0.28–0.35 for
    trained networks on brain 4x.

    Args:
        target: reference image scaled to max 1 as in the papers, shape ``(H, W)`` or
            ``(S, H, W)``.
        prediction: reconstruction, same shape as ``target``.
        clip_range: ``(low, high)`` applied to ``prediction`` only; ``None`` disables it
            (use that for data not scaled to [0, 1]).

    Returns:
        Mean HFN over slices; 0 for identical inputs, lower is better.

    Raises:
        ValueError: bad input (see :func:`psnr`), or a target slice whose Laplacian is zero
            everywhere (a constant or linear ramp), for which HFN is undefined.

    Example:
        >>> target = np.zeros((5, 5)); target[2, 2] = 1.0  # L(target) energy: 16 + 4 · 1 = 20
        >>> hfn(target, 0.5 * target)  # error energy (0.5)² · 20 = 5
        0.25
    """
    target_array, prediction_array = _validated_pair(target, prediction)
    if clip_range is not None:
        prediction_array = np.clip(prediction_array, *clip_range)  # a copy: never mutate input
    per_slice = []
    for index, (target_slice, prediction_slice) in enumerate(
        zip(*_as_slices(target_array, prediction_array))
    ):
        target_laplacian = laplace(target_slice, ksize=3)
        edge_energy = np.sum(target_laplacian**2)
        if edge_energy == 0:
            raise ValueError(
                f"hfn: expected target slices with edges, slice {index} has a zero Laplacian"
            )
        error = laplace(prediction_slice, ksize=3) - target_laplacian
        per_slice.append(np.sum(error**2) / edge_energy)
    return float(np.mean(per_slice))


def vif(
    target: ArrayLike,
    prediction: ArrayLike,
    data_range: float | None = None,
    peak: float | None = VIF_PEAK,
) -> float:
    """Pixel-domain visual information fidelity (VIFp, Sheikh & Bovik 2006); mean over slices.

    Per slice, the LIVE reference ``vifp_mscale.m`` with ``sigma_nsq = 2``: four scales with
    Gaussian windows of side ``N = 2^(5−s) + 1`` and σ ``N/5``, each coarser scale low-passed
    and decimated by 2, 'valid' filtering, and::

        VIF = Σ_scales Σ_windows log10(1 + g² σ²_T / (σ²_V + σ²_N))
              / Σ_scales Σ_windows log10(1 + σ²_T / σ²_N)

    where ``g`` and ``σ²_V`` are the local gain and distortion variance of
    ``prediction ≈ g · target + V``. Computed for all slices at once with separable filters;
    ``tests/test_metrics.py`` checks it against sewar's ``vifp`` (which reproduces the
    reference line by line, one slice at a time) and a hand-written NumPy version. On images
    smaller than 41×41 the coarse scales run out of valid windows (sewar then returns a
    meaningless number); such images are rejected.

    Scaling: σ²_N = 2 is an absolute variance in 8-bit grey levels², so VIFp depends on the
    intensity scale. On images scaled to max 1 the local variances are ~1e-3 ≪ 2 and VIFp
    stops seeing additive noise (white noise of σ 0.05 on a max-1 cardiac slice still scores
    ≈ 0.99). The convention here is therefore the reference one: both images are multiplied
    by ``peak / data_range`` so the target's range maps to 0–255 (``data_range`` defaults to
    ``target.max()`` of the whole array, as for PSNR/SSIM). ``peak=None`` evaluates the
    arrays as they are, which is what calling sewar on the papers' max-1 images would do
    (the papers published no VIF code).

    Args:
        target: reference image, real, shape ``(H, W)`` or ``(S, H, W)`` with ``H, W ≥ 41``.
        prediction: reconstruction, same shape as ``target``.
        data_range: intensity mapped to ``peak``; ``None`` means ``target.max()``.
        peak: value the ``data_range`` is mapped to; ``None`` disables rescaling.

    Returns:
        Mean VIF over slices: 1 for identical inputs (to ~1e-11, as the reference floors
        σ²_V at 1e-10), 0 when the prediction carries no information about the target;
        values above 1 mean contrast enhancement.

    Raises:
        ValueError: bad input (see :func:`psnr`), slices smaller than 41×41, or a target
            slice with no local variance at any scale (VIF undefined).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> target = rng.random((48, 48))
        >>> round(vif(target, target), 6)
        1.0
        >>> vif(target, target + 0.1 * rng.standard_normal((48, 48))) < 1
        True
    """
    target_array, prediction_array = _validated_pair(target, prediction)
    _require_min_size(target_array, VIF_MIN_SIZE, "vif")
    scale = 1.0 if peak is None else peak / _resolved_data_range(target_array, data_range)
    target_slices, prediction_slices = _as_slices(target_array, prediction_array)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_slice = _vifp_per_slice(_vifp_statistics(target_slices, prediction_slices),
                                    np.full(len(target_slices), scale), VIF_NOISE_VARIANCE)
    flat = np.flatnonzero(~np.isfinite(per_slice))
    if flat.size:
        raise ValueError(f"vif: expected target slices with local variance, slice {flat[0]} is flat")
    return float(np.mean(per_slice))


#: Variances below this count as zero in VIFp (the reference code's constant).
_VIF_EPS = 1e-10


def _gaussian_factor(size: int) -> np.ndarray:
    """One axis of VIFp's Gaussian window of side ``size`` and σ = ``size / 5``, summing to 1.

    The 2-D window ``exp(−(x² + y²) / 2σ²)`` normalised is the outer product of this with
    itself, so each 2-D filtering is two 1-D ones.
    """
    offsets = np.arange(size) - size // 2
    factor = np.exp(-(offsets**2) / (2 * (size / 5) ** 2))
    return factor / factor.sum()


def _filter_valid(images: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Gaussian filtering of a stack ``(S, H, W)``, keeping only the windows inside the image ('valid')."""
    margin = len(factor) // 2
    rows = ndimage.correlate1d(images, factor, axis=1, mode="constant")[:, margin:-margin]
    return ndimage.correlate1d(rows, factor, axis=2, mode="constant")[:, :, margin:-margin]


@dataclass(frozen=True)
class _LocalStatistics:
    """One VIFp scale's local (Gaussian-window) variances and covariance of a stack ``(S, h, w)``."""

    variance_target: np.ndarray
    variance_prediction: np.ndarray
    covariance: np.ndarray


def _vifp_statistics(target: np.ndarray, prediction: np.ndarray) -> list[_LocalStatistics]:
    """The local statistics of the four scales of ``vifp_mscale.m`` (windows of side 17, 9, 5, 3),
    each coarser scale low-passed and decimated by 2. They scale with the square of the
    intensity, so one set serves every rescaling (:func:`_vifp_per_slice`)."""
    scales = []
    for scale in range(4):
        factor = _gaussian_factor(2 ** (4 - scale) + 1)
        if scale > 0:
            target, prediction = (_filter_valid(image, factor)[:, ::2, ::2] for image in (target, prediction))
        mean_t, mean_p = _filter_valid(target, factor), _filter_valid(prediction, factor)
        scales.append(_LocalStatistics(_filter_valid(target * target, factor) - mean_t**2,
                                       _filter_valid(prediction * prediction, factor) - mean_p**2,
                                       _filter_valid(target * prediction, factor) - mean_t * mean_p))
    return scales


def _vifp_per_slice(statistics: list[_LocalStatistics], intensity_scale: np.ndarray, noise_variance: float) -> np.ndarray:
    """VIFp of every slice of a stack at once, slice ``i``'s images multiplied by
    ``intensity_scale[i]``; NaN for a slice without local variance. The rules of
    ``vifp_mscale.m`` for flat windows and negative gains apply in its order."""
    squared = (np.asarray(intensity_scale, dtype=np.float64) ** 2)[:, None, None]
    numerator, denominator = np.zeros(len(squared)), np.zeros(len(squared))
    for local in statistics:
        variance_t = np.maximum(squared * local.variance_target, 0)
        variance_p = np.maximum(squared * local.variance_prediction, 0)
        covariance = squared * local.covariance
        gain = covariance / (variance_t + _VIF_EPS)
        distortion = variance_p - gain * covariance
        flat_target, flat_prediction = variance_t < _VIF_EPS, variance_p < _VIF_EPS
        gain[flat_target], distortion[flat_target], variance_t[flat_target] = 0, variance_p[flat_target], 0
        gain[flat_prediction], distortion[flat_prediction] = 0, 0
        negative = gain < 0
        distortion[negative], gain[negative] = variance_p[negative], 0
        distortion = np.maximum(distortion, _VIF_EPS)
        numerator += np.log10(1 + gain**2 * variance_t / (distortion + noise_variance)).sum(axis=(1, 2))
        denominator += np.log10(1 + variance_t / noise_variance).sum(axis=(1, 2))
    return numerator / denominator


def slice_metrics(target: ArrayLike, prediction: ArrayLike) -> dict[str, float]:
    """All five metrics for one 2-D slice, ``data_range`` = that slice's target maximum.

    PSNR and SSIM use ``target.max()`` of the slice; VIF maps it to 255; HFN clips the
    prediction to [0, 1] (the papers' per-slice recipe, images scaled to max 1).

    Args:
        target: reference slice, real, shape ``(H, W)`` with ``H, W ≥ 41``.
        prediction: reconstruction, shape ``(H, W)``.

    Returns:
        ``{"psnr", "ssim", "nmse", "hfn", "vif"}`` as floats.

    Raises:
        ValueError: input not 2-D, or any error of the single metrics.

    Example:
        >>> target = np.random.default_rng(1).random((48, 48))
        >>> {name: round(value, 6) for name, value in slice_metrics(target, target).items()}
        {'psnr': inf, 'ssim': 1.0, 'nmse': 0.0, 'hfn': 0.0, 'vif': 1.0}
    """
    target_array, prediction_array = _validated_pair(target, prediction, allowed_ndims=(2,))
    return _all_metrics(target_array, prediction_array)


def volume_metrics(target: ArrayLike, prediction: ArrayLike) -> dict[str, float]:
    """All five metrics for one volume with fastMRI's per-volume conventions.

    ``data_range`` = the volume's target maximum for PSNR, SSIM and VIF; NMSE and PSNR over
    the whole volume; SSIM, HFN and VIF are means over slices. Report a data set as the mean
    (± std) of these per-volume numbers, as fastMRI does.

    Args:
        target: reference volume, real, shape ``(S, H, W)``, slices first, ``H, W ≥ 41``.
        prediction: reconstruction, shape ``(S, H, W)``.

    Returns:
        ``{"psnr", "ssim", "nmse", "hfn", "vif"}`` as floats.

    Raises:
        ValueError: input not 3-D, or any error of the single metrics.

    Example:
        >>> target = np.random.default_rng(2).random((2, 48, 48))
        >>> volume_metrics(target, target)["ssim"]
        1.0
    """
    target_array, prediction_array = _validated_pair(target, prediction, allowed_ndims=(3,))
    return _all_metrics(target_array, prediction_array)


def slice_and_volume_metrics(target: ArrayLike, prediction: ArrayLike) -> tuple[list[dict[str, float]], dict[str, float]]:
    """:func:`slice_metrics` of every slice of a volume and :func:`volume_metrics` of the volume, at once.

    The same numbers as calling those functions slice by slice and once on the volume (the
    tests hold them to 1e-10), computed for the whole stack together: one validation, SSIM's
    five filtered images shared by the per-slice and the per-volume data ranges (only its
    constants ``C1``, ``C2`` differ), HFN's Laplacians computed once (HFN does not depend on
    the data range), VIF's local statistics computed once (they scale with the square of the
    intensity), and NumPy operations over all slices instead of a loop.

    Args:
        target: reference volume, real, shape ``(S, H, W)``, slices first, ``H, W ≥ 41``.
        prediction: reconstruction, shape ``(S, H, W)``.

    Returns:
        ``(rows, volume)``: one ``{"psnr", "ssim", "nmse", "hfn", "vif"}`` dict per slice (each
        slice's own target maximum as its data range), and one for the volume (the volume's).

    Raises:
        ValueError: as :func:`slice_metrics` would for the first slice it fails on.

    Example:
        >>> target = np.random.default_rng(2).random((2, 48, 48))
        >>> rows, volume = slice_and_volume_metrics(target, target)
        >>> len(rows), rows[0]["ssim"], volume["nmse"]
        (2, 1.0, 0.0)
    """
    target_array, prediction_array = _validated_pair(target, prediction, allowed_ndims=(3,))
    _require_min_size(target_array, VIF_MIN_SIZE, "vif")
    slice_peaks = target_array.max(axis=(1, 2))
    if np.any(slice_peaks <= 0):
        index = int(np.flatnonzero(slice_peaks <= 0)[0])
        raise ValueError(f"slice {index}: expected a target with a positive maximum to default data_range to, "
                         f"got max {slice_peaks[index]}")
    volume_peaks = np.full_like(slice_peaks, _resolved_data_range(target_array, None))
    energy = _energy_metrics(target_array, prediction_array, slice_peaks)
    ssim_slices, ssim_volume = _ssim_per_slice(target_array, prediction_array, [slice_peaks, volume_peaks])
    hfn_slices = _hfn_per_slice(target_array, prediction_array)
    statistics = _vifp_statistics(target_array, prediction_array)
    per_slice = {"psnr": energy.slice_psnr, "ssim": ssim_slices, "nmse": energy.slice_nmse, "hfn": hfn_slices,
                 "vif": _vif_per_slice(statistics, slice_peaks)}
    volume = {"psnr": energy.volume_psnr, "ssim": ssim_volume.mean(), "nmse": energy.volume_nmse,
              "hfn": hfn_slices.mean(), "vif": _vif_per_slice(statistics, volume_peaks).mean()}
    rows = [{name: float(per_slice[name][i]) for name in METRIC_NAMES} for i in range(len(target_array))]
    return rows, {name: float(volume[name]) for name in METRIC_NAMES}


#: The five metrics, in the order of every row.
METRIC_NAMES = ("psnr", "ssim", "nmse", "hfn", "vif")


@dataclass(frozen=True)
class _EnergyMetrics:
    slice_psnr: np.ndarray
    slice_nmse: np.ndarray
    volume_psnr: float
    volume_nmse: float


def _energy_metrics(target: np.ndarray, prediction: np.ndarray, slice_peaks: np.ndarray) -> _EnergyMetrics:
    """PSNR and NMSE of every slice (its own peak) and of the volume (whole-volume sums)."""
    error = ((target - prediction) ** 2).sum(axis=(1, 2))
    energy = (target**2).sum(axis=(1, 2))
    if np.any(energy == 0):
        raise ValueError("nmse: expected a target with non-zero energy, got an all-zero target")
    pixels = target.shape[1] * target.shape[2]
    with np.errstate(divide="ignore"):  # an exact reconstruction has infinite PSNR
        slice_psnr = 10 * np.log10(slice_peaks**2 / (error / pixels))
        volume_psnr = 10 * np.log10(target.max() ** 2 / (error.sum() / (len(target) * pixels)))
    return _EnergyMetrics(slice_psnr, error / energy, float(volume_psnr), float(error.sum() / energy.sum()))


def _ssim_per_slice(target: np.ndarray, prediction: np.ndarray, data_ranges: list[np.ndarray]) -> list[np.ndarray]:
    """SSIM of every slice for each array of per-slice data ranges, as
    :func:`skimage.metrics.structural_similarity` computes it slice by slice (uniform 7×7
    window, sample covariance, reflected borders, the filter radius cropped before the mean)."""
    window = (1, SSIM_WINDOW_SIZE, SSIM_WINDOW_SIZE)  # size 1 along the slices: each slice on its own
    mean_t, mean_p = ndimage.uniform_filter(target, window), ndimage.uniform_filter(prediction, window)
    covariance_norm = SSIM_WINDOW_SIZE**2 / (SSIM_WINDOW_SIZE**2 - 1)
    variance_t = covariance_norm * (ndimage.uniform_filter(target * target, window) - mean_t * mean_t)
    variance_p = covariance_norm * (ndimage.uniform_filter(prediction * prediction, window) - mean_p * mean_p)
    covariance = covariance_norm * (ndimage.uniform_filter(target * prediction, window) - mean_t * mean_p)
    pad = (SSIM_WINDOW_SIZE - 1) // 2
    results = []
    for ranges in data_ranges:
        c1 = ((SSIM_K1 * ranges) ** 2)[:, None, None]
        c2 = ((SSIM_K2 * ranges) ** 2)[:, None, None]
        ssim_map = ((2 * mean_t * mean_p + c1) * (2 * covariance + c2)
                    / ((mean_t**2 + mean_p**2 + c1) * (variance_t + variance_p + c2)))
        results.append(ssim_map[:, pad:-pad, pad:-pad].mean(axis=(1, 2), dtype=np.float64))
    return results


def _hfn_per_slice(target: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """:func:`hfn` of every slice (prediction clipped to :data:`HFN_CLIP_RANGE`)."""
    kernel = np.array([[[0, -1, 0], [-1, 4, -1], [0, -1, 0]]], dtype=np.float64)  # skimage's laplace, ksize 3
    target_laplacian = ndimage.convolve(target, kernel)
    edge_energy = (target_laplacian**2).sum(axis=(1, 2))
    if np.any(edge_energy == 0):
        index = int(np.flatnonzero(edge_energy == 0)[0])
        raise ValueError(f"hfn: expected target slices with edges, slice {index} has a zero Laplacian")
    error = ndimage.convolve(np.clip(prediction, *HFN_CLIP_RANGE), kernel) - target_laplacian
    return (error**2).sum(axis=(1, 2)) / edge_energy


def _vif_per_slice(statistics: list[_LocalStatistics], data_ranges: np.ndarray) -> np.ndarray:
    """:func:`vif` of every slice, slice ``i`` rescaled so ``data_ranges[i]`` maps to :data:`VIF_PEAK`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_slice = _vifp_per_slice(statistics, VIF_PEAK / data_ranges, VIF_NOISE_VARIANCE)
    flat = np.flatnonzero(~np.isfinite(per_slice))
    if flat.size:
        raise ValueError(f"vif: expected target slices with local variance, slice {flat[0]} is flat")
    return per_slice


def _all_metrics(target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """The five metrics with default data ranges: the max of whatever array is passed."""
    return {
        "psnr": psnr(target, prediction),
        "ssim": ssim(target, prediction),
        "nmse": nmse(target, prediction),
        "hfn": hfn(target, prediction),
        "vif": vif(target, prediction),
    }


_SHAPE_WORDS = {2: "a 2-D slice (H, W)", 3: "a 3-D volume (S, H, W)"}


def _validated_pair(
    target: ArrayLike, prediction: ArrayLike, allowed_ndims: tuple[int, ...] = (2, 3)
) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float64 arrays, or a one-line ValueError saying what was expected."""
    expected = " or ".join(_SHAPE_WORDS[ndim] for ndim in allowed_ndims)
    arrays = []
    for name, value in (("target", target), ("prediction", prediction)):
        array = np.asarray(value)
        if np.iscomplexobj(array):
            raise ValueError(f"{name}: expected a real magnitude image, got complex; take abs()")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"{name}: expected a numeric array, got dtype {array.dtype}")
        if array.ndim not in allowed_ndims:
            raise ValueError(f"{name}: expected {expected}, got shape {array.shape}")
        if array.size == 0:
            raise ValueError(f"{name}: expected a non-empty array, got shape {array.shape}")
        array = array.astype(np.float64)  # integer inputs must not switch skimage's range logic
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: expected finite values, found NaN or inf")
        arrays.append(array)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"expected target and prediction of the same shape, "
            f"got {arrays[0].shape} and {arrays[1].shape}"
        )
    return arrays[0], arrays[1]


def _resolved_data_range(target: np.ndarray, data_range: float | None) -> float:
    """``data_range`` or, by default, the target's maximum; positive and finite either way."""
    if data_range is None:
        data_range = float(target.max())
        if data_range <= 0:
            raise ValueError(
                f"expected a target with a positive maximum to default data_range to, "
                f"got max {data_range}; pass data_range explicitly"
            )
    elif not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"expected a positive finite data_range, got {data_range}")
    return float(data_range)


def _require_min_size(target: np.ndarray, min_size: int, metric: str) -> None:
    height, width = target.shape[-2:]
    if height < min_size or width < min_size:
        raise ValueError(
            f"{metric}: expected slices of at least {min_size}×{min_size}, got {height}×{width}"
        )


def _as_slices(target: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """View a slice ``(H, W)`` as a one-slice volume ``(1, H, W)``; volumes pass through."""
    if target.ndim == 2:
        return target[np.newaxis], prediction[np.newaxis]
    return target, prediction
