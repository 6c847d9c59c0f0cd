"""Forward-only passes on this CPU: milliseconds per slice by layout and batch size, and the
teacher cache and a validation pass as they ran before and as they run now (channels-last).

    python scripts/forward_pass_speed.py --rounds 3

Every variant runs in alternation in one process, over the embedded sample (training split for
the cache, validation split for the rest), and the median of the rounds is printed. "Before"
is the code of session 8 (the model in its training layout, NCHW on a float32 CPU; validation
with autograd on); "now" calls the library (``Distiller.before_training``, ``validate``;
:mod:`kdrecon.models.inference`). Every model is prepared as training prepares it
(``prepare_module``: the allocator keeps freed memory, without which large batches ran up to
twice as slow per slice). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import training_step
from kdrecon.models import build_model
from kdrecon.training.trainer import ReconstructionObjective, prepare_module, validate

CPU = torch.device("cpu")


def grid(validation) -> dict[str, Callable[[], None]]:
    """One pass over the validation split per network, layout and batch size."""
    runs = {}
    for name in ("D5C5", "D3C5"):
        for layout in ("NCHW", "channels-last"):
            model = prepare_module(build_model(name), CPU, channels_last=layout == "channels-last").eval()
            for batch_size in (2, 16):
                def run(model=model, batch_size=batch_size) -> None:
                    with torch.no_grad():
                        for batch in validation.batches(batch_size):
                            model(batch.zero_filled, batch.kspace, batch.mask)
                runs[f"{name} {layout} batch {batch_size}"] = run
    return runs


def before_and_now(train, validation) -> dict[str, Callable[[], None]]:
    """The teacher cache of a distillation stage and the validation pass of a D5C5 stage."""
    distiller = training_step("distill", "D5C5", "D3C5", train, None, CPU, 4).objective
    teacher = distiller.teacher

    def cache_before() -> None:  # Distiller.before_training of session 8, features kept
        outputs, features = [], [[] for _ in distiller.teacher_tap.paths]
        with torch.no_grad():
            for batch in train.batches(16):
                outputs.append(teacher(batch.zero_filled, batch.kspace, batch.mask))
                for kept, feature in zip(features, distiller.teacher_tap.features()):
                    kept.append(feature)
            torch.cat(outputs), [torch.cat(kept) for kept in features]

    objective = ReconstructionObjective(prepare_module(build_model("D5C5"), CPU))

    def validation_before() -> None:
        objective.model.eval()
        for indices in torch.arange(len(validation)).split(16):
            float(objective.validation_loss(validation.batch(indices)))

    return {
        "teacher cache, before": cache_before,
        "teacher cache, now": lambda: distiller.before_training(train),
        "validation pass, before": validation_before,
        "validation pass, now": lambda: validate(objective, validation, 16, CPU, "fp32"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    train, validation = load_sample("train"), load_sample("validation")
    runs = {**grid(validation), **before_and_now(train, validation)}
    slices = {key: len(train) if key.startswith("teacher cache") else len(validation) for key in runs}
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds + 1):  # the first round warms up
        for key, run in runs.items():
            started = time.perf_counter()
            run()
            times[key].append((time.perf_counter() - started) / slices[key])
    for key, values in times.items():
        print(f"{key:34s} {statistics.median(values[1:]) * 1e3:7.1f} ms per slice")


if __name__ == "__main__":
    main()
