"""Time one training step of a DnCm network on the embedded sample, per precision and memory layout.

Usage: python scripts/step_timing.py [D5C5] [batch size 4]
Prints the median of 4 steps after 2 warm-up steps for float32/bf16 × NCHW/channels-last.
"""

import statistics
import sys
import time

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.models import build_model
from kdrecon.training.fast_path import autocast
from kdrecon.training.trainer import prepare_module

name = sys.argv[1] if len(sys.argv) > 1 else "D5C5"
batch_size = int(sys.argv[2]) if len(sys.argv) > 2 else 4
data = load_sample("train")
batch = data.batch(torch.arange(batch_size))
device = torch.device("cpu")
for precision in ("fp32", "bf16"):
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = prepare_module(build_model(name), device, channels_last)
        optimizer = torch.optim.Adam(model.parameters())
        times = []
        for _ in range(6):
            started = time.perf_counter()
            with autocast(device, precision):
                loss = torch.nn.functional.l1_loss(model(batch.zero_filled, batch.kspace, batch.mask), batch.target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
        layout = "channels-last" if channels_last else "NCHW"
        print(f"{name} batch {batch_size} {precision} {layout}: {statistics.median(times[2:]) * 1e3:.0f} ms per step")
