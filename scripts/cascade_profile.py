"""Where one batch-1 call of the compiled bf16 deployed network spends its time, operator by operator.

    python scripts/cascade_profile.py --threads 2
    python scripts/cascade_profile.py --matrix-product

Compiles the shipped teacher's and student's ``ExportableNetwork`` (bf16 blocks, matrix data
consistency, the graph ``kdrecon export --format aot-inductor`` compiles) with ``torch.compile`` and
inductor's ``freezing``, so that ``torch.profiler`` sees each oneDNN convolution, matrix product and
generated C++ loop; prints the timeline of one call after warm-up (µs per operator). One call
scatters by tens of per cent per operator: read several calls' worth (``--calls``) on a quiet machine.
Whole profiles also fall into a slow mode now and then (session 36: the 1→32 convolution 100–125 or
640–860 µs, the 32→32 one 900–1000 or 1450–1680 µs, in profiles of the same graph minutes apart,
while unprofiled package calls kept their times): compare with ``per_core_processes.py``'s totals.
``--matrix-product`` instead times the data consistency's product alone (a 150×150 matrix times a
150×150 image, float32 and bf16) on one thread and on two, alternated.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch._inductor import config

from kdrecon.deployment.export import check_slices
from kdrecon.mri.masks import mask_from_description
from kdrecon.deployment.reconstruct import load_deployable
from kdrecon.models.export import ExportableNetwork
from kdrecon.training.allocator import retain_freed_memory

OPERATORS = ("mkldnn", "aten::bmm", "aten::mm", "graph_", "mkl::")


def matrix_product(rounds: int = 5) -> None:
    """µs of ``P @ x`` at the image size, float32 and bf16, one thread and two, alternated."""
    samples: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for dtype in (torch.float32, torch.bfloat16):
            projection, image = torch.randn(150, 150, dtype=dtype), torch.randn(150, 150, dtype=dtype)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for _ in range(50):
                    projection @ image
                started = time.perf_counter()
                for _ in range(500):
                    projection @ image
                samples.setdefault((str(dtype), threads), []).append((time.perf_counter() - started) / 500 * 1e6)
    for (dtype, threads), values in samples.items():
        print(f"{dtype}, {threads} thread(s): {np.median(values):.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--calls", type=int, default=1, help="calls whose timelines are printed")
    parser.add_argument("--matrix-product", action="store_true", help="time the data consistency's product alone")
    args = parser.parse_args()
    if args.matrix_product:
        matrix_product()
        return
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as a kdrecon command's process does: no page faults on fresh activations
    config.freezing = True
    config.cpp.enable_kernel_profile = True  # each generated C++ loop becomes a profiler event
    for role in ("student", "teacher"):
        network, info = load_deployable(f"sunnybrook-4x-{role}")
        inputs = [tensor[:1] for tensor in check_slices(info, 1)]
        exportable = ExportableNetwork(network, mask_from_description(info.data["mask"]), 1, "bf16").eval()
        with torch.no_grad():
            compiled = torch.compile(exportable)
            for _ in range(30):
                compiled(*inputs)
            with torch.profiler.profile(record_shapes=True) as profile:
                for _ in range(args.calls + 1):
                    compiled(*inputs)
        print(f"{role}, batch 1, {args.threads} threads")
        events = [event for event in profile.events() if event.name.startswith(OPERATORS)]
        calls = [event for event in profile.events() if event.name.startswith("## Call")][1:]
        for call in calls:
            for event in events:
                if call.time_range.start <= event.time_range.start <= call.time_range.end:
                    weight = str(event.input_shapes[1]) if len(event.input_shapes) > 1 else ""
                    print(f"  {event.name[:48]:48} {weight[:18]:18} {event.time_range.elapsed_us():8.1f} µs")


if __name__ == "__main__":
    main()
