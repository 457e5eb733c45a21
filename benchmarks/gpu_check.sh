#!/usr/bin/env bash
# The GPU session's one script (issue: TensorRT engines / the GPU path of everything else).
# Installs the project, runs the gpu-marked tests, then benchmarks on CUDA through the
# toolkit's own CLI (eager, pt2 compiled for CUDA, TorchScript; ONNX Runtime's CUDA provider
# and TensorRT when installed): the demo CNN, resnet18 and mobilenet_v3_small at batch 1 and 8,
# and two detectors with their post-processing at batch 1 and 4 (the demo shapes detector with
# NMS in the graph, trained here in seconds; torchvision's Faster R-CNN mobilenet 320).
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
  toolkit bench "$WORK/$name" --device cuda --batch 1,8 --budget 3 --eager \
    --json "$OUT/cuda_$name.json" || echo "bench of $name exited $?"
done

# Detectors: the output contract on CUDA (pt2 compiled for the GPU where torch.export goes).
python3 -c "from toolkit.demo.detector import train_detector; \
train_detector(epochs=4, n_train=1200, checkpoint_dir='$WORK/det')" 2>&1 | tail -1
toolkit export "$WORK/det/shapes_detector.ckpt" --model toolkit.demo.detector:ShapesDetector \
  --nms iou=0.5,score=0.1,max=20 --to onnx,torchscript,pt2 --device cuda --out "$WORK/shapes" \
  || echo "export of shapes exited $?"
toolkit export torchvision.models.detection:fasterrcnn_mobilenet_v3_large_320_fpn \
  --model-arg weights=None --model-arg weights_backbone=None --model-arg num_classes=5 \
  --input x:1-4x3x320x320 --to onnx,torchscript --device cuda --out "$WORK/frcnn" \
  || echo "export of frcnn exited $?"
for name in shapes frcnn; do
  toolkit verify "$WORK/$name" --device cuda --no-record || echo "verify of $name exited $?"
  toolkit bench "$WORK/$name" --device cuda --batch 1,4 --budget 3 --eager \
    --json "$OUT/cuda_det_$name.json" || echo "bench of $name exited $?"
done 2>&1 | tee "$OUT/detection.log"
# The choice for the GPU, and its Triton entry (KIND_GPU; the pt2 compiled for CUDA)
{
  toolkit select "$WORK/resnet18" --device cuda --batch 8 || echo "select exited $?"
  toolkit deploy "$WORK/resnet18" --triton "$WORK/repo" || echo "deploy exited $?"
  toolkit deploy "$WORK/resnet18" --triton "$WORK/repo" --format pt2 --name r18_pt2 \
    || echo "deploy pt2 exited $?"
  cat "$WORK"/repo/*/config.pbtxt
} 2>&1 | tee -a "$OUT/detection.log"
ls -la "$OUT"
