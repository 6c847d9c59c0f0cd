"""Shared fixtures: real Sunnybrook slices and the papers' masks from ``../shared``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests need ../shared beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def real_slices(shared_dir: Path) -> np.ndarray:
    """Eight real cardiac frames, 150×150 centre crops, float64, each scaled to max 1."""
    images = np.load(shared_dir / "data/sunnybrook/fixture_8slices.npz")["images"]
    crops = images[:, 53:203, 53:203].astype(np.float64)
    return crops / crops.max(axis=(1, 2), keepdims=True)


@pytest.fixture(scope="session")
def cardiac_mask_4x(shared_dir: Path) -> np.ndarray:
    """The papers' 150×150 4x cardiac mask, un-centred layout, float64 0/1."""
    return np.load(shared_dir / "masks/cardiac/mask_4x.npy")
