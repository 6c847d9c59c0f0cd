"""Cost of one training step of each registered network family, relative to D5C5, in float32.

Usage: python scripts/family_step_timing.py [batch size 4] [rounds 6] [NAME ...]
Steps of every network run in alternation (one per network per round) on 150×150 slices of the
embedded sample; prints the median step time of each over the rounds after the first, as a ratio
to D5C5's. Run with nothing else on the machine.
"""

import statistics
import sys
import time

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.models import build_model

batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 4
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
names = sys.argv[3:] or ["D5C5", "D3C5", "U1C5", "U2C5", "R25B5", "R15B5"]
batch = load_sample("train").batch(torch.arange(batch_size))
torch.manual_seed(0)
models = {name: build_model(name) for name in dict.fromkeys(["D5C5", *names])}
optimizers = {name: torch.optim.Adam(model.parameters()) for name, model in models.items()}
times: dict[str, list[float]] = {name: [] for name in models}
for round_index in range(rounds):
    for name, model in models.items():
        started = time.perf_counter()
        loss = (model(batch.zero_filled, batch.kspace, batch.mask) - batch.target).abs().mean()
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
        if round_index:
            times[name].append(time.perf_counter() - started)
reference = statistics.median(times["D5C5"])
for name in models:
    print(f"{name}: {statistics.median(times[name]) / reference:.2f}× a D5C5 step")
