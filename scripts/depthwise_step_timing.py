"""Training steps of each stage kind with the thin convolutions plain, in their depthwise forms and in kdrecon's kernels.

    python scripts/depthwise_step_timing.py --steps 10
    python scripts/depthwise_step_timing.py --steps 10 --precision fp32 --nchw
    python scripts/depthwise_step_timing.py --steps 10 --forms both kernels

The bench's fast path (``training_step``: in-memory data, teacher cache; bf16 channels-last on a CPU
with native bf16 unless ``--precision``/``--nchw`` say otherwise), D5C5 teacher and D3C5 student,
batch 4 of the embedded sample. Three forms (:class:`kdrecon.models.dccnn.Conv3x3`): ``plain``
(oneDNN's kernels throughout), ``last`` (only the C→1 convolution depthwise, the form before the 1→C
convolution's input gradient joined it), ``both`` (both depthwise: a CPU training run in float32, or
without AVX-512 BF16) and ``kernels`` (the 1→32 and 32→1 convolutions forward and backward in
:mod:`kdrecon.models.thin_kernels`: a CPU training run in bf16 with AVX-512 BF16; float32 runs as
``both``). For each stage kind the forms alternate step by step after two warm-up steps; prints the
medians and their ratios to the last form. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdrecon.data.dataset import load_sample
from kdrecon.evaluation.benchmark import training_step
from kdrecon.models.dccnn import Conv3x3, use_thin_kernels
from kdrecon.training.config import STAGE_KINDS

# Which convolutions run depthwise, and whether kdrecon's kernels run the thin ones.
FORMS = {"plain": (lambda conv: False, False), "last": (lambda conv: conv.out_channels == 1, False),
         "both": (lambda conv: True, False), "kernels": (lambda conv: True, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--nchw", action="store_true", help="train in NCHW (default: the fast path's layout)")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=["plain", "last", "both"])
    args = parser.parse_args()
    layout = {"channels_last": False} if args.nchw else {}
    data = load_sample("train")
    for kind in STAGE_KINDS:
        steps = {}
        for form in args.forms:
            depthwise, kernels = FORMS[form]
            timed = training_step(kind, "D5C5", "D3C5", data, None, torch.device("cpu"), 4,
                                  precision=args.precision, **layout)
            for module in timed.objective.modules().values():
                use_thin_kernels(module, kernels)
                for conv in module.modules():
                    if isinstance(conv, Conv3x3):
                        conv.depthwise_forms = depthwise(conv)
            steps[form] = timed.step
        times: dict[str, list[float]] = {form: [] for form in steps}
        for round_ in range(args.steps + 2):
            for form, step in steps.items():
                started = time.perf_counter()
                step()
                if round_ >= 2:
                    times[form].append(time.perf_counter() - started)
        medians = {form: statistics.median(values) * 1e3 for form, values in times.items()}
        last = args.forms[-1]
        print(f"{kind:12s} " + "  ".join(f"{form} {value:7.1f} ms" for form, value in medians.items())
              + "".join(f"  {form}/{last} {medians[form] / medians[last]:.3f}" for form in args.forms[:-1]), flush=True)


if __name__ == "__main__":
    main()
