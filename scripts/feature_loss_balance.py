"""How much each feature method's weighted loss weighs against L1 at the start of a Std-KD distillation.

    python scripts/feature_loss_balance.py runs/methods-study --dataset datasets/sunnybrook-4x

For each seed's trained teacher in the run directory (``stages/seed-*/teacher``) and a student
initialised as that seed's Std-KD stage initialises it (``torch.manual_seed(seed)``, then the
network built), the feature loss of each method (its default layer pairs, its connectors freshly
initialised, float32) times its weight β, and the student's L1 to the target, on the same random
training batches of 4. Prints their ratio per method (mean over seeds and batches) and the β that
would give each method the share of L1 that attention transfer's published β gives AT
(``β · ratio_AT / ratio``): the published weights of RepDistiller and mdistiller were set against
a classification loss near 1, where an MRI network's L1 is a few hundredths.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from kdrecon.data.dataset import load_split
from kdrecon.distillation.hooks import FeatureTap
from kdrecon.distillation.layer_pairs import default_layer_pairs
from kdrecon.distillation.losses import FEATURE_LOSSES
from kdrecon.models import build_model
from kdrecon.training.checkpoint import load_model

REFERENCE = "at"


def weighted_ratio(method: str, teacher, student, data, batches: list[torch.Tensor]) -> float:
    """Mean over ``batches`` of β · feature loss / L1 for a student at its initial weights."""
    pairs = default_layer_pairs(method, teacher, student)
    teacher_tap, student_tap = FeatureTap(teacher, pairs.teacher), FeatureTap(student, pairs.student)
    loss_class = FEATURE_LOSSES[method]
    ratios = []
    for index in batches:
        with torch.no_grad():
            teacher(data.zero_filled[index], data.kspace[index], data.mask)
            output = student(data.zero_filled[index], data.kspace[index], data.mask)
            teacher_features, student_features = teacher_tap.features(), student_tap.features()
            feature_loss = loss_class([f.shape[1] for f in student_features], [f.shape[1] for f in teacher_features])
            weighted = loss_class.default_weight * feature_loss(student_features, teacher_features).item()
        ratios.append(weighted / F.l1_loss(output, data.target[index]).item())
    teacher_tap.remove()
    student_tap.remove()
    return sum(ratios) / len(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an experiment run directory with seed-*/teacher stages")
    parser.add_argument("--dataset", required=True, help="the dataset the teachers were trained on")
    parser.add_argument("--acceleration", default="4x")
    parser.add_argument("--methods", nargs="+", default=["at", "fitnets", "sp", "fsp", "cc"])
    parser.add_argument("--batches", type=int, default=8, help="random training batches of 4 per seed")
    parser.add_argument("--student", default="D3C5")
    args = parser.parse_args()
    data = load_split(args.dataset, "train", args.acceleration)
    ratios: dict[str, list[float]] = {method: [] for method in args.methods}
    for teacher_stage in sorted(args.run.glob("stages/seed-*/teacher")):
        seed = int(teacher_stage.parent.name.removeprefix("seed-"))
        teacher = load_model(teacher_stage)[0].eval()
        generator = torch.Generator().manual_seed(seed)
        batches = [torch.randperm(len(data), generator=generator)[:4] for _ in range(args.batches)]
        for method in args.methods:
            torch.manual_seed(seed)
            student = build_model(args.student)
            torch.manual_seed(seed)  # connectors (FitNets' regressors) as a fresh stage draws them
            ratios[method].append(weighted_ratio(method, teacher, student, data, batches))
    reference = sum(ratios[REFERENCE]) / len(ratios[REFERENCE]) if REFERENCE in ratios else 1.0
    print(f"| method | published β | β · feature / L1 at the start (per seed) | β giving AT's share ({reference:.3g}) |")
    print("|---|---|---|---|")
    for method, values in ratios.items():
        mean = sum(values) / len(values)
        weight = FEATURE_LOSSES[method].default_weight
        per_seed = ", ".join(f"{value:.3g}" for value in values)
        print(f"| {method} | {weight:g} | {mean:.3g} ({per_seed}) | {weight * reference / mean:.3g} |")


if __name__ == "__main__":
    main()
