"""Inference time per slice at batch 1 of the shipped teacher and student: eager PyTorch (float32,
FFT data consistency) against ONNX Runtime (the exported graph, matrix DFT), timed in alternation.

    python scripts/deployed_speed.py --rounds 30

Prints the median milliseconds of each path and the teacher/student ratios. Run it on a quiet
machine (no study or test suite at the same time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdrecon.deployment.export import check_slices, export_and_check
from kdrecon.deployment.package import mask_from_description
from kdrecon.deployment.reconstruct import load_deployable
from kdrecon.models.export import inference_session

MODELS = {"teacher": "sunnybrook-4x-teacher", "student": "sunnybrook-4x-student"}


def timed(call, repeats: int = 5) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp())
    calls = {}
    for role, name in MODELS.items():
        network, info = load_deployable(name)
        zero_filled, real, imaginary = (t[:1] for t in check_slices(info, 1))
        kspace, mask = torch.complex(real, imaginary), torch.from_numpy(mask_from_description(info.data["mask"]))
        export_and_check(name, directory / f"{role}.onnx", "onnx")
        session = inference_session(directory / f"{role}.onnx")
        feed = {"zero_filled": zero_filled.numpy(), "kspace_real": real.numpy(), "kspace_imag": imaginary.numpy()}

        def eager(network=network, zero_filled=zero_filled, kspace=kspace, mask=mask):
            with torch.no_grad():
                network(zero_filled, kspace, mask)

        calls[f"{role} eager"] = eager
        calls[f"{role} onnxruntime"] = lambda session=session, feed=feed: session.run(None, feed)
    for call in calls.values():
        timed(call, 3)  # warm-up
    samples = {key: [] for key in calls}
    for _ in range(args.rounds):
        for key, call in calls.items():
            samples[key].append(timed(call))
    medians = {key: 1000 * float(np.median(values)) for key, values in samples.items()}
    for key, value in medians.items():
        print(f"{key:<22} {value:7.2f} ms per slice")
    for path in ("eager", "onnxruntime"):
        print(f"teacher/student, {path}: {medians[f'teacher {path}'] / medians[f'student {path}']:.2f}x")
    print(f"student eager/onnxruntime: {medians['student eager'] / medians['student onnxruntime']:.2f}x")


if __name__ == "__main__":
    main()
