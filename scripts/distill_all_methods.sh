#!/usr/bin/env bash
# Every distillation path on the embedded sample from the command line, then evaluated:
# teacher, SFT teacher, and Std-KD and SFT-KD students with AT, FitNets, SP, FSP and CC.
# Usage: scripts/distill_all_methods.sh [RUN_ROOT] [EPOCHS_PER_STAGE]   (defaults: runs/all-methods 2)
set -euo pipefail
root=${1:-runs/all-methods}
epochs=${2:-2}
common=(--epochs "$epochs" --quiet)
kdrecon train --model D5C5 --run-dir "$root/teacher" "${common[@]}"
kdrecon train --model sft-teacher --run-dir "$root/sft-teacher" "${common[@]}"
for method in at fitnets sp fsp cc; do
  kdrecon distill --teacher "$root/teacher" --method "$method" --run-dir "$root/std-kd-$method" "${common[@]}"
  kdrecon distill --teacher "$root/sft-teacher" --init sft --method "$method" --run-dir "$root/sft-kd-$method" "${common[@]}"
done
for run in "$root"/*/; do
  kdrecon evaluate "$run" | tail -n 3
done
