#!/usr/bin/env bash
# Issue 15's GPU measurements in one call of the device tool, prepared and smoke-tested on the CPU.
#
# The device machine's image has PyTorch (another version than this project's pin), h5py,
# scikit-image, SciPy, ONNX Runtime, safetensors and TensorBoard, but not pydantic, nibabel or
# pydicom (psutil, a dependency since session 34, was not checked there: its wheel is in the list), and
# it cannot download; ../shared does not travel either. Here, once, from the repository root:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       pydantic pydantic_core annotated-types typing-inspection typing_extensions nibabel pydicom psutil
#   python3 scripts/gpu_session_data.py   # the study's phases of the shared Sunnybrook files, into .gpu-data/
# (.whl/ and .gpu-data/ are ignored; carry both), then, with the device tool:
#   run(command="OUT=$OUT bash scripts/gpu_session.sh", carry=[".whl", ".gpu-data"], timeout_s=580)
# Each part runs under a time limit taken from BUDGET (seconds for the whole script), in order of
# importance, and writes its figures into $OUT as soon as it ends, so a late part that runs out of
# time loses only itself:
#   steps.md      every stage kind's training step, fp32 and bf16, at batch 4 and 16, with its breakdown
#   metrics.csv   one full paper-length stage (D5C5 teacher, 150 epochs, Sunnybrook 4x): epoch times
#   metrics-compiled.csv  the same stage's first epochs under `kdrecon train --compile` (part train-compiled, not in the default PARTS)
#   estimate.md   the paper-cardiac-4x graph on that data, costed from its stage kinds' measured steps
#   compiled.md   torch.compile in CUDA graphs (float32 and bf16) against eager, training at batch 4
#   bench.md      kdrecon bench (inference, deployed ONNX Runtime, training fast vs reference), batch 4
#   bench-compiled.md  the same with torch.compile inference (part bench-compiled, not in the default PARTS)
#   demo-compiled.tar, demo-eager.tar  `kdrecon run demo` (DEMO_EPOCHS epochs, default 30) with and without
#                 compile: epoch times and reports (parts demo-compiled, demo-eager, not in the default PARTS)
# PARTS (default: prepare steps full-stage estimate compiled bench) picks parts by name; COMPILE=1 runs
# the full stage under --compile; COMPILED_KINDS (default: train distill),
# COMPILED_BATCHES (default: 4) and COMPILED_CAP (seconds, default 200) set part compiled.
# Smoke test on the CPU: DEVICE=cpu BATCHES=2 EPOCHS=1 STEPS=2 BUDGET=1500 OUT=/tmp/gpu-smoke bash scripts/gpu_session.sh
set -uo pipefail
out=${OUT:-gpu-session}
device=${DEVICE:-cuda}
budget=${BUDGET:-540}
steps=${STEPS:-30}
batches=${BATCHES:-4 16}
mkdir -p "$out"
results=$(cd "$out" && pwd)
log="$out/log.txt"
export PYTHONUNBUFFERED=1

parts=" ${PARTS:-prepare steps full-stage estimate compiled bench} "
part() {  # part NAME CAP COMMAND...: run COMMAND for at most CAP seconds, or what is left of the budget
  local name=$1 cap=$2 left=$((budget - SECONDS - 15))
  shift 2
  [[ $parts == *" $name "* ]] || return 0
  local limit=$((left < cap ? left : cap))
  if ((limit < 20)); then
    echo "== $name: skipped, ${left} s of the budget left" | tee -a "$log"
    return
  fi
  echo "== $name (limit ${limit} s, at ${SECONDS} s): $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tail -c 20000 | tee -a "$log"
  echo "== $name: exit ${PIPESTATUS[0]} at ${SECONDS} s" | tee -a "$log"
}

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
} | tee "$out/device.txt"

part prepare 90 python3 -m kdrecon prepare sunnybrook "${DATA:-.gpu-data/sunnybrook}" datasets/sunnybrook-4x \
  --phases 0 2 4 6 8 10 12 14 16 18
part steps 150 python3 scripts/gpu_steps.py --device "$device" --batch-sizes $batches --steps "$steps" --output "$out/steps.md"
# One stage at the papers' settings, as `kdrecon run paper-cardiac-4x` would train it here (precision auto).
part full-stage 240 python3 -m kdrecon train --config configs/teacher-cardiac-4x.yaml --run-dir runs/gpu-teacher \
  --device "$device" --precision auto --quiet ${EPOCHS:+--epochs "$EPOCHS"} ${COMPILE:+--compile}
cp runs/gpu-teacher/metrics.csv "$out/metrics.csv" 2>/dev/null
# `kdrecon train --compile` as a user runs it: torch.compile in CUDA graphs; its first epoch holds the compilation.
part train-compiled 150 python3 -m kdrecon train --config configs/teacher-cardiac-4x.yaml --run-dir runs/gpu-teacher-compiled \
  --device "$device" --precision auto --compile --quiet --epochs "${EPOCHS:-8}"
cp runs/gpu-teacher-compiled/metrics.csv "$out/metrics-compiled.csv" 2>/dev/null
# The paper-cardiac-4x graph (ACDC in the papers, absent here) on the Sunnybrook data it was timed on.
sed 's#datasets/cardiac#datasets/sunnybrook-4x#' src/kdrecon/resources/experiments/paper-cardiac-4x.yaml > /tmp/paper-graph.yaml
part estimate 150 python3 -m kdrecon bench --experiment /tmp/paper-graph.yaml --device "$device" --output /tmp/estimate --overwrite
cp /tmp/estimate/estimate.md "$out/estimate.md" 2>/dev/null
part compiled ${COMPILED_CAP:-200} python3 scripts/gpu_steps.py --device "$device" --batch-sizes ${COMPILED_BATCHES:-4} --kinds ${COMPILED_KINDS:-train distill} --compile fp32 bf16 \
  --steps "$steps" --output "$out/compiled.md"
part bench 120 python3 -m kdrecon bench --device "$device" --no-compile --steps "$steps" --repeats 50 --output /tmp/bench-b4 --overwrite
cp /tmp/bench-b4/bench.md "$out/bench.md" 2>/dev/null
# The same with the compiled paths: torch.compile of the fast path (CUDA graphs on a GPU) beside eager.
part bench-compiled 200 python3 -m kdrecon bench --device "$device" --steps "$steps" --repeats 50 --output /tmp/bench-compiled --overwrite
cp /tmp/bench-compiled/bench.md "$out/bench-compiled.md" 2>/dev/null
# A whole experiment in one process, compiled and eager: every stage must compile (no dynamo
# recompile-limit warning in the log) and train faster than eagerly.
for mode in compiled eager; do
  compile_setting=()
  [ "$mode" = compiled ] && compile_setting=(--set compile=true)
  part "demo-$mode" 200 python3 -m kdrecon run demo --run-dir "runs/gpu-demo-$mode" --quiet --set device="$device" \
    --set optimization.epochs="${DEMO_EPOCHS:-30}" --set optimization.lr_step_epochs="${DEMO_EPOCHS:-30}" "${compile_setting[@]}"
  (cd "runs/gpu-demo-$mode" 2>/dev/null && find . -name metrics.csv -o -name "*.md" | tar -cf "$results/demo-$mode.tar" -T -)
done
echo "== done at ${SECONDS} s" | tee -a "$log"
