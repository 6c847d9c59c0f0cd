#!/bin/bash
# D5C5 and D3C5 trained on the embedded sample for 12 epochs (the demo's schedule) in bf16 and in float32, seeds 42-44,
# each evaluated: the bf16-float32 agreement issue 15 asks of a change to bf16 numerics (session 38: the thin-convolution
# kernels in bf16 training). Usage: bash scripts/kernel_precision_accuracy.sh [RUN_ROOT]
set -e
cd "$(dirname "$0")/.."
R=${1:-runs/s38}
for seed in 42 43 44; do
  for model in D5C5 D3C5; do
    for p in bf16 fp32; do
      d=$R/$model-$p-$seed
      [ -f $d/evaluation/summary.json ] && continue
      kdrecon train --model $model --epochs 12 --set optimization.lr_step_epochs=9 --seed $seed --precision $p --run-dir $d --quiet
      kdrecon evaluate $d
    done
  done
done
echo finished
