#!/usr/bin/env bash
# The GPU session's one script (issue: TensorRT engines / the GPU path of everything else).
# Installs the project, runs the gpu-marked tests, then benchmarks the demo CNN, resnet18 and
# mobilenet_v3_small on CUDA at batch 1 and 8 through the toolkit's own CLI (eager, pt2
# compiled for CUDA, TorchScript; ONNX Runtime's CUDA provider and TensorRT when installed).
# Everything lands under $OUT (at most 8 files: the device tool brings back no more).
#   OUT=dir bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu_results}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps -e . 2>&1 | tail -2
{
  nvidia-smi --query-gpu=name,driver_version,compute_cap,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/gpu.txt" 2>&1
python3 -m pytest -m gpu -q -rs tests 2>&1 | tee "$OUT/pytest_gpu.log"

declare -A SOURCES=(
  [demo_cnn]="toolkit.demo.model:DigitsCNN"
  [resnet18]="torchvision.models:resnet18 --input x:1-8x3x224x224"
  [mobilenet_v3_small]="torchvision.models:mobilenet_v3_small --input x:1-8x3x224x224"
)
for name in demo_cnn resnet18 mobilenet_v3_small; do
  # shellcheck disable=SC2086  # the source line carries its own options
  toolkit export ${SOURCES[$name]} --to onnx,torchscript,pt2 --device cuda \
    --out "$WORK/$name" || echo "export of $name exited $?"
  toolkit bench "$WORK/$name" --device cuda --batch 1,8 --budget 3 \
    --json "$OUT/cuda_$name.json" --markdown "$OUT/cuda_$name.md" \
    || echo "bench of $name exited $?"
done
ls -la "$OUT"
