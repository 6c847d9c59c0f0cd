"""The shipped D5C5 teacher and D3C5 student at batch 1 on this CPU's deployed paths, side by side.

    python scripts/per_core_processes.py 6      # rounds of 20 calls per network and path; the whole set twice

Paths, each timed with teacher and student in alternation: AOTInductor bf16 packages (``kdrecon
export --format aot-inductor``) in one process on one thread (the other core idle), eager bf16
(autocast, channels-last) on all cores, the packages on all cores, and one single-thread process
per core, the processes running the same network at the same time (a barrier per block of calls):
a volume's slices shared between them. Prints ms per call, the per-slice time of the
process-per-core path (both processes together) and the teacher / student ratios. Every process
keeps its freed memory mapped (``kdrecon.training.allocator``), as a kdrecon command's does: with
glibc's defaults the teacher's package page-faulted thousands of times per call in some processes
and not in others (docs/benchmarks.md, session 36).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROLES = ("teacher", "student")


def build(directory):
    from kdrecon.deployment.export import check_slices
    from kdrecon.mri.masks import mask_from_description
    from kdrecon.deployment.reconstruct import load_deployable
    from kdrecon.models.export import export_network
    for role in ROLES:
        network, info = load_deployable(f"sunnybrook-4x-{role}")
        inputs = tuple(t[:1] for t in check_slices(info, 1))
        export_network(network, mask_from_description(info.data["mask"]), directory / f"{role}.pt2", "aot-inductor", inputs, "bf16")
        torch.save(inputs, directory / f"{role}-inputs.pt")


def blocks(directory, threads, rounds, barrier=None, core=None, queue=None):
    from kdrecon.training.allocator import retain_freed_memory
    retain_freed_memory()  # as every kdrecon command's process does (prepare_module)
    if core is not None:
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(threads)
    from kdrecon.models.export import load_ahead_of_time
    calls = {r: (load_ahead_of_time(directory / f"{r}.pt2"), torch.load(directory / f"{r}-inputs.pt")) for r in ROLES}
    samples = {r: [] for r in ROLES}
    for _ in range(rounds):
        for role, (call, inputs) in calls.items():
            for _ in range(3): call(*inputs)
            if barrier: barrier.wait()
            t = time.perf_counter()
            for _ in range(20): call(*inputs)
            samples[role].append((time.perf_counter() - t) / 20 * 1e3)
    result = {r: float(np.median(v)) for r, v in samples.items()}
    if queue: queue.put((core, result))
    return result


def eager_blocks(threads, rounds):
    from kdrecon.deployment.export import check_slices
    from kdrecon.mri.masks import mask_from_description
    from kdrecon.deployment.reconstruct import load_deployable
    from kdrecon.training.trainer import prepare_module
    torch.set_num_threads(threads)
    calls = {}
    for role in ROLES:
        network, info = load_deployable(f"sunnybrook-4x-{role}")
        prepare_module(network, torch.device("cpu"), channels_last=True).eval()
        x, re, im = (t[:1] for t in check_slices(info, 1))
        k, mask = torch.complex(re, im), torch.from_numpy(mask_from_description(info.data["mask"]))
        def call(network=network, x=x, k=k, mask=mask):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                network(x, k, mask)
        calls[role] = call
    samples = {r: [] for r in ROLES}
    for _ in range(rounds):
        for role, call in calls.items():
            for _ in range(3): call()
            t = time.perf_counter()
            for _ in range(20): call()
            samples[role].append((time.perf_counter() - t) / 20 * 1e3)
    return {r: float(np.median(v)) for r, v in samples.items()}


def show(label, medians):
    times = ", ".join(f"{role} {value:.2f} ms" for role, value in medians.items())
    print(f"{label}: {times}; teacher / student {medians['teacher'] / medians['student']:.3f}")


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    directory = Path(tempfile.mkdtemp())
    build(directory)
    cores = sorted(os.sched_getaffinity(0))
    context = mp.get_context("spawn")
    for _ in range(2):
        show("AOTInductor bf16, one process, 1 thread, other cores idle", blocks(directory, 1, rounds))
        show(f"eager bf16, {len(cores)} threads", eager_blocks(len(cores), rounds))
        show(f"AOTInductor bf16, one process, {len(cores)} threads", blocks(directory, len(cores), rounds))
        barrier, queue = context.Barrier(len(cores)), context.Queue()
        workers = [context.Process(target=blocks, args=(directory, 1, rounds, barrier, core, queue)) for core in cores]
        for worker in workers:
            worker.start()
        results = [queue.get() for _ in workers]
        for worker in workers:
            worker.join()
        for core, medians in sorted(results):
            show(f"AOTInductor bf16, process on core {core} of {len(cores)}, 1 thread", medians)
        show(f"  per slice, {len(cores)} processes together", {role: 1 / sum(1 / medians[role] for _, medians in results) for role in ROLES})


if __name__ == "__main__":
    main()
