"""What attention transfer adds to a distillation step, and the forms of its sums that were weighed.

    python scripts/attention_overhead.py --rounds 6

On the embedded sample, the bench's fast path (bf16 and channels-last where the CPU has them),
batch 4, D5C5 → D3C5, alternated in one process (medians):

1. the student's own L1 step against the bench's AT distillation step (cached teacher maps);
2. the AT loss of five student features ``(4, 32, 150, 150)``, forward and backward, eagerly and
   compiled by ``torch.compile`` (inductor fuses the float32 channel sum into one pass over the
   bf16 feature), and the compilation's own time;
3. the channel energy ``Σ_c F²`` alone on eight distinct features in turn (so that each is read
   from memory, not from the cache, as in a step): the float32 norm the loss uses, the same per
   slice of the batch, and the compiled sum.

Run it on a quiet machine; the compilation times depend on inductor's on-disk cache (the first
run after clearing ``/tmp/torchinductor_$USER`` pays the most).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from kdrecon.data.dataset import load_split
from kdrecon.distillation.losses.attention_transfer import attention_map
from kdrecon.evaluation.benchmark import training_step
from kdrecon.training.timing import interleaved_median_seconds

FEATURE_SHAPE = (4, 32, 150, 150)


def bf16_features(count: int, requires_grad: bool = False) -> list[torch.Tensor]:
    return [torch.rand(FEATURE_SHAPE).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            .requires_grad_(requires_grad) for _ in range(count)]


def fused_attention_loss(features: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    """The AT loss written for inductor: the same maps as :func:`attention_map` for ``p = 2``."""
    terms = []
    for feature, teacher_map in zip(features, teacher_maps):
        energy = feature.float().square().sum(1).flatten(1) / feature.shape[1]
        terms.append((F.normalize(energy, dim=1) - teacher_map).pow(2).mean())
    return torch.stack(terms).sum()


def eager_attention_loss(features: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(attention_map(f) - t).pow(2).mean() for f, t in zip(features, teacher_maps)]).sum()


def steps(rounds: int) -> None:
    data, device = load_split("sample", "train"), torch.device("cpu")
    calls = {"student L1 step": training_step("train", "D3C5", "D3C5", data, None, device, 4).step,
             "AT distillation step": training_step("distill", "D5C5", "D3C5", data, None, device, 4).step}
    for name, seconds in interleaved_median_seconds(calls, device, rounds, warmup=2).items():
        print(f"{name:28s} {seconds * 1e3:7.1f} ms")


def losses(rounds: int) -> None:
    features = bf16_features(5, requires_grad=True)
    teacher_maps = [F.normalize(torch.rand(4, 150 * 150), dim=1) for _ in features]
    compiled = torch.compile(fused_attention_loss, dynamic=False)
    started = time.perf_counter()
    compiled(features, teacher_maps).backward()
    print(f"{'compilation (forward + backward)':28s} {time.perf_counter() - started:7.1f} s")

    def call(loss):
        def run() -> None:
            loss(features, teacher_maps).backward()
            for feature in features:
                feature.grad = None
        return run

    calls = {"AT loss, eager": call(eager_attention_loss), "AT loss, compiled": call(compiled)}
    for name, seconds in interleaved_median_seconds(calls, torch.device("cpu"), rounds, warmup=1).items():
        print(f"{name:28s} {seconds * 1e3:7.2f} ms (five features, forward + backward)")


def energies(rounds: int) -> None:
    features = bf16_features(8)

    def norm(x):
        return torch.linalg.vector_norm(x, dim=1, dtype=torch.float32).square()

    def per_slice(x):
        return torch.stack([torch.linalg.vector_norm(s, dim=0, dtype=torch.float32) for s in x]).square()

    forms = {"float32 norm": norm, "float32 norm per slice": per_slice,
             "compiled sum": torch.compile(lambda x: x.float().square().sum(1), dynamic=False)}
    for form in forms.values():
        form(features[0])

    def cycle(form):
        def run() -> None:
            for feature in features:
                form(feature)
        return run

    calls = {name: cycle(form) for name, form in forms.items()}
    for name, seconds in interleaved_median_seconds(calls, torch.device("cpu"), rounds, warmup=1).items():
        print(f"{'energy, ' + name:28s} {seconds / len(features) * 1e3:7.3f} ms per feature")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    steps(args.rounds)
    losses(args.rounds)
    energies(args.rounds)


if __name__ == "__main__":
    main()
