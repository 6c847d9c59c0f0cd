"""The shipped teacher's and student's AOTInductor bf16 packages with glibc's allocator defaults and tuned.

    python scripts/package_page_faults.py 2      # rounds: each round times both settings on 1 and 2 threads

Each setting runs in a fresh process (glibc's behaviour depends on a process's allocation history),
the settings alternating; a process times both networks at batch 1 (median of 6 blocks of 20 calls
after warm-up) and counts its minor page faults per call. "tuned" is
:func:`kdrecon.training.allocator.retain_freed_memory`, which every kdrecon command's process applies
(``prepare_module``); a process that only loads a package, as a user's own script would, has the
defaults.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROLES = ("teacher", "student")
SETTINGS = ("default", "tuned")


def build(directory: Path) -> None:
    from kdrecon.deployment.export import check_slices
    from kdrecon.deployment.reconstruct import load_deployable
    from kdrecon.mri.masks import mask_from_description
    from kdrecon.models.export import export_network
    for role in ROLES:
        network, info = load_deployable(f"sunnybrook-4x-{role}")
        inputs = tuple(t[:1] for t in check_slices(info, 1))
        export_network(network, mask_from_description(info.data["mask"]), directory / f"{role}.pt2", "aot-inductor", inputs, "bf16")
        torch.save(inputs, directory / f"{role}-inputs.pt")


def child(directory: Path, setting: str, threads: int) -> None:
    from kdrecon.models.export import load_ahead_of_time
    from kdrecon.training.allocator import retain_freed_memory
    if setting == "tuned":
        retain_freed_memory()
    torch.set_num_threads(threads)
    cells = []
    for role in ROLES:
        call, inputs = load_ahead_of_time(directory / f"{role}.pt2"), torch.load(directory / f"{role}-inputs.pt")
        for _ in range(5):
            call(*inputs)
        faults, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
        for _ in range(6):
            started = time.perf_counter()
            for _ in range(20):
                call(*inputs)
            times.append((time.perf_counter() - started) / 20 * 1e3)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 120
        cells.append(f"{role} {np.median(times):.2f} ms, {faults:.0f} faults per call")
    print(f"{setting:7} allocator, {threads} thread(s): " + "; ".join(cells), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        child(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    directory = Path(tempfile.mkdtemp())
    build(directory)
    for _ in range(rounds):
        for threads in (1, 2):
            for setting in SETTINGS:
                subprocess.run([sys.executable, __file__, "child", str(directory), setting, str(threads)], check=True)


if __name__ == "__main__":
    main()
