#!/bin/bash
# AT distillation D5C5 → D3C5 with the student's bf16 features handed to the loss as tapped, as float32 copies (as before
# session 18), and in float32: three seeds each, from one bf16 teacher, evaluated. Usage: bash scripts/at_precision_accuracy.sh [RUN_ROOT]
set -e
cd "$(dirname "$0")/.."
R=${1:-runs/s18}
COMMON="--epochs 12 --set optimization.lr_step_epochs=9 --quiet"
[ -f $R/teacher/evaluation/summary.json ] || { kdrecon train --model D5C5 --seed 42 --precision bf16 --run-dir $R/teacher $COMMON; kdrecon evaluate $R/teacher; }
OLD='import sys; from kdrecon.distillation.losses.attention_transfer import AttentionTransfer as A; A.takes_low_precision_features = False; from kdrecon.cli import main; sys.exit(main(sys.argv[1:]))'
for seed in 42 43 44; do
  for variant in bf16 fp32 bf16-copies; do
    dir=$R/at-$variant-$seed
    [ -f $dir/evaluation/summary.json ] && continue
    args="distill --teacher $R/teacher --method at --procedure single-stage --student D3C5 --seed $seed --run-dir $dir $COMMON"
    case $variant in
      bf16) kdrecon $args --precision bf16 ;;
      fp32) kdrecon $args --precision fp32 ;;
      bf16-copies) python -c "$OLD" $args --precision bf16 ;;
    esac
    kdrecon evaluate $dir
  done
done
echo done
