"""The shipped teacher and student as bf16 AOTInductor packages with and without kdrecon's thin-convolution
kernels: agreement and speed, side by side.

    python scripts/thin_kernel_packages.py 8 40    # 8 alternated rounds of 20 calls; PSNR on 40 validation slices

Builds four packages (teacher and student, ``export_network(..., thin_kernels_allowed=False/True)``),
prints each one's largest difference from the float32 network and the mean PSNR over the embedded
sample's first validation slices (each slice against its target, fastMRI's PSNR), then times the four
in alternation on one thread (batch 1, median ms per call) and prints the teacher / student ratios.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = {"oneDNN": False, "kdrecon kernels": True}


def packages(directory: Path, slices: int):
    from kdrecon.data.dataset import load_sample
    from kdrecon.deployment.export import check_slices
    from kdrecon.deployment.reconstruct import load_deployable
    from kdrecon.evaluation.metrics import psnr
    from kdrecon.mri.masks import mask_from_description
    from kdrecon.models.export import export_network, load_ahead_of_time

    data = load_sample("validation", "4x")
    count = min(slices, len(data))
    inputs = (data.zero_filled[:count], data.kspace.real[:count].contiguous(), data.kspace.imag[:count].contiguous())
    target = data.target[:count, 0].numpy()
    calls = {}
    for role in ("teacher", "student"):
        network, info = load_deployable(f"sunnybrook-4x-{role}")
        with torch.no_grad():
            reference = network(inputs[0], torch.complex(inputs[1], inputs[2]), data.mask).numpy()[:, 0]
        print(f"{role}, float32 eager: mean PSNR {np.mean([psnr(t, r) for t, r in zip(target, reference)]):.4f} dB")
        example = tuple(t[:1] for t in check_slices(info, 1))
        for variant, allowed in VARIANTS.items():
            path = directory / f"{role}-{allowed}.pt2"
            export_network(network, mask_from_description(info.data["mask"]), path, "aot-inductor", example, "bf16",
                           thin_kernels_allowed=allowed)
            package = load_ahead_of_time(path)
            with torch.no_grad():
                output = np.concatenate([package(*(t[i : i + 1] for t in inputs)).float().numpy()[:, 0] for i in range(count)])
            score = np.mean([psnr(t, o) for t, o in zip(target, output)])
            print(f"{role}, bf16 package, {variant}: mean PSNR {score:.4f} dB over {count} slices, "
                  f"largest |difference| from float32 {np.abs(output - reference).max():.4f}")
            calls[(role, variant)] = (package, example)
    return calls


def alternate(calls, rounds: int) -> dict:
    samples = {key: [] for key in calls}
    with torch.no_grad():
        for _ in range(rounds):
            for key, (package, example) in calls.items():
                for _ in range(3):
                    package(*example)
                start = time.perf_counter()
                for _ in range(20):
                    package(*example)
                samples[key].append((time.perf_counter() - start) / 20 * 1e3)
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> None:
    from kdrecon.models import thin_kernels
    from kdrecon.training.allocator import retain_freed_memory

    retain_freed_memory()
    torch.set_num_threads(1)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    slices = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    if not thin_kernels.fast_kernels_available():
        sys.exit("this CPU does not run kdrecon's thin-convolution kernels (AVX-512 BF16), or they do not build")
    medians = alternate(packages(Path(tempfile.mkdtemp()), slices), rounds)
    for variant in VARIANTS:
        teacher, student = medians[("teacher", variant)], medians[("student", variant)]
        print(f"{variant}, 1 thread: teacher {teacher:.2f} ms, student {student:.2f} ms; teacher / student {teacher / student:.3f}")


if __name__ == "__main__":
    main()
