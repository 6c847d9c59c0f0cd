"""Write the shipped models (src/kdrecon/resources/models) from a finished experiment's seed-42 stages.

The models are named after the run's acceleration (``sunnybrook-4x-...``, ``sunnybrook-5x-...``).
Retrain and ship, from a fresh checkout (hours on 2 CPU cores; the recorded runs are in docs/):

    kdrecon prepare sunnybrook ../shared/data/sunnybrook datasets/sunnybrook-4x --phases 0 2 4 6 8 10 12 14 16 18
    kdrecon run study-sunnybrook-4x --only seed-42/teacher --only seed-42/student --only seed-42/sft-teacher \
        --only seed-42/std-kd-at --only seed-42/sft-kd-at
    python scripts/ship_models.py runs/study-sunnybrook-4x

    kdrecon prepare sunnybrook ../shared/data/sunnybrook datasets/sunnybrook-5x --acceleration 5x --phases 0 2 4 6 8 10 12 14 16 18
    kdrecon run fine-tune-sunnybrook-5x --only seed-42/teacher --only seed-42/student --only seed-42/sft-teacher \
        --only seed-42/std-kd-at --only seed-42/sft-kd-at
    python scripts/ship_models.py runs/fine-tune-sunnybrook-5x

Each model gets its weights file (safetensors, with its description) and a model card whose
"embedded sample" PSNR/SSIM the tests reproduce from the shipped file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch
import yaml

from kdrecon.data.dataset import load_sample
from kdrecon.deployment.package import describe_run, package_run
from kdrecon.models.shipped import CARD_SUFFIX, SHIPPED_DIRECTORY
from kdrecon.evaluation.evaluate import reconstruct, score, summarise
from kdrecon.models.registry import count_parameters
from kdrecon.models.weights import SUFFIX
from kdrecon.report.run_layout import EXPERIMENT_CONFIG
from kdrecon.training.config import AS_TRAINED
from kdrecon.training.fast_path import inference_precision

SEED = 42
#: shipped name suffix → (stage, what it is)
MODELS = {
    "teacher": ("teacher", "the D5C5 teacher (DC-CNN, 5 convolutions per block, 5 cascades), trained on L1"),
    "student": ("student", "the D3C5 student trained alone on L1 (the baseline)"),
    "std-kd-at": ("std-kd-at", "the D3C5 student distilled from the D5C5 teacher by attention transfer (Std-KD)"),
    "sft-kd-at": ("sft-kd-at", "the D3C5 student initialised from and distilled by the student-friendly teacher, AT (SFT-KD)"),
}
CARD = """# {name}

{what}.

| | |
|---|---|
| network | {network}, {parameters:,} parameters |
| task | {task}, {acceleration}, the papers' 150×150 cardiac mask (un-centred, stored in the weights file) |
| input | magnitude slices scaled to max 1 (kdrecon rescales on output) |
| data | Sunnybrook Cardiac Data (CC0): subjects SCD0000101, SCD0000201, SCD0000301 for training, SCD0000401 for validation, cardiac phases 0, 2, …, 18, 150×150 centre crops |
| trained by | `kdrecon run {experiment}` (stage `seed-{seed}/{stage}`, best validation epoch {best_epoch}), then `python scripts/ship_models.py` |
| commit | {commit} |
| seed | {seed} (one training run: the spread between seeds is in docs/results.md) |
| validation PSNR / SSIM, the run's validation set (10 phases of SCD0000401) | {study_psnr:.2f} dB / {study_ssim:.4f} |
| validation PSNR / SSIM, the embedded sample's validation subject (4 phases of SCD0000401) | {sample_psnr:.4f} dB / {sample_ssim:.4f} |
| licence | weights: MIT, as kdrecon; training data: CC0 |

Metrics: fastMRI's conventions (per volume, data range = the volume's maximum), mean over volumes.

```bash
kdrecon reconstruct --model {name} --input volume.nii.gz --output out/
```
"""


def sample_scores(model: torch.nn.Module, acceleration: str, trained_in: str | None) -> dict:
    """PSNR and SSIM of a network on the embedded sample's validation subject at its acceleration,
    run as `kdrecon reconstruct` runs it by default (as trained)."""
    data = load_sample("validation", acceleration)
    cpu = torch.device("cpu")
    precision = inference_precision(AS_TRAINED, trained_in, cpu)
    _, volumes = score(data, reconstruct(model, data, cpu, precision=precision))
    return summarise(volumes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory of an experiment with seed-42 teacher, student and AT stages")
    args = parser.parse_args()
    experiment = yaml.safe_load((args.run / EXPERIMENT_CONFIG).read_text())["name"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for suffix, (stage, what) in MODELS.items():
        run = args.run / "stages" / f"seed-{SEED}" / stage
        study = json.loads((run / "evaluation" / "summary.json").read_text())["model_metrics"]
        model, info = describe_run(run)  # the network written below, scored before it is written once
        name = f"sunnybrook-{info.data['acceleration']}-{suffix}"
        weights = SHIPPED_DIRECTORY / f"{name}{SUFFIX}"
        sample = sample_scores(model, info.data["acceleration"], info.provenance.get("precision"))
        info = package_run(run, weights, {"name": name, "commit": commit, "stage": f"seed-{SEED}/{stage}",
                                   "sample_validation_psnr": sample["psnr"]["mean"],
                                   "sample_validation_ssim": sample["ssim"]["mean"],
                                   "study_validation_psnr": study["psnr"]["mean"], "study_validation_ssim": study["ssim"]["mean"]})
        card = CARD.format(name=name, experiment=experiment, what=what[0].upper() + what[1:], network=info.model["name"],
                           parameters=count_parameters(model), task=info.data["task"], acceleration=info.data["acceleration"],
                           seed=SEED, stage=stage, best_epoch=info.provenance["best_epoch"], commit=commit,
                           study_psnr=study["psnr"]["mean"], study_ssim=study["ssim"]["mean"],
                           sample_psnr=sample["psnr"]["mean"], sample_ssim=sample["ssim"]["mean"])
        weights.with_suffix(CARD_SUFFIX).write_text(card)
        print(f"{name}: sample PSNR {sample['psnr']['mean']:.4f} dB, study {study['psnr']['mean']:.2f} dB")


if __name__ == "__main__":
    main()
