"""Data consistency as a matrix product (kdrecon.mri.consistency) against NumPy's FFT on real slices."""

import numpy as np
import pytest
import torch

from kdrecon.mri.consistency import MATRIX_LENGTH_LIMIT, DataConsistency
from kdrecon.mri.undersample import data_consistency, undersample


def numpy_consistency(image: np.ndarray, kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``Re F⁻¹(M k₀ + (1 − M) F x)`` with NumPy's FFT, per slice, in float64."""
    merged = np.where(mask > 0, kspace, np.fft.fft2(image, norm="ortho"))
    return np.fft.ifft2(merged, norm="ortho").real


def measurements(slices: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    kspace, zero_filled = undersample(torch.from_numpy(slices).float(), torch.from_numpy(mask).float())
    return kspace, zero_filled


@pytest.mark.parametrize("lines", ["rows", "columns"])
def test_line_mask_consistency_equals_numpys_fft(real_slices, cardiac_mask_4x, lines):
    mask = cardiac_mask_4x if lines == "rows" else np.ascontiguousarray(cardiac_mask_4x.T)
    slices = real_slices[:3]
    kspace, zero_filled = measurements(slices, mask)
    image = zero_filled[:, None] * 0.9 + 0.05  # a network output that is not consistent yet
    consistency = DataConsistency(kspace, torch.from_numpy(mask).float())
    assert consistency.uses_matrix
    expected = numpy_consistency(image[:, 0].double().numpy(), kspace.numpy(), mask)
    np.testing.assert_allclose(consistency(image)[:, 0].numpy(), expected, atol=2e-6)
    assert consistency(image[:, 0]).shape == (3, 150, 150)  # (B, H, W) images too


def test_matrix_form_runs_in_float32_under_autocast(real_slices, cardiac_mask_4x):
    kspace, zero_filled = measurements(real_slices[:2], cardiac_mask_4x)
    mask = torch.from_numpy(cardiac_mask_4x).float()
    image = zero_filled[:, None].to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = DataConsistency(kspace, mask)(image)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, data_consistency(image, kspace, mask), atol=2e-6, rtol=0)


def test_other_masks_and_complex_images_keep_the_exact_fft_form(real_slices, cardiac_mask_4x):
    rng = np.random.default_rng(0)
    scattered = (rng.random((150, 150)) < 0.3).astype(np.float32)  # not whole lines
    kspace, zero_filled = measurements(real_slices[:2], scattered)
    consistency = DataConsistency(kspace, torch.from_numpy(scattered))
    assert not consistency.uses_matrix
    assert torch.equal(consistency(zero_filled[:, None]), data_consistency(zero_filled[:, None], kspace, torch.from_numpy(scattered)))
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, _ = measurements(real_slices[:2], cardiac_mask_4x)
    complex_image = torch.randn(2, 2, 150, 150)
    assert torch.equal(DataConsistency(kspace, mask)(complex_image), data_consistency(complex_image, kspace, mask))
    assert not DataConsistency(kspace, mask, matrix=False).uses_matrix


def test_long_lines_keep_the_fft_form():
    size = MATRIX_LENGTH_LIMIT + 2
    mask = torch.zeros(size, 8)
    mask[::4] = 1
    assert not DataConsistency(torch.zeros(1, size, 8, dtype=torch.complex64), mask).uses_matrix
    assert DataConsistency(torch.zeros(1, 8, size, dtype=torch.complex64), mask.T.contiguous()).uses_matrix is False


def test_a_mask_changed_in_place_is_not_served_from_the_cache(real_slices, cardiac_mask_4x):
    mask = torch.from_numpy(cardiac_mask_4x.copy()).float()
    image = torch.from_numpy(real_slices[:1]).float()[:, None]
    DataConsistency(torch.zeros(1, 150, 150, dtype=torch.complex64), mask)(image)  # cached for this mask
    mask[40:60] = 1 - mask[40:60]
    kspace, _ = measurements(real_slices[:1], mask.numpy())
    expected = numpy_consistency(image[:, 0].double().numpy(), kspace.numpy(), mask.numpy())
    np.testing.assert_allclose(DataConsistency(kspace, mask)(image)[:, 0].numpy(), expected, atol=2e-6)
