#!/usr/bin/env bash
# The GPU session's one script: install, run the gpu-marked tests and the CUDA benchmark,
# and leave everything under $OUT (or ./gpu_results). Usage: OUT=dir bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.csv" 2>&1
python3 -m pytest -m gpu -q -rs tests 2>&1 | tee "$OUT/pytest_gpu.log"
python3 benchmarks/compare_cpu.py --device cuda --batches 1,8 --out "$OUT" 2>&1 \
  | tee "$OUT/bench_cuda.log"
ls -la "$OUT"
