#!/usr/bin/env bash
# Issue 15's GPU measurements in one call of the device tool, prepared and smoke-tested on the CPU.
#
# The device machine's image has PyTorch (another version than this project's pin), h5py,
# scikit-image, SciPy, ONNX Runtime, safetensors and TensorBoard, but not pydantic, nibabel or
# pydicom, and it cannot download. Fetch their wheels here first (.whl/ is git-ignored; carry it):
#   python3 -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl pydantic nibabel pydicom
# then, with the device tool:
#   run(command="bash scripts/gpu_session.sh", carry=[".whl"], timeout_s=540)
# and copy the figures from $OUT/bench-b*/bench.md into docs/benchmarks.md with this command.
# Smoke test on the CPU (minutes): DEVICE=cpu SIZE=40 STEPS=1 REPEATS=1 OUT=/tmp/gpu-smoke bash scripts/gpu_session.sh
set -euo pipefail
out=${OUT:-gpu-session}
device=${DEVICE:-cuda}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --find-links .whl pydantic nibabel pydicom
fi
python3 -m pip install -q --no-deps --no-build-isolation -e .
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
  | tee "$out/device.txt"
# The papers' batch 4 and a GPU-sized batch 16, every path timed in alternation inside each run.
for batch in 4 16; do
  python3 -m kdrecon bench --device "$device" --size "${SIZE:-150}" --batch-size "$batch" --steps "${STEPS:-20}" \
    --repeats "${REPEATS:-50}" --output "$out/bench-b$batch" 2>&1 | tee "$out/bench-b$batch.log"
done
