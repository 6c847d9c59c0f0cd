"""The shared Sunnybrook files cut to the study's cardiac phases, small enough to travel to a lent GPU machine.

    python scripts/gpu_session_data.py [--source ../shared/data/sunnybrook] [--output .gpu-data/sunnybrook]

The device tool sends the repository alone (64 MiB at most), not ``../shared``. Every other phase
(0, 2, ..., 18) of each subject is kept, with ``phase_index`` naming them, so that
``kdrecon prepare sunnybrook OUTPUT DIR --phases 0 2 4 6 8 10 12 14 16 18`` there makes the same
dataset as from the full files here (the study's ``datasets/sunnybrook-4x``; compared file by file
in session 24). ``scripts/gpu_session.sh`` prepares it on the device machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PHASES = list(range(0, 20, 2))
PER_PHASE = ("images", "trigger_time_ms")  # arrays with a phase axis (axis 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data/sunnybrook"))
    parser.add_argument("--output", type=Path, default=Path(".gpu-data/sunnybrook"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for file in sorted(args.source.glob("SCD*.npz")):
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        for name in PER_PHASE:
            arrays[name] = arrays[name][:, PHASES]
        arrays["phase_index"] = np.array(PHASES)
        np.savez_compressed(args.output / file.name, **arrays)
        print(f"{args.output / file.name}: {arrays['images'].shape}")


if __name__ == "__main__":
    main()
