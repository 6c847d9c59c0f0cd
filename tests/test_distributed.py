"""torchrun + DistributedDataParallel on the CPU (gloo): two processes follow one process's curve."""

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from kdrecon.training.checkpoint import load_checkpoint

# Batch 3 on two ranks splits every batch unevenly (2 + 1): the loss scaling must handle it.
SETTINGS = ["--model", "D2C2", "--set", "model.channels=4", "--epochs", "2", "--batch-size", "3",
            "--precision", "fp32", "--set", "channels_last=false", "--quiet"]


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def train(run_dir, processes):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, "-m", "kdrecon", "train", "--run-dir", str(run_dir), *SETTINGS]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                   "-m", "kdrecon", "train", "--run-dir", str(run_dir), *SETTINGS]
    process = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return train(root / "one", 1), train(root / "two", 2), root


def test_two_processes_follow_the_same_loss_curve(runs):
    one, two, _ = runs
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("train_total", "validation_loss"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4), (a["epoch"], key)


def test_weights_match_and_only_rank_zero_writes(runs):
    _, _, root = runs
    a = load_checkpoint(root / "one" / "checkpoints" / "last.pt")["modules"]["model"]
    b = load_checkpoint(root / "two" / "checkpoints" / "last.pt")["modules"]["model"]
    # Gradients summed in another order differ in the last bits; Adam's normalised steps carry
    # that into the weights at the 1e-3 level over ~90 steps, while the losses agree to 1e-4.
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=2e-2, atol=2e-3), name
    assert len(list((root / "two" / "tensorboard").iterdir())) == 1  # one event file: rank 0's
    assert not list((root / "two").glob("**/*.partial"))
