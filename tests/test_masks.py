"""Tests of :mod:`kdrecon.mri.masks` against the shipped masks, NumPy's shifts and the FFTs."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kdrecon.mri import masks as masks_module
from kdrecon.mri.fft import fft2, fft2c, ifft2, ifft2c
from kdrecon.mri.masks import (
    CartesianMask,
    KspaceLayout,
    equispaced_mask,
    load_mask,
    mask_statistics,
    papers_mask,
    random_mask,
)

# masks README table: file -> (size, sampled rows, acceleration); contiguous DC block lengths
# read off the files by hand (centred offsets -5..4, -5..5, -7..4, -4..4).
SHIPPED = {
    "cardiac/mask_4x.npy": (150, 37, 4.05, 10),
    "cardiac/mask_5x.npy": (150, 30, 5.00, 11),
    "brain/mask_4x.npy": (240, 60, 4.00, 12),
    "brain/mask_5x.npy": (240, 48, 5.00, 9),
}


def _rows(n: int, sampled: list[int], width: int = 3) -> np.ndarray:
    values = np.zeros((n, width))
    values[sampled] = 1
    return values


# --- shipped masks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_masks_match_readme_table(shared_dir: Path, name: str) -> None:
    size, rows, acc, block = SHIPPED[name]
    mask = load_mask(shared_dir / "masks" / name)
    stats = mask_statistics(mask)
    assert mask.layout is KspaceLayout.UNCENTRED
    assert mask.shape == (size, size) and mask.values.dtype == np.float32
    assert mask.sampled_lines == rows == int(size / round(acc))
    assert mask.acceleration == pytest.approx(acc, abs=0.005)
    assert stats["fraction"] == pytest.approx(rows / size)
    assert stats["centre_lines"] == block
    assert mask.values[0, 0] == 1  # DC row sampled in the un-centred layout


def test_cardiac_4x_centre_block_read_uncentred(cardiac_mask_4x: np.ndarray) -> None:
    mask = CartesianMask(cardiac_mask_4x, KspaceLayout.UNCENTRED)
    rows = np.flatnonzero(mask.lines)
    assert set(range(0, 5)) | set(range(145, 150)) <= set(rows.tolist())
    assert not mask.lines[5] and not mask.lines[144]  # the block ends there
    centred = mask.centred()
    assert centred.lines[70:80].all()  # offsets -5..4 around DC = row 75


# --- layouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [7, 8, 149, 150])
def test_layout_round_trip_and_numpy_shifts(size: int) -> None:
    rng = np.random.default_rng(size)
    lines = rng.random(size) < 0.4
    lines[0] = True
    values = np.repeat(lines[:, None].astype(float), 5, axis=1)
    uncentred = CartesianMask(values, KspaceLayout.UNCENTRED)
    centred = uncentred.to(KspaceLayout.CENTRED)
    assert centred.layout is KspaceLayout.CENTRED
    np.testing.assert_array_equal(centred.values, np.fft.fftshift(values, axes=0))
    assert centred.values[size // 2, 0] == 1  # DC row moved to the middle
    back = centred.to(KspaceLayout.UNCENTRED)
    assert back == uncentred
    np.testing.assert_array_equal(back.values, np.fft.ifftshift(centred.values, axes=0))
    assert uncentred.centred().uncentred() == uncentred
    assert uncentred.uncentred() is uncentred


def test_odd_size_shift_direction_matters() -> None:
    # Size 5, DC only: fftshift puts it at row 2; un-shifting with fftshift again would not.
    centred = CartesianMask(_rows(5, [2]), KspaceLayout.CENTRED)
    assert centred.uncentred().lines.tolist() == [True, False, False, False, False]
    assert np.fft.fftshift(centred.values, axes=0)[0, 0] == 0


def test_uncentred_fft2_agrees_with_centred_fft2c(
    shared_dir: Path, real_slices: np.ndarray, cardiac_mask_4x: np.ndarray
) -> None:
    x = torch.from_numpy(real_slices[:2])
    mask_u = load_mask(shared_dir / "masks/cardiac/mask_4x.npy")
    np.testing.assert_array_equal(mask_u.values, cardiac_mask_4x.astype(np.float32))
    m_u = torch.from_numpy(mask_u.values.astype(np.float64))
    m_c = torch.from_numpy(mask_u.centred().values.astype(np.float64))

    k_u = fft2(x) * m_u
    dc = torch.fft.fft2(x.to(torch.complex128), norm="ortho")[..., 0, 0]
    torch.testing.assert_close(k_u[..., 0, 0], dc)  # DC coefficient kept
    assert dc.abs().min() > 1.0

    zf_u = ifft2(k_u)
    zf_c = ifft2c(fft2c(x) * m_c)
    torch.testing.assert_close(zf_u, zf_c, rtol=1e-10, atol=1e-10)
    # Mixing layouts is wrong and visibly so: the centred mask with the un-centred FFT.
    zf_mixed = ifft2(fft2(x) * m_c)
    assert (zf_mixed.abs() - zf_u.abs()).abs().max() > 0.1


# --- papers' recipe ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "acc", "lines"), [(150, 8, 18), (240, 8, 30), (150, 4, 37), (240, 5, 48), (151, 4, 37)]
)
def test_papers_mask_line_count_and_centre(size: int, acc: float, lines: int) -> None:
    mask = papers_mask(size, acc, seed=0)
    assert mask.layout is KspaceLayout.UNCENTRED
    assert mask.shape == (size, size)
    assert mask.sampled_lines == lines == int(size / acc)
    centre = [0, 1, 2, 3, 4, size - 5, size - 4, size - 3, size - 2, size - 1]
    assert mask.lines[centre].all()
    assert mask_statistics(mask)["centre_lines"] >= 10


def test_papers_mask_seeded() -> None:
    assert papers_mask(150, 8, seed=3) == papers_mask(150, 8, seed=3)
    assert papers_mask(150, 8, seed=3) != papers_mask(150, 8, seed=4)
    assert papers_mask(150, 4, seed=1, width=20).shape == (150, 20)
    assert papers_mask(64, 4, seed=0, centre_lines=0).sampled_lines == 16


def test_papers_mask_density_resembles_shipped_masks(shared_dir: Path) -> None:
    def mean_offset(mask: CartesianMask) -> float:
        n = mask.shape[0]
        d = np.flatnonzero(mask.centred().lines) - n // 2
        d = d[(d < -5) | (d > 4)]  # the random lines, outside the forced block
        return float(np.abs(d).mean() / n)

    shipped = [
        mean_offset(load_mask(shared_dir / "masks" / name)) for name in sorted(SHIPPED)
    ]
    generated = [
        mean_offset(papers_mask(SHIPPED[name][0], round(SHIPPED[name][2]), seed=s))
        for name in sorted(SHIPPED)
        for s in range(25)
    ]
    assert np.mean(generated) == pytest.approx(np.mean(shipped), abs=0.02)


# --- fastMRI generators ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(320, 16), (151, 4)])
def test_random_mask_semantics(shape: tuple[int, int]) -> None:
    n = shape[0]
    num_low = round(n * 0.08)
    pad = (n - num_low + 1) // 2
    counts = []
    for seed in range(200):
        mask = random_mask(shape, 0.08, 4, seed)
        assert mask.layout is KspaceLayout.CENTRED and mask.shape == shape
        assert mask.lines[pad : pad + num_low].all()
        assert mask.lines[n // 2] and mask.uncentred().lines[0]
        counts.append(mask.sampled_lines)
    assert np.mean(counts) == pytest.approx(n / 4, abs=0.04 * n / 4)
    assert random_mask(shape, 0.08, 4, 7) == random_mask(shape, 0.08, 4, 7)
    assert len(set(counts)) > 1


def test_equispaced_mask_semantics() -> None:
    n, cf, acc = 368, 0.08, 4
    num_low = round(n * cf)
    pad = (n - num_low + 1) // 2
    spacing = acc * (n - num_low) / (n - num_low * acc)
    offsets = set()
    for seed in range(20):
        mask = equispaced_mask((n, 8), cf, acc, seed)
        assert mask.layout is KspaceLayout.CENTRED
        assert mask.lines[pad : pad + num_low].all()
        assert mask.acceleration == pytest.approx(acc, rel=0.05)
        outer = np.flatnonzero(mask.lines)
        outer = outer[(outer < pad - 1) | (outer > pad + num_low)]
        gaps = np.diff(outer)
        gaps = gaps[gaps < num_low]  # drop the gap across the centre block
        assert set(gaps.tolist()) <= {math.floor(spacing), math.ceil(spacing)}
        offsets.add(int(outer[0]))
    assert offsets <= set(range(round(spacing))) and len(offsets) > 1
    given = equispaced_mask((n, 8), cf, acc, seed=0, offset=2)
    assert given.lines[2] and given.lines[round(2 + 5 * spacing)]


def test_fastmri_centre_block_too_large() -> None:
    with pytest.raises(ValueError, match="centre block"):
        random_mask((100, 4), 0.5, 4, 0)
    with pytest.raises(ValueError, match="centre block"):
        equispaced_mask((100, 4), 0.25, 4, 0)


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.full((4, 4), 0.5), "0 or 1"),
        (np.eye(4), "partial rows"),
        (np.ones(4), "2-D"),
        (np.ones((2, 4, 4)), "2-D"),
        (np.zeros((4, 4)), "samples no"),
    ],
)
def test_invalid_masks_raise(values: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CartesianMask(values, KspaceLayout.UNCENTRED)


def test_invalid_layout_raises() -> None:
    with pytest.raises(ValueError, match="KspaceLayout"):
        CartesianMask(np.ones((4, 4)), "centred")  # type: ignore[arg-type]


def test_mask_values_are_a_frozen_copy() -> None:
    source = _rows(6, [0, 1])
    mask = CartesianMask(source, KspaceLayout.UNCENTRED)
    source[3] = 1
    assert mask.sampled_lines == 2
    with pytest.raises(ValueError):
        mask.values[3] = 1


def test_load_mask_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npy"
    with pytest.raises(ValueError, match="nope.npy.*does not exist"):
        load_mask(missing)
    with pytest.raises(FileNotFoundError):
        load_mask(missing)
    garbage = tmp_path / "garbage.npy"
    garbage.write_text("not an array")
    with pytest.raises(ValueError, match="garbage.npy"):
        load_mask(garbage)
    partial = tmp_path / "partial.npy"
    np.save(partial, np.eye(4))
    with pytest.raises(ValueError, match="partial.npy.*partial rows"):
        load_mask(partial)


def test_generator_arguments_validated() -> None:
    with pytest.raises(ValueError, match="acceleration"):
        papers_mask(150, 0.5, seed=0)
    with pytest.raises(ValueError, match=r"samples int\(150/16\) = 9 of 150 lines, fewer than the 10 always-sampled centre lines: at most 15x"):
        papers_mask(150, 16, seed=0, centre_lines=10)
    with pytest.raises(ValueError, match="shape"):
        random_mask((150,), 0.08, 4, 0)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(masks_module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
