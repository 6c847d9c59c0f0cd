"""Rebuild the embedded Sunnybrook sample shipped in ``src/kdrecon/resources/sunnybrook_sample``.

Usage (from the repository root, with ``../shared`` beside it)::

    python scripts/build_sample.py ../shared/data/sunnybrook src/kdrecon/resources/sunnybrook_sample

Keeps every slice position of the four subjects, cardiac phases 0, 5, 10 and 15 (spread over
the cycle), and the 150×150 centre crop ``[53:203, 53:203]`` used for the papers' cardiac
setting. Pixel values are copied unchanged (uint16).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PHASES = [0, 5, 10, 15]
CROP = (slice(53, 203), slice(53, 203))
SUBJECTS = ["SCD0000101", "SCD0000201", "SCD0000301", "SCD0000401"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="directory with the full SCD*.npz files")
    parser.add_argument("destination", type=Path)
    args = parser.parse_args()
    args.destination.mkdir(parents=True, exist_ok=True)
    for subject in SUBJECTS:
        with np.load(args.source / f"{subject}.npz") as full:
            images = full["images"][:, PHASES][..., CROP[0], CROP[1]]
            np.savez_compressed(
                args.destination / f"{subject}.npz",
                images=images,
                phase_index=np.asarray(PHASES),
                slice_location_mm=full["slice_location_mm"],
                pixel_spacing_mm=full["pixel_spacing_mm"],
            )
        print(f"{subject}: {images.shape}")


if __name__ == "__main__":
    main()
