"""Time a D5C5 training step (batch 4) with glibc's allocator defaults and tuned.

Usage: python scripts/allocator_timing.py [fast|reference] [processes per setting, 3]
fast: bf16 autocast, channels-last, depthwise last convolution; reference: float32 NCHW.
Each setting runs in fresh processes, alternating, because glibc's behaviour depends on a
process's allocation history; each process prints the median of 8 steps (after 2 warm-up
steps), its page faults and its system time per step.
"""

import resource
import statistics
import subprocess
import sys
import time

import torch


def child(setting: str, path: str) -> None:
    from kdrecon.data.dataset import load_sample
    from kdrecon.models import build_model
    from kdrecon.models.dccnn import use_depthwise_forms
    from kdrecon.training.allocator import retain_freed_memory
    from kdrecon.training.fast_path import autocast

    if setting == "tuned":
        retain_freed_memory()
    device = torch.device("cpu")
    torch.manual_seed(0)
    batch = load_sample("train").batch(torch.arange(4))
    # the model set-up of prepare_module, without it (it would tune the allocator)
    fast = path == "fast"
    model = use_depthwise_forms(build_model("D5C5"), fast)
    model = model.to(memory_format=torch.channels_last) if fast else model
    optimizer = torch.optim.Adam(model.parameters())

    def step() -> None:
        with autocast(device, "bf16" if fast else "fp32"):
            loss = torch.nn.functional.l1_loss(model(batch.zero_filled, batch.kspace, batch.mask), batch.target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(), step()
    before, times = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(8):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{setting:8s} {statistics.median(times) * 1e3:6.0f} ms per step, "
          f"{(after.ru_minflt - before.ru_minflt) // 8:6d} page faults and "
          f"{(after.ru_stime - before.ru_stime) / 8 * 1e3:4.0f} ms system time per step", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        path = sys.argv[1] if len(sys.argv) > 1 else "fast"
        for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
            for setting in ("default", "tuned"):
                subprocess.run([sys.executable, __file__, "--child", setting, path], check=True)
