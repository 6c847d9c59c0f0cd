#!/usr/bin/env bash
# Copy what docs/ keeps of a finished experiment run: the report and its figures, the experiment's
# config and manifest (each stage's full settings, to tell later why a fingerprint differs), and for
# each stage its stage.json, config, training history (a two-stage distillation's first stage's
# too) and per-volume evaluation (no checkpoints or reconstructions, which stay in the run directory).
# `kdrecon report RUN --with-record DOCS_DIR` pools such a record's seeds with a new run of the same
# experiment.
#   bash scripts/record_experiment.sh runs/heterogeneous-sunnybrook-4x docs/heterogeneous-sunnybrook-4x
set -euo pipefail
run=${1:?usage: record_experiment.sh RUN_DIR DOCS_DIR}
docs=${2:?usage: record_experiment.sh RUN_DIR DOCS_DIR}
[ -f "$run/report.md" ] || { echo "record_experiment.sh: $run has no report.md (kdrecon report $run)" >&2; exit 1; }
mkdir -p "$docs/figures"
cp "$run/report.md" "$run/experiment.yaml" "$run/experiment.json" "$docs/"
cp "$run"/figures/*.png "$docs/figures/"
for stage in "$run"/stages/seed-*/*/; do
  [ -f "$stage/stage.json" ] || continue
  relative=${stage#"$run"/stages/}
  mkdir -p "$docs/$relative/evaluation"
  cp "$stage/stage.json" "$stage/config.yaml" "$stage/metrics.csv" "$docs/$relative/"
  cp "$stage/evaluation/summary.json" "$stage/evaluation/per_volume.csv" "$docs/$relative/evaluation/"
  # A two-stage distillation's first stage keeps its own history.
  if [ -f "$stage/feature-stage/metrics.csv" ]; then
    cp "$stage/feature-stage/metrics.csv" "$docs/$relative/feature-stage-metrics.csv"
  fi
done
echo "recorded $run in $docs"
