"""Timing code on a shared, drifting machine: calls alternated round by round, medians kept.

The benchmark (:mod:`kdrecon.evaluation.benchmark`), the experiment estimate and the measured
choice of a CPU's training path (:mod:`kdrecon.training.fast_path`) all time this way.

Example:
    >>> seconds = interleaved_median_seconds({"a": lambda: None, "b": lambda: None}, torch.device("cpu"), 3, 1)
    >>> sorted(seconds), all(value >= 0 for value in seconds.values())
    (['a', 'b'], True)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def synchronise(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a GPU runs asynchronously), so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_seconds(
    functions: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Wall time of every call of each of ``functions``, timed in alternating rounds.

    On a shared machine whose speed drifts during a run, timing one function after the other
    would put that drift into their ratio; alternating them call by call gives each the same
    share of slow and fast moments, so round ``i`` of two functions compares like with like.
    """
    for _ in range(warmup):
        for function in functions.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            synchronise(device)
            started = time.perf_counter()
            function()
            synchronise(device)
            times[name].append(time.perf_counter() - started)
    return times


def interleaved_median_seconds(
    functions: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, float]:
    """Median wall time of each of ``functions`` over :func:`interleaved_seconds`' rounds."""
    times = interleaved_seconds(functions, device, repeats, warmup)
    return {name: statistics.median(values) for name, values in times.items()}


def median_seconds(function: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``function()`` over ``repeats`` calls after ``warmup`` calls."""
    return interleaved_median_seconds({"only": function}, device, repeats, warmup)["only"]
