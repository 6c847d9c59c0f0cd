"""Time the fast path with the last convolution of each block plain and in its depthwise form.

Usage: python scripts/depthwise_timing.py [D3C5] [batch size 1] [infer|train]
The two variants alternate call by call (10 training steps or 40 inference calls each, after
two warm-up calls) so that drift of a shared machine hits both alike; prints the medians in ms.
"""

import statistics
import sys
import time

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.models import build_model
from kdrecon.models.dccnn import use_depthwise_forms
from kdrecon.training.fast_path import autocast
from kdrecon.training.trainer import prepare_module

name = sys.argv[1] if len(sys.argv) > 1 else "D3C5"
batch_size = int(sys.argv[2]) if len(sys.argv) > 2 else 1
train = (sys.argv[3] if len(sys.argv) > 3 else "infer") == "train"
device = torch.device("cpu")
batch = load_sample("train").batch(torch.arange(batch_size))


def variant(depthwise: bool):
    torch.manual_seed(0)
    model = use_depthwise_forms(prepare_module(build_model(name), device, channels_last=True), depthwise)
    optimizer = torch.optim.Adam(model.parameters())
    model.train(train)

    def call() -> None:
        with torch.set_grad_enabled(train), autocast(device, "bf16"):
            output = model(batch.zero_filled, batch.kspace, batch.mask)
        if train:
            optimizer.zero_grad()
            torch.nn.functional.l1_loss(output, batch.target).backward()
            optimizer.step()

    return call


calls = {"plain": variant(False), "depthwise": variant(True)}
times = {key: [] for key in calls}
for _ in range(2):
    for call in calls.values():
        call()
for _ in range(10 if train else 40):
    for key, call in calls.items():
        started = time.perf_counter()
        call()
        times[key].append(time.perf_counter() - started)
medians = {key: statistics.median(values) * 1e3 for key, values in times.items()}
print(f"{name} batch {batch_size} {'training step' if train else 'inference'}: "
      + ", ".join(f"{key} {value:.2f} ms" for key, value in medians.items())
      + f" ({medians['depthwise'] / medians['plain'] - 1:+.0%})")
