"""FFT conventions, undersampling and data consistency against NumPy on real slices."""

import numpy as np
import pytest
import torch

from kdrecon.mri.fft import fft2, fft2c, hermitian_mismatch, ifft2, ifft2c
from kdrecon.mri.undersample import data_consistency, merge_measurements, undersample


@pytest.mark.parametrize("shape", [(150, 150), (7, 10), (9, 9)])
def test_fft_matches_numpy_both_layouts(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(fft2(t).numpy(), np.fft.fft2(x, norm="ortho"), atol=1e-10)
    np.testing.assert_allclose(ifft2(t).numpy(), np.fft.ifft2(x, norm="ortho"), atol=1e-10)
    centred = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho"))
    np.testing.assert_allclose(fft2c(t).numpy(), centred, atol=1e-10)
    np.testing.assert_allclose(ifft2c(fft2c(t)).numpy(), x, atol=1e-10)
    np.testing.assert_allclose(ifft2(fft2(t)).numpy(), x, atol=1e-10)


def test_uncentred_dc_term_is_at_origin(real_slices):
    x = real_slices[0]
    k = fft2(torch.from_numpy(x)).numpy()
    # Orthonormal DFT: the DC coefficient is sum(x) / sqrt(H W), at index [0, 0] un-centred.
    assert k[0, 0].real == pytest.approx(x.sum() / np.sqrt(x.size))
    kc = fft2c(torch.from_numpy(x)).numpy()
    assert kc[75, 75].real == pytest.approx(x.sum() / np.sqrt(x.size))


def test_fft_stays_float32_for_half_input():
    x = torch.rand(2, 16, 16).to(torch.bfloat16)
    assert fft2(x).dtype == torch.complex64


def test_hermitian_mismatch_is_rounding_for_real_slices_and_large_with_phase(real_slices, cardiac_mask_4x):
    images, mask = real_slices, cardiac_mask_4x
    assert hermitian_mismatch(torch.from_numpy(np.fft.fft2(images, norm="ortho")), torch.from_numpy(mask)) < 1e-12
    phased = images * np.exp(1j * np.linspace(0, 3, images.shape[-1]))
    k = np.fft.fft2(phased, norm="ortho") * mask
    # k(-u) written out with indices: row (-r mod H), column (-c mod W)
    rows, columns = (-np.arange(k.shape[-2])) % k.shape[-2], (-np.arange(k.shape[-1])) % k.shape[-1]
    opposite = k[..., rows, :][..., :, columns]
    pairs = (mask != 0) & (mask[rows][:, columns] != 0)
    expected = np.abs(k - opposite.conj())[..., pairs].max() / np.abs(k).max()
    assert hermitian_mismatch(torch.from_numpy(k), torch.from_numpy(mask)) == pytest.approx(expected, rel=1e-9)
    assert expected > 0.1


def test_undersample_matches_numpy(real_slices, cardiac_mask_4x):
    x = real_slices[:3]
    kspace, zero_filled = undersample(torch.from_numpy(x), torch.from_numpy(cardiac_mask_4x))
    expected_k = cardiac_mask_4x * np.fft.fft2(x, norm="ortho")
    np.testing.assert_allclose(kspace.numpy(), expected_k, atol=1e-10)
    np.testing.assert_allclose(zero_filled.numpy(), np.abs(np.fft.ifft2(expected_k, norm="ortho")), atol=1e-10)
    # The papers' setting: 4x zero-filling of a real cardiac slice is heavily aliased (~24–27 dB).
    mse = np.mean((zero_filled.numpy() - x) ** 2, axis=(1, 2))
    psnr = 10 * np.log10(1 / mse)
    assert np.all((psnr > 20) & (psnr < 32))


def test_merged_kspace_keeps_sampled_lines_exactly(real_slices, cardiac_mask_4x):
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, _ = undersample(torch.from_numpy(real_slices[:2]).float(), mask)
    predicted = fft2(torch.rand(2, 150, 150))
    merged = merge_measurements(predicted, kspace, mask)
    sampled = cardiac_mask_4x > 0
    assert torch.equal(merged[:, sampled], kspace[:, sampled])
    assert torch.equal(merged[:, ~sampled], predicted[:, ~sampled])


def test_data_consistency_matches_numpy(real_slices, cardiac_mask_4x):
    target = torch.from_numpy(real_slices[:2]).float()
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, _ = undersample(target, mask)
    network_output = torch.rand(2, 1, 150, 150)
    result = data_consistency(network_output, kspace, mask)
    assert result.shape == (2, 1, 150, 150) and result.dtype == torch.float32
    # Independent computation in NumPy: replace sampled rows of F(out) by the measurements, keep Re.
    merged = np.where(cardiac_mask_4x[None] > 0, kspace.numpy(), np.fft.fft2(network_output[:, 0].numpy(), norm="ortho"))
    np.testing.assert_allclose(result[:, 0].numpy(), np.fft.ifft2(merged, norm="ortho").real, atol=1e-5)
    # Feeding the true image changes nothing: it is already consistent.
    unchanged = data_consistency(target.unsqueeze(1), kspace, mask)
    np.testing.assert_allclose(unchanged.numpy(), target.unsqueeze(1).numpy(), atol=1e-5)


def test_data_consistency_under_bf16_autocast_is_float32(cardiac_mask_4x, real_slices):
    target = torch.from_numpy(real_slices[:1]).float()
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, _ = undersample(target, mask)
    network_output = target.unsqueeze(1) + 0.01 * torch.rand(1, 1, 150, 150)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = data_consistency(network_output.to(torch.bfloat16), kspace, mask)
    assert out.dtype == torch.float32
    reference = data_consistency(network_output.to(torch.bfloat16).float(), kspace, mask)
    torch.testing.assert_close(out, reference)
