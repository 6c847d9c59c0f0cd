"""Inference time per slice at batch 1 of the shipped teacher and student: eager PyTorch (float32,
FFT data consistency) against ONNX Runtime (the exported graph, matrix DFT), timed in alternation.

    python scripts/deployed_speed.py --rounds 30
    python scripts/deployed_speed.py --rounds 10 --per-core 16
    python scripts/deployed_speed.py --rounds 8 --bf16-paths 16

Prints the median milliseconds of each path and the teacher/student ratios. ``--per-core N``
instead times a volume of N slices sent one slice per call (batch 1) to the exported graph in two
ways, alternated: one session using every core, slice after slice, against one single-thread
session per core, each taking the next slice (Python threads; ONNX Runtime releases the GIL).
``--bf16-paths N`` times the bf16 paths on such a volume, alternated: eager PyTorch (channels-last,
bf16 autocast, data consistency as a matrix product) and the AOTInductor package in bf16, each with
every core on one slice after another, and with one single-thread worker per core (Python threads).
Run it on a quiet machine (no study or test suite at the same time).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from kdrecon.deployment.export import check_slices, export_and_check
from kdrecon.mri.masks import mask_from_description
from kdrecon.deployment.reconstruct import load_deployable
from kdrecon.models.export import export_network, inference_session, load_ahead_of_time
from kdrecon.training.trainer import prepare_module

MODELS = {"teacher": "sunnybrook-4x-teacher", "student": "sunnybrook-4x-student"}


def timed(call, repeats: int = 5) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def session_with_threads(path: Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (0: one per core), not spinning."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def per_core(rounds: int, slices: int) -> None:
    """Milliseconds per slice of a volume at batch 1: one all-core session against one single-thread session per core."""
    directory, cores = Path(tempfile.mkdtemp()), len(os.sched_getaffinity(0))
    calls = {}
    for role, name in MODELS.items():
        _, info = load_deployable(name)
        zero_filled, real, imaginary = check_slices(info, slices)
        feeds = [{"zero_filled": zero_filled[i : i + 1].numpy(), "kspace_real": real[i : i + 1].numpy(),
                  "kspace_imag": imaginary[i : i + 1].numpy()} for i in range(slices)]
        export_and_check(name, directory / f"{role}.onnx", "onnx")
        shared = session_with_threads(directory / f"{role}.onnx", 0)
        singles = [session_with_threads(directory / f"{role}.onnx", 1) for _ in range(cores)]
        pool = ThreadPoolExecutor(cores)

        def one_session(shared=shared, feeds=feeds):
            for feed in feeds:
                shared.run(None, feed)

        def session_per_core(singles=singles, feeds=feeds, pool=pool):
            def worker(core):
                for feed in feeds[core :: len(singles)]:
                    singles[core].run(None, feed)
            list(pool.map(worker, range(len(singles))))

        calls[f"{role}, one {cores}-thread session"] = one_session
        calls[f"{role}, {cores} single-thread sessions"] = session_per_core
    medians = report(calls, rounds, per_slice=slices)
    for path in (f"one {cores}-thread session", f"{cores} single-thread sessions"):
        print(f"teacher/student, {path}: {medians[f'teacher, {path}'] / medians[f'student, {path}']:.2f}x")


def bf16_paths(rounds: int, slices: int) -> None:
    """Milliseconds per slice of a volume at batch 1 on the bf16 paths: eager and AOTInductor, all cores on
    one slice at a time against one single-thread worker per core."""
    directory, cores = Path(tempfile.mkdtemp()), len(os.sched_getaffinity(0))
    pool, calls = ThreadPoolExecutor(cores), {}
    for role, name in MODELS.items():
        network, info = load_deployable(name)
        prepare_module(network, torch.device("cpu"), channels_last=True).eval()
        inputs = check_slices(info, slices)
        mask = torch.from_numpy(mask_from_description(info.data["mask"]))
        export_network(network, mask.numpy(), directory / f"{role}.pt2", "aot-inductor", tuple(t[:1] for t in inputs), "bf16")
        package = load_ahead_of_time(directory / f"{role}.pt2")

        def eager(index, network=network, inputs=inputs, mask=mask):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                network(inputs[0][index : index + 1], torch.complex(inputs[1][index : index + 1], inputs[2][index : index + 1]), mask)

        def compiled(index, package=package, inputs=inputs):
            with torch.no_grad():
                package(*(t[index : index + 1] for t in inputs))

        for path, one_slice in (("eager", eager), ("aot-inductor", compiled)):
            def all_cores(one_slice=one_slice):
                torch.set_num_threads(cores)
                for index in range(slices):
                    one_slice(index)

            def per_core(one_slice=one_slice):
                torch.set_num_threads(1)
                list(pool.map(lambda core: [one_slice(i) for i in range(core, slices, cores)], range(cores)))
                torch.set_num_threads(cores)

            calls[f"{role}, {path}, {cores} threads"] = all_cores
            calls[f"{role}, {path}, 1 thread per core"] = per_core
    medians = report(calls, rounds, per_slice=slices)
    for path in ("eager", "aot-inductor"):
        for threads in (f"{cores} threads", "1 thread per core"):
            key = f"{path}, {threads}"
            print(f"teacher/student, {key}: {medians[f'teacher, {key}'] / medians[f'student, {key}']:.2f}x")


def report(calls: dict, rounds: int, per_slice: int = 1) -> dict[str, float]:
    """Time ``calls`` in alternation (a warm-up, then ``rounds`` rounds); print and return ms per slice."""
    for call in calls.values():
        timed(call, 2)
    samples = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            samples[key].append(timed(call, 3))
    medians = {key: 1000 * float(np.median(values)) / per_slice for key, values in samples.items()}
    for key, value in medians.items():
        print(f"{key:<40} {value:7.2f} ms per slice")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-core", type=int, metavar="N", help="time a volume of N slices per core instead (see above)")
    parser.add_argument("--bf16-paths", type=int, metavar="N", help="time the bf16 paths on a volume of N slices instead (see above)")
    args = parser.parse_args()
    if args.per_core:
        per_core(args.rounds, args.per_core)
        return
    if args.bf16_paths:
        bf16_paths(args.rounds, args.bf16_paths)
        return
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
