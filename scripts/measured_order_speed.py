"""The exported network with F⁻¹k₀ in either order of its two products, timed in alternation.

    python scripts/measured_order_speed.py --rounds 8

``RealDataConsistency.measured`` computes ``W̄_H[:, R] k₀[R, Q] W̄_W[Q, :]``; for a line mask the
columns' transform on the sampled rows first is the cheaper order, which the layer chooses. This
builds AOTInductor bf16 packages of the shipped teacher and student with each order forced and
prints ms per batch-1 call on 1 and 2 threads, and the teacher/student ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdrecon.deployment.export import check_slices
from kdrecon.mri.masks import mask_from_description
from kdrecon.deployment.reconstruct import load_deployable
from kdrecon.models import export

ORDERS = {"rows first": False, "columns first": True}


def package(role: str, columns_first: bool, directory: Path):
    """The AOTInductor package of a shipped network with the order of F⁻¹k₀ forced, and its inputs."""
    network, info = load_deployable(f"sunnybrook-4x-{role}")
    inputs = tuple(tensor[:1] for tensor in check_slices(info, 1))
    original = export.RealDataConsistency.__init__

    def forced(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.columns_first = columns_first

    export.RealDataConsistency.__init__ = forced
    try:
        path = directory / f"{role}-{columns_first}.pt2"
        export.export_network(network, mask_from_description(info.data["mask"]), path, "aot-inductor", inputs, "bf16")
    finally:
        export.RealDataConsistency.__init__ = original
    return export.load_ahead_of_time(path), inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp())
    packages = {(role, order): package(role, first, directory) for role in ("student", "teacher") for order, first in ORDERS.items()}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        samples = {key: [] for key in packages}
        for _ in range(args.rounds):
            for key, (call, inputs) in packages.items():
                for _ in range(5):
                    call(*inputs)
                started = time.perf_counter()
                for _ in range(20):
                    call(*inputs)
                samples[key].append((time.perf_counter() - started) / 20 * 1000)
        medians = {key: float(np.median(values)) for key, values in samples.items()}
        for (role, order), value in medians.items():
            print(f"{threads} thread(s), {role}, {order}: {value:.2f} ms")
        for order in ORDERS:
            print(f"{threads} thread(s), {order}: teacher / student {medians[('teacher', order)] / medians[('student', order)]:.2f}")


if __name__ == "__main__":
    main()
