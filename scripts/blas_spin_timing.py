"""A network's reconstruction of the validation split right after a NumPy matrix product, a PyTorch one, or none.

    python scripts/blas_spin_timing.py RUN_DIR --rounds 5

NumPy's OpenBLAS keeps its worker threads spinning for a while after a product; on a CPU with
few cores they compete with PyTorch's threads for the network's next passes. The three cases
alternate in one process (the product is the data-consistency projection's, complex128, the
embedded sample's 4x mask); a fourth times the reconstruction of a freshly loaded split, whose
new mask builds its projection (:func:`kdrecon.mri.consistency.sampled_projection`) on the way.
Medians in ms per call. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from kdrecon.data.dataset import load_split
from kdrecon.evaluation.evaluate import reconstruct
from kdrecon.mri.consistency import dft_matrix
from kdrecon.training.checkpoint import load_model
from kdrecon.training.config import AS_TRAINED
from kdrecon.training.fast_path import inference_precision
from kdrecon.training.timing import interleaved_median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cpu")
    data = load_split("sample", "validation")
    model, payload = load_model(args.run_dir)
    precision = inference_precision(AS_TRAINED, payload.get("precision"), device)
    lines = np.flatnonzero(data.mask.numpy().any(axis=1))
    transform = dft_matrix(data.mask.shape[0])[lines]
    transform_torch = torch.from_numpy(transform)
    run = lambda split: reconstruct(model, split, device, precision=precision)
    calls = {
        "after a NumPy product": lambda: (transform.conj().T @ transform, run(data)),
        "after a PyTorch product": lambda: (transform_torch.conj().T @ transform_torch, run(data)),
        "no product": lambda: run(data),
        "a freshly loaded split": lambda: run(load_split("sample", "validation")),
    }
    medians = interleaved_median_seconds(calls, device, args.rounds, warmup=1)
    print(f"{len(data)} slices, {precision}, {torch.get_num_threads()} threads, median of {args.rounds}")
    for name, seconds in medians.items():
        print(f"{name:<26}{seconds * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
