"""Metrics against references computed independently of ``kdrecon.evaluation.metrics``.

Data: the eight real cardiac frames of ``conftest.real_slices`` and their zero-filled 4x
reconstruction with the papers' un-centred mask (spec §2). References are hand-written NumPy
(PSNR, NMSE, the 3×3 Laplacian of HFN, a from-the-paper VIFp) or the libraries called directly
with explicit parameters (skimage SSIM, sewar VIFp).
"""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from sewar.full_ref import vifp as sewar_vifp
from skimage.metrics import structural_similarity

from kdrecon.evaluation import metrics
from kdrecon.evaluation.metrics import (
    hfn,
    nmse,
    psnr,
    slice_metrics,
    ssim,
    vif,
    volume_metrics,
)

METRIC_KEYS = {"psnr", "ssim", "nmse", "hfn", "vif"}


def zero_filled(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``|F⁻¹(M ⊙ F x)|`` with the orthonormal un-centred FFT, slice by slice."""
    return np.abs(np.fft.ifft2(mask * np.fft.fft2(images, norm="ortho"), norm="ortho"))


@pytest.fixture(scope="module")
def target_volume(real_slices: np.ndarray) -> np.ndarray:
    """The real slices with unequal brightness, so volume max ≠ every slice's max (= 1)."""
    return real_slices * np.linspace(0.55, 1.0, len(real_slices))[:, None, None]


@pytest.fixture(scope="module")
def zero_filled_volume(target_volume: np.ndarray, cardiac_mask_4x: np.ndarray) -> np.ndarray:
    return zero_filled(target_volume, cardiac_mask_4x)


@pytest.fixture(scope="module")
def zero_filled_slices(real_slices: np.ndarray, cardiac_mask_4x: np.ndarray) -> np.ndarray:
    return zero_filled(real_slices, cardiac_mask_4x)


# ---------------------------------------------------------------- independent references


def psnr_by_hand(target: np.ndarray, prediction: np.ndarray, peak: float) -> float:
    return 10 * np.log10(peak**2 / np.mean((target - prediction) ** 2))


def laplacian_by_hand(image: np.ndarray) -> np.ndarray:
    """4·centre − 4 neighbours, edges mirrored (NumPy 'symmetric' = scipy 'reflect')."""
    padded = np.pad(image, 1, mode="symmetric")
    centre = padded[1:-1, 1:-1]
    neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
    return 4 * centre - neighbours


def hfn_by_hand(target: np.ndarray, prediction: np.ndarray) -> float:
    values = []
    for target_slice, prediction_slice in zip(target, prediction):
        target_edges = laplacian_by_hand(target_slice)
        prediction_edges = laplacian_by_hand(np.clip(prediction_slice, 0, 1))
        values.append(np.sum((prediction_edges - target_edges) ** 2) / np.sum(target_edges**2))
    return float(np.mean(values))


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    half = size // 2
    axis = np.arange(-half, half + 1, dtype=float)
    window = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma**2))
    window[window < np.finfo(float).eps * window.max()] = 0
    return window / window.sum()


def filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    return np.einsum("ijkl,kl->ij", sliding_window_view(image, window.shape), window)


def vifp_by_hand(reference: np.ndarray, distorted: np.ndarray, noise_variance: float = 2.0):
    """VIFp written from Sheikh & Bovik (2006) and the rules of the LIVE ``vifp_mscale.m``."""
    eps = 1e-10
    information, reference_information = 0.0, 0.0
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1
        window = gaussian_window(size, size / 5)
        if scale > 1:  # low-pass then decimate by 2
            reference = filter_valid(reference, window)[::2, ::2]
            distorted = filter_valid(distorted, window)[::2, ::2]
        mean_ref, mean_dist = filter_valid(reference, window), filter_valid(distorted, window)
        var_ref = np.maximum(filter_valid(reference**2, window) - mean_ref**2, 0)
        var_dist = np.maximum(filter_valid(distorted**2, window) - mean_dist**2, 0)
        covariance = filter_valid(reference * distorted, window) - mean_ref * mean_dist
        gain = covariance / (var_ref + eps)
        distortion_var = var_dist - gain * covariance
        flat_ref, flat_dist = var_ref < eps, var_dist < eps
        gain[flat_ref], distortion_var[flat_ref] = 0, var_dist[flat_ref]
        var_ref = np.where(flat_ref, 0, var_ref)
        gain[flat_dist], distortion_var[flat_dist] = 0, 0
        negative = gain < 0
        distortion_var[negative], gain[negative] = var_dist[negative], 0
        distortion_var = np.maximum(distortion_var, eps)
        information += np.sum(
            np.log10(1 + gain**2 * var_ref / (distortion_var + noise_variance))
        )
        reference_information += np.sum(np.log10(1 + var_ref / noise_variance))
    return information / reference_information


# ------------------------------------------------------------------------------ NMSE


def test_nmse_of_volume_is_energy_ratio_over_whole_volume(target_volume, zero_filled_volume):
    pairs = list(zip(target_volume, zero_filled_volume))
    error_energy = sum(np.linalg.norm(t - p) ** 2 for t, p in pairs)
    target_energy = sum(np.linalg.norm(t) ** 2 for t in target_volume)
    expected = error_energy / target_energy

    assert nmse(target_volume, zero_filled_volume) == pytest.approx(expected, rel=1e-12)
    per_slice_mean = np.mean([np.linalg.norm(t - p) ** 2 / np.linalg.norm(t) ** 2
                              for t, p in pairs])
    assert abs(expected - per_slice_mean) > 1e-4  # the convention is visible on this volume


def test_nmse_small_case_and_identity(real_slices):
    assert nmse([[3.0, 4.0]], [[3.0, 0.0]]) == pytest.approx(16 / 25)
    assert nmse(real_slices[0], real_slices[0]) == 0.0


# ------------------------------------------------------------------------------ PSNR


def test_psnr_slice_uses_slice_max(real_slices, zero_filled_slices):
    target, prediction = real_slices[3] * 0.7, zero_filled_slices[3] * 0.7
    expected = psnr_by_hand(target, prediction, peak=target.max())
    assert psnr(target, prediction) == pytest.approx(expected, abs=1e-10)


def test_psnr_volume_uses_volume_max_and_whole_volume_mse(target_volume, zero_filled_volume):
    expected = psnr_by_hand(target_volume, zero_filled_volume, peak=target_volume.max())
    assert psnr(target_volume, zero_filled_volume) == pytest.approx(expected, abs=1e-10)


def test_psnr_explicit_data_range(real_slices, zero_filled_slices):
    expected = psnr_by_hand(real_slices, zero_filled_slices, peak=2.0)
    assert psnr(real_slices, zero_filled_slices, data_range=2.0) == pytest.approx(expected)


def test_psnr_of_identical_images_is_inf_without_warning(real_slices):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert psnr(real_slices, real_slices.copy()) == float("inf")


# ------------------------------------------------------------------------------ SSIM


def test_ssim_slice_matches_skimage_with_explicit_parameters(real_slices, zero_filled_slices):
    target, prediction = real_slices[2], zero_filled_slices[2]
    expected = structural_similarity(
        target, prediction, win_size=7, K1=0.01, K2=0.03, gaussian_weights=False,
        use_sample_covariance=True, data_range=target.max(),
    )
    assert ssim(target, prediction) == pytest.approx(expected, abs=1e-12)


def test_ssim_volume_is_mean_over_slices_with_volume_max(target_volume, zero_filled_volume):
    volume_max = target_volume.max()
    expected = np.mean([
        structural_similarity(t, p, win_size=7, K1=0.01, K2=0.03, data_range=volume_max)
        for t, p in zip(target_volume, zero_filled_volume)
    ])
    per_slice_max = np.mean([
        structural_similarity(t, p, win_size=7, K1=0.01, K2=0.03, data_range=t.max())
        for t, p in zip(target_volume, zero_filled_volume)
    ])
    measured = ssim(target_volume, zero_filled_volume)
    assert measured == pytest.approx(expected, abs=1e-12)
    assert abs(measured - per_slice_max) > 1e-4


def test_ssim_of_identical_images_is_one(real_slices):
    assert ssim(real_slices, real_slices.copy()) == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------- HFN


def test_hfn_matches_hand_made_laplacian(real_slices, zero_filled_slices):
    expected = hfn_by_hand(real_slices, zero_filled_slices)
    assert hfn(real_slices, zero_filled_slices) == pytest.approx(expected, rel=1e-12)
    assert 0.5 < expected < 0.9  # ZF 4x: far worse than trained networks' 0.28–0.35


def test_hfn_single_point_by_hand():
    target = np.zeros((5, 5))
    target[2, 2] = 1.0  # Laplacian: 4 at the point, −1 at its 4 neighbours → energy 20
    prediction = np.zeros((5, 5))
    prediction[2, 2] = 0.5  # error Laplacian: −2, +0.5 ×4 → energy 4 + 1 = 5
    assert hfn(target, prediction) == pytest.approx(5 / 20)


def test_hfn_is_quadratic_in_a_linear_blend(real_slices, zero_filled_slices):
    # halfway between target and ZF stays in [0, 1], so L(blend) − L(target) = ½ (L(ZF) − L(target))
    blend = 0.5 * (real_slices + zero_filled_slices)
    assert hfn(real_slices, blend) == pytest.approx(
        0.25 * hfn_by_hand(real_slices, zero_filled_slices), rel=1e-12
    )


def test_hfn_clips_a_copy_of_the_prediction(real_slices):
    target = real_slices[0]
    prediction = target.copy()
    prediction[60:70, 60:70] = 3.0
    prediction[10:12, 10:12] = -1.0
    untouched = prediction.copy()

    expected = hfn_by_hand(target[None], prediction[None])
    assert hfn(target, prediction) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(prediction, untouched)
    assert hfn(target, prediction, clip_range=None) > expected


def test_hfn_of_identical_images_is_zero(real_slices):
    assert hfn(real_slices, real_slices.copy()) == 0.0


# ------------------------------------------------------------------------------- VIF


def test_sewar_vifp_agrees_with_independent_implementation(real_slices, zero_filled_slices):
    for target, prediction in zip(real_slices[:3], zero_filled_slices[:3]):
        scale = 255 / target.max()
        expected = vifp_by_hand(scale * target, scale * prediction)
        assert vif(target, prediction) == pytest.approx(expected, rel=1e-10)


def test_vif_rescales_volume_max_to_255_then_averages_slices(target_volume, zero_filled_volume):
    scale = 255 / target_volume.max()
    expected = np.mean([
        sewar_vifp(scale * t, scale * p, sigma_nsq=2)
        for t, p in zip(target_volume, zero_filled_volume)
    ])
    assert vif(target_volume, zero_filled_volume) == pytest.approx(expected, rel=1e-12)


def test_vif_of_a_stack_at_once_equals_sewar_slice_by_slice_on_real_and_distorted_slices(real_slices, zero_filled_slices):
    blurred = np.stack([ndimage.gaussian_filter(t, 1.5) for t in real_slices])
    noisy = real_slices + 0.02 * np.random.default_rng(3).standard_normal(real_slices.shape)
    for prediction in (zero_filled_slices, blurred, noisy):
        for target, distorted in zip(real_slices, prediction):  # each slice its own max → 255
            scale = 255 / target.max()
            assert vif(target, distorted) == pytest.approx(sewar_vifp(scale * target, scale * distorted, sigma_nsq=2),
                                                           rel=1e-9)


def test_vif_without_rescaling_is_sewar_on_raw_values(real_slices, zero_filled_slices):
    expected = sewar_vifp(real_slices[1], zero_filled_slices[1], sigma_nsq=2)
    assert vif(real_slices[1], zero_filled_slices[1], peak=None) == pytest.approx(expected)


def test_vif_of_identical_images_is_one_and_ignores_offset(real_slices):
    target = real_slices[4]
    assert vif(target, target.copy()) == pytest.approx(1.0, abs=1e-9)
    assert vif(target, target + 0.1) == pytest.approx(1.0, abs=1e-9)


def test_vif_decreases_with_noise(real_slices):
    target = real_slices[5]
    noise = np.random.default_rng(0).standard_normal(target.shape)
    scores = [vif(target, target + sigma * noise) for sigma in (0.0, 0.005, 0.01, 0.02, 0.05)]
    assert all(a > b for a, b in zip(scores, scores[1:]))
    assert scores[-1] < 0.5


def test_vif_of_a_constant_prediction_is_zero(real_slices):
    target = real_slices[6]
    assert vif(target, np.full_like(target, target.mean())) == 0.0


def test_vif_checkerboard_gain_by_hand():
    # A 0/1 checkerboard: every 17×17 window has variance (255/2)², the decimated coarser
    # scales are constant (zero variance), and prediction = a·target has gain a, no noise:
    # VIF = log10(1 + a²·127.5²/2) / log10(1 + 127.5²/2).
    rows, cols = np.indices((64, 64))
    target = ((rows + cols) % 2).astype(float)
    for gain in (0.25, 0.5, 2.0):
        expected = np.log10(1 + gain**2 * 127.5**2 / 2) / np.log10(1 + 127.5**2 / 2)
        assert vif(target, gain * target) == pytest.approx(expected, rel=1e-8)


# ----------------------------------------------------------------------- bundles


def test_slice_metrics_use_the_slice_max(target_volume, zero_filled_volume):
    target, prediction = target_volume[0], zero_filled_volume[0]  # max 0.55, not 1
    scale = 255 / target.max()
    result = slice_metrics(target, prediction)

    assert set(result) == METRIC_KEYS
    assert all(isinstance(value, float) for value in result.values())
    assert result["psnr"] == pytest.approx(psnr_by_hand(target, prediction, target.max()))
    assert result["ssim"] == pytest.approx(
        structural_similarity(target, prediction, win_size=7, data_range=target.max())
    )
    assert result["nmse"] == pytest.approx(
        np.sum((target - prediction) ** 2) / np.sum(target**2)
    )
    assert result["hfn"] == pytest.approx(hfn_by_hand(target[None], prediction[None]))
    assert result["vif"] == pytest.approx(sewar_vifp(scale * target, scale * prediction))


def test_volume_metrics_use_fastmri_volume_conventions(target_volume, zero_filled_volume):
    volume_max = target_volume.max()
    scale = 255 / volume_max
    result = volume_metrics(target_volume, zero_filled_volume)

    assert set(result) == METRIC_KEYS
    assert result["psnr"] == pytest.approx(
        psnr_by_hand(target_volume, zero_filled_volume, volume_max)
    )
    assert result["ssim"] == pytest.approx(np.mean([
        structural_similarity(t, p, win_size=7, data_range=volume_max)
        for t, p in zip(target_volume, zero_filled_volume)
    ]))
    assert result["nmse"] == pytest.approx(
        np.sum((target_volume - zero_filled_volume) ** 2) / np.sum(target_volume**2)
    )
    assert result["hfn"] == pytest.approx(hfn_by_hand(target_volume, zero_filled_volume))
    assert result["vif"] == pytest.approx(np.mean([
        sewar_vifp(scale * t, scale * p) for t, p in zip(target_volume, zero_filled_volume)
    ]))


# --------------------------------------------------------------------- bad input

ALL_METRICS = [nmse, psnr, ssim, hfn, vif]


@pytest.mark.parametrize("metric", ALL_METRICS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("target", "prediction", "message"),
    [
        (np.ones((50, 50)), np.ones((50, 49)), "same shape"),
        (np.ones((50, 50)), np.full((50, 50), np.nan), "finite"),
        (np.full((50, 50), np.inf), np.ones((50, 50)), "finite"),
        (np.ones(50), np.ones(50), "2-D slice"),
        (np.ones((2, 2, 50, 50)), np.ones((2, 2, 50, 50)), "3-D volume"),
        (np.ones((0, 50, 50)), np.ones((0, 50, 50)), "non-empty"),
        (np.ones((50, 50), complex), np.ones((50, 50)), "real"),
    ],
    ids=["shape", "nan", "inf", "1d", "4d", "empty", "complex"],
)
def test_bad_input_raises_one_line_value_error(metric, target, prediction, message):
    with pytest.raises(ValueError, match=message) as raised:
        metric(target, prediction)
    assert "\n" not in str(raised.value)


def test_bundles_check_ndim(real_slices):
    with pytest.raises(ValueError, match=r"2-D slice \(H, W\), got shape \(8, 150, 150\)"):
        slice_metrics(real_slices, real_slices)
    with pytest.raises(ValueError, match=r"3-D volume \(S, H, W\), got shape \(150, 150\)"):
        volume_metrics(real_slices[0], real_slices[0])


def test_undefined_cases_raise(real_slices):
    with pytest.raises(ValueError, match="41×41"):
        vif(real_slices[0, :40, :40], real_slices[0, :40, :40])
    with pytest.raises(ValueError, match="7×7"):
        ssim(real_slices[0, :6, :6], real_slices[0, :6, :6])
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="data_range"):
        psnr(real_slices[0], real_slices[0], data_range=-1.0)
    with pytest.raises(ValueError, match="non-zero energy"):
        nmse(np.zeros((8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="zero Laplacian"):
        hfn(np.full((8, 8), 0.5), real_slices[0, :8, :8])
    with pytest.raises(ValueError, match="flat"):
        vif(np.full((48, 48), 0.5), real_slices[0, :48, :48], data_range=1.0)


def test_docstring_examples_run():
    failures, attempted = doctest.testmod(metrics, raise_on_error=False, verbose=False)
    assert attempted > 0 and failures == 0


def test_slice_and_volume_metrics_at_once_equal_the_references(target_volume, zero_filled_volume):
    """The batched path of evaluation: every slice's five metrics at its own maximum and the
    volume's at the volume maximum, against skimage's SSIM, sewar's VIFp and hand-made formulas."""
    from kdrecon.evaluation.metrics import slice_and_volume_metrics

    rows, volume = slice_and_volume_metrics(target_volume, zero_filled_volume)
    assert len(rows) == len(target_volume) and all(set(row) == METRIC_KEYS for row in rows)
    for row, t, p in zip(rows, target_volume, zero_filled_volume):
        peak = t.max()
        expected = {
            "psnr": psnr_by_hand(t, p, peak),
            "ssim": structural_similarity(t, p, win_size=7, data_range=peak),
            "nmse": np.sum((t - p) ** 2) / np.sum(t**2),
            "hfn": hfn_by_hand(t[None], p[None]),
            "vif": sewar_vifp(255 / peak * t, 255 / peak * p),
        }
        assert row == pytest.approx(expected, rel=1e-10)
    assert volume == pytest.approx(volume_metrics(target_volume, zero_filled_volume), rel=1e-10)
    identical_rows, identical = slice_and_volume_metrics(target_volume, target_volume)
    assert identical["psnr"] == np.inf and identical["ssim"] == pytest.approx(1.0) and identical_rows[0]["nmse"] == 0


def test_slice_and_volume_metrics_name_the_slice_that_fails(target_volume):
    from kdrecon.evaluation.metrics import slice_and_volume_metrics

    flat = target_volume.copy()
    flat[3] = 0.0
    with pytest.raises(ValueError, match="slice 3: expected a target with a positive maximum"):
        slice_and_volume_metrics(flat, target_volume)
    with pytest.raises(ValueError, match=r"expected a 3-D volume \(S, H, W\)"):
        slice_and_volume_metrics(target_volume[0], target_volume[0])
