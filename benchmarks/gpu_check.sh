#!/usr/bin/env bash
# The GPU session's one script (issue: TensorRT engines / the GPU path of everything else).
#
# What it does, on the GPU machine (no network; python3 = the image's Python 3.12 with torch):
#   1. installs, offline, the wheels the image lacks (pydantic and its parts, faster-coco-eval,
#      tritonclient, ...; prepared HERE beforehand by benchmarks/gpu_wheels.sh into .whl/, or
#      into $WHEELS), then the project itself (editable, no build isolation, no index), and
#      checks that `toolkit --help` runs. Any failure here stops the script with pip's error.
#   2. runs the gpu-marked tests (pytest -m gpu, on the files that hold them);
#   3. runs benchmarks/cuda_python_check.py: the toolkit's cuda-python backend
#      (toolkit/backends/trt/cuda.py, CudaPython) against the image's real cuda-bindings on the GPU:
#      copies, bf16, graph capture and replay, memory and allocation accounting;
#   4. benchmarks on CUDA through the toolkit's own CLI (eager, pt2 compiled for CUDA,
#      TorchScript; ONNX Runtime's CUDA provider and TensorRT when installed), in the order of
#      what matters most: resnet18 at batch 1 and 8, then select and deploy (Triton, KIND_GPU);
#      two detectors with their post-processing at batch 1 and 4 (the demo shapes detector with
#      NMS in the graph, trained here in seconds; torchvision's Faster R-CNN mobilenet 320,
#      random weights made lively as benchmarks/detection_cpu.py does);
#      Ultralytics' YOLOv8n (its Detect head decoded, NMS in the graph) at batch 1 and 8;
#      BERT-base's shape (random weights, a shared sequence dimension, integer ids); timm's
#      convnext_tiny; mobilenet_v3_small and the demo CNN.
#   Each CUDA step runs under `timeout STEP_LIMIT` (200 s), and none starts once DEADLINE
#   (390 s) has passed since the start: skipped for time, and said so in the summary.
#   A failing step of 2-4 is reported (FAIL: ...) and the rest still runs; the script exits 1
#   at the end if any step failed, after a summary.
#
# What it does NOT cover: TensorRT itself. That machine has no TensorRT (nor onnxruntime-gpu,
# nor a Triton server), so no engine is built or run there; the TensorRT layer is covered there
# only through its CUDA part (step 3: device buffers, copies, CUDA graphs through cuda-python),
# and on CPU by the conformance suite in tests/backends/trt/ (fake TensorRT and CUDA held to the real
# bindings' API). ONNX Runtime runs on its CPU build there; Triton: the config is written and
# validated, nothing is served.
#
# Everything lands under $OUT, at most 8 files (the device tool brings back no more):
#   gpu.txt (GPU, CPU, torch, install, cuda-python check, summary), pytest_gpu.log,
#   models.log (every model step's output, with its seconds), cuda_bench.json ({name: the
#   `toolkit bench --json` results}, rewritten after each bench).
#
# Use:
#   here:    bash benchmarks/gpu_wheels.sh                       # .whl/, for Python 3.12
#   there:   OUT=dir bash benchmarks/gpu_check.sh                # device run, carry=[".whl"]
#   here:    bash benchmarks/gpu_check.sh --rehearse             # on CPU, offline install
#   here:    bash benchmarks/gpu_check.sh --pretend-gpu          # on CPU, the GPU branch
#
# --rehearse runs the same script here, on CPU: a fresh venv that sees the packages of
# .venv which the GPU image also has (torch, onnx, onnxruntime, lightning, typer, rich, ...)
# and none of those it lacks (pydantic, ...); `import pydantic` must fail there before the
# wheels and work after. The install is the same, offline (pip --no-index; the wheels for this
# machine's Python come from $WHEELS, else benchmarks/gpu_wheels.sh fetches them first, the
# one step that uses the network). Then `toolkit --help`, `pytest -m gpu --collect-only` and
# cuda_python_check.py (which reports "skipped: no CUDA device") run; every step that needs
# CUDA prints "skipped (no CUDA): ...". $OUT defaults to a fresh temporary folder.
#
# --pretend-gpu is the same offline install, then the GPU branch itself, line for line, against
# a pretend CUDA device: a sitecustomize put first on PYTHONPATH makes torch report one CUDA
# device (torch.cuda.is_available() is True), and anything that touches it fails as it does
# without a driver. Only the processes that ask torch about the device load torch; the others
# (the toolkit's commands, pytest -m gpu, the training) stop where they would, once their
# command line has parsed. Every CUDA step runs its command line and fails (or is skipped for
# time) with its reason; the summary lists them and the script exits 1, in about 30 s. What
# it proves: no line of the GPU branch dies of a shell error (an unbound variable, a missing
# command) before its summary, as `DEADLINE: unbound variable` once did on the GPU right after
# the install, and no step's command line is refused.
#   WHEELS=dir   the wheels to install (default .whl, or fetched for a rehearsal)
#   DEADLINE=s   no CUDA step starts after s seconds (default 390)
#   STEP_LIMIT=s each CUDA step's time limit (default 200)
#   REHEARSE_PYTHON=path   the interpreter whose site-packages stand in for the image
#                          (default .venv/bin/python)
set -euo pipefail

MODE=gpu
while (($#)); do
  case $1 in
    --rehearse) MODE=rehearse; shift ;;
    --pretend-gpu) MODE=pretend-gpu; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (--rehearse, --pretend-gpu, --help)" >&2
       exit 2 ;;
  esac
done
# STANDIN: install into a fresh venv standing in for the GPU image (not the machine's python3);
# RUN_CUDA: run the CUDA steps (a rehearsal skips them).
STANDIN=1 RUN_CUDA=1
case $MODE in
  gpu) STANDIN=0 ;;
  rehearse) RUN_CUDA=0 ;;
esac

# The CUDA steps run in the order of what matters most, each under a time limit, and none starts
# once DEADLINE seconds have passed since the script began: the device tool's command limit and
# the session's device minutes are short, and what ran must come back. A step skipped for time
# is said so, and counted in the summary. (Set here, before any function reads them.)
DEADLINE=${DEADLINE:-390}
STEP_LIMIT=${STEP_LIMIT:-200}
BENCH=(--budget 2 --warmup 1)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export PYTHONUNBUFFERED=1
WORK=$(mktemp -d -t gpu_check.XXXXXX)
SUMMARY_REACHED=0
# On any exit before the summary (a setup step stopped it, or a shell error such as an unbound
# variable inside a block whose output goes to a file), say so, with what $OUT/gpu.txt holds.
cleanup() {
  local rc=$?
  if ((rc && !SUMMARY_REACHED)); then
    echo "gpu_check.sh: exited with $rc before its summary" >&2
    [[ -s ${OUT:-}/gpu.txt ]] && tail -n 5 "$OUT/gpu.txt" >&2
  fi
  [[ -n ${KEEP_WORK:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT
if ((STANDIN)); then
  OUT=${OUT:-$(mktemp -d -t gpu_check_out.XXXXXX)}
else
  OUT=${OUT:-gpu_results}
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
FAILURES=$WORK/failures  # one line per failed step (a file: steps in pipelines run in subshells)
SKIPPED=$WORK/skipped
SKIPPED_TIME=$WORK/skipped_time
: >"$FAILURES"
: >"$SKIPPED"
: >"$SKIPPED_TIME"
STARTED=$SECONDS

say() { printf '== %s\n' "$*"; }

# A setup step: its output goes to a log; on failure the log is printed and the script stops.
# On success the log's last 3 lines are shown (-v: all of it).
must() {  # must [-v] NAME CMD...
  local show=3 name rc=0
  if [[ $1 == -v ]]; then show=+1; shift; fi
  name=$1
  shift
  say "$name"
  "$@" >"$WORK/must.log" 2>&1 || rc=$?
  if ((rc)); then
    cat "$WORK/must.log"
    echo "FAILED (exit $rc): $name"
    echo "gpu_check.sh: stopped at a setup step; nothing after it ran" >&2
    exit 1
  fi
  if [[ $show == +1 ]]; then cat "$WORK/must.log"; else tail -n "$show" "$WORK/must.log"; fi
}

# A check or benchmark step: a failure is reported and recorded; the script goes on.
step() {  # step NAME CMD...
  local name=$1 rc=0
  shift
  "$@" || rc=$?
  if ((rc)); then
    echo "FAIL: $name (exit $rc)"
    echo "$name (exit $rc)" >>"$FAILURES"
  fi
  return 0
}

# A step that needs CUDA: skipped, and said so, in a rehearsal, or once DEADLINE has passed.
# A command (not a shell function) runs under `timeout STEP_LIMIT`; its command line is shown.
cuda_step() {  # cuda_step NAME CMD...
  local name=$1
  shift
  if ((!RUN_CUDA)); then
    echo "skipped (no CUDA): $name"
    echo "$name" >>"$SKIPPED"
    return 0
  fi
  if ((SECONDS - STARTED > DEADLINE)); then
    echo "skipped (time, past ${DEADLINE} s): $name"
    echo "$name" >>"$SKIPPED_TIME"
    return 0
  fi
  local begun=$SECONDS
  printf '$ %s\n' "$*"
  if [[ $(type -t "$1") == function ]]; then
    step "$name" "$@"
  else
    step "$name" timeout -k 10 "$STEP_LIMIT" "$@"
  fi
  echo "-- $name: $((SECONDS - begun)) s"
}

# pip that never reaches an index, and reads no configuration that could point it at one.
pip_offline() {
  env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
    python3 -m pip --disable-pip-version-check "$@"
}

# ---------------------------------------------------------------------------------- rehearsal
# A venv standing in for the GPU image: .venv's distributions that the image also has, exposed
# through a folder of symlinks named in a .pth; the project, and what the image lacks, absent.
# (Called through `must`, where set -e doesn't apply inside a function: each step says || return.)
make_image_venv() {  # make_image_venv VENV
  local venv=$1 source_python=${REHEARSE_PYTHON:-$REPO/.venv/bin/python} base site
  [[ -x $source_python ]] || { echo "no $source_python: run make .venv/.installed" >&2; return 1; }
  base=$("$source_python" -c 'import sys; print(sys._base_executable)') || return
  "$base" -m venv --without-pip "$venv" || return
  bash benchmarks/gpu_wheels.sh --image-packages >"$WORK/image_packages.txt" || return
  "$source_python" - "$WORK/image_packages.txt" "$WORK/image_site" \
    "$REPO/benchmarks/gpu_wheels.sh" <<'PY' || return
import csv
import re
import sys
import sysconfig
from pathlib import Path

image = {line.strip() for line in open(sys.argv[1]) if line.strip()}
# Distributions that install the same modules: the image's opencv-python-headless is cv2, as
# is this venv's opencv-python (Ultralytics imports cv2)
SAME = {"opencv-python-headless": {"opencv-python", "opencv-contrib-python"}}
image |= {twin for name in image & set(SAME) for twin in SAME[name]}
target = Path(sys.argv[2])
target.mkdir()
site = Path(sysconfig.get_path("purelib"))
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
exposed, hidden = set(), []
infos, needs = {}, {}
for info in sorted(site.glob("*.dist-info")):
    meta = (info / "METADATA").read_text(errors="replace")
    name = norm(re.search(r"^Name:\s*(\S+)", meta, re.M).group(1))
    infos[name] = info
    # what it needs to import (extras aside)
    needs[name] = {norm(re.match(r"[A-Za-z0-9_.-]+", req).group(0))
                   for req in re.findall(r"^Requires-Dist:\s*(.+)$", meta, re.M)
                   if "extra ==" not in req and "extra==" not in req}
# The image's packages, plus what this venv's versions of them need to import (a newer
# huggingface-hub needs httpx2, where the image has its own older pair): stand-ins for the
# image's own dependencies. Never the wheels gpu_wheels.sh brings: those must come offline.
pins = {norm(m) for m in re.findall(r"^\s+([A-Za-z0-9_.-]+)==", Path(sys.argv[3]).read_text(),
                                   re.M)}
shown = {name for name in infos if name in image}
while True:
    more = {dep for name in shown for dep in needs[name]
            if dep in infos and dep not in shown and dep not in pins and dep != "toolkit"}
    if not more:
        break
    shown |= more
for name, info in sorted(infos.items()):
    if name not in shown:
        hidden.append(name)
        continue
    entries = {info.name}
    with open(info / "RECORD", newline="") as record:
        for row in csv.reader(record):
            top = row[0].split("/")[0] if row else ""
            if top and top not in ("..", "__pycache__") and not top.startswith("__editable__"):
                entries.add(top)
    for entry in entries:
        if (site / entry).exists() and entry not in exposed:
            (target / entry).symlink_to(site / entry)
            exposed.add(entry)
print(f"image stand-in: {len(exposed)} entries of {site} exposed; hidden (not in the GPU "
      f"image): {', '.join(hidden)}")
PY
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))') || return
  echo "$WORK/image_site" >"$site/_gpu_image.pth"
}

# A pretend CUDA device for --pretend-gpu: torch.cuda says one device is there (its name says
# it is pretend); the real torch.cuda stays underneath, so using it fails as without a driver.
# Only the processes that ask torch about the device load torch: `python3 -c "import torch; ..."`
# and cuda_python_check.py. Every other one (the toolkit's commands, pytest -m gpu, the
# training) stops where it would load torch, saying so: by then its command line has run and
# parsed (where the script's own mistakes show), and what would follow is seconds of imports
# and CPU work that here could only end in the same failure, later.
pretend_cuda() {  # pretend_cuda DIR
  mkdir -p "$1" || return
  cat >"$1/sitecustomize.py" <<'PY'
import importlib.abc
import importlib.machinery
import os
import sys

NAME = "pretend CUDA device (gpu_check.sh --pretend-gpu, no GPU here)"


class PretendDeviceStop(RuntimeError):
    pass


def _pretend(cuda):
    cuda.is_available = lambda: True
    cuda.device_count = lambda: 1
    cuda.current_device = lambda: 0
    cuda.get_device_name = lambda device=None: NAME


def _cmdline():
    try:
        with open("/proc/self/cmdline", "rb") as cmdline:
            return [arg.decode(errors="replace") for arg in cmdline.read().split(b"\0")[:-1]]
    except OSError:  # no /proc: sys.argv, which for -c lacks the code
        return list(sys.argv)


def _asks_the_device():
    if sys.argv and os.path.basename(sys.argv[0]) == "cuda_python_check.py":
        return True
    args = _cmdline()
    code = args[args.index("-c") + 1] if "-c" in args[:-1] else ""
    return code.lstrip().startswith("import torch")


class _Finder(importlib.abc.MetaPathFinder):
    # acts when torch is imported (a find_spec probe imports nothing), and patches torch.cuda
    # once torch imports it (importing torch here would slow every python3)
    def find_spec(self, name, path, target=None):
        if name not in ("torch", "torch.cuda"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            if name == "torch" and not _asks_the_device():
                raise PretendDeviceStop(f"{NAME}: `{' '.join(_cmdline())[:160]}` stops where it "
                                        "would load torch (its command line has run)")
            run(module)
            if name == "torch.cuda":
                _pretend(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
PY
}

if ((STANDIN)); then
  if [[ $MODE == rehearse ]]; then
    say "rehearsal: on CPU, offline install; steps that need CUDA are skipped"
  else
    say "rehearsal of the GPU branch: on CPU, offline install, a pretend CUDA device; each CUDA" \
      "step runs and fails (or is skipped for time) with its reason"
    pretend_cuda "$WORK/pretend_cuda"
    export PYTHONPATH="$WORK/pretend_cuda${PYTHONPATH:+:$PYTHONPATH}"
  fi
  VENV=$WORK/venv
  must "fresh venv standing in for the GPU image" make_image_venv "$VENV"
  export PATH="$VENV/bin:$PATH"
  hash -r
  if [[ -z ${WHEELS:-} ]]; then
    WHEELS=$WORK/wheels
    pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    must "wheels for Python $pyver (the rehearsal's one use of the network)" \
      bash benchmarks/gpu_wheels.sh --python "$pyver" --dest "$WHEELS"
  fi
  must "the stand-in sees the image's packages" python3 -c "
import importlib.util as u
names = ('torch', 'torchvision', 'onnx', 'onnxruntime', 'onnxscript', 'lightning',
         'pytorch_lightning', 'typer', 'rich', 'numpy', 'pytest', 'hypothesis', 'setuptools')
missing = [n for n in names if u.find_spec(n) is None]
assert not missing, f'the image stand-in lacks {missing}'
print('visible:', ' '.join(names))"
fi
if ((RUN_CUDA)); then
  must "a CUDA device for torch (on a machine without one: --rehearse)" \
    python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, 'sees', torch.cuda.get_device_name(0))"
fi

# ------------------------------------------------------------------------------------ install
WHEELS=${WHEELS:-.whl}
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
shopt -u nullglob
if ((${#wheels[@]} == 0)); then
  echo "FAILED: no wheels in $WHEELS: run 'bash benchmarks/gpu_wheels.sh' here (with network)" \
    "and carry .whl to the GPU machine" >&2
  exit 1
fi
say "python3 is $(command -v python3) ($(python3 -c 'import sys; print(sys.version.split()[0])'))"
if python3 -c "import pydantic" 2>/dev/null; then
  if ((STANDIN)); then
    echo "FAILED: pydantic imports before the wheels: the image stand-in leaks" >&2
    exit 1
  fi
  echo "before the wheels: pydantic is already there"
else
  echo "before the wheels: import pydantic fails (pydantic missing, as on the GPU image)"
fi
# A wheel goes in unless the same distribution is there at the same or a newer version (the
# image's own packages are never downgraded).
must -v "choose the wheels the environment lacks" python3 - "$WHEELS" "$WORK/to_install" <<'PY'
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import parse_wheel_filename
from packaging.version import Version

chosen = []
for path in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version, _, _ = parse_wheel_filename(path.name)
    try:
        have = Version(metadata.version(name))
    except metadata.PackageNotFoundError:
        have = None
    if have is not None and have >= version:
        print(f"already there: {name} {have} (its wheel, {version}, is not installed)")
    else:
        chosen.append(str(path.resolve()))
        print(f"to install: {name} {version}" + (f" (there: {have})" if have else ""))
Path(sys.argv[2]).write_text("".join(f"{c}\n" for c in chosen))
PY
mapfile -t to_install <"$WORK/to_install"
if ((${#to_install[@]})); then
  must "pip install --no-index --no-deps --no-build-isolation ${#to_install[@]} wheels from $WHEELS" \
    pip_offline install --no-index --no-deps --no-build-isolation "${to_install[@]}"
fi
must "after the wheels: pydantic, faster-coco-eval, tritonclient import" python3 -c "
import faster_coco_eval, pydantic, pydantic_core, rapidjson
from tritonclient.grpc import model_config_pb2
print(f'after the wheels: pydantic {pydantic.VERSION} imports; pydantic-core '
      f'{pydantic_core.__version__}; faster-coco-eval {faster_coco_eval.__version__}')"
must "pip install --no-index --no-deps --no-build-isolation -e ." \
  pip_offline install --no-index --no-deps --no-build-isolation -e .
SCRIPTS=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$SCRIPTS:$PATH"
hash -r
must "toolkit --help" toolkit --help
echo "toolkit --help: ok ($(command -v toolkit))"

# ---------------------------------------------------------------------------- checks, benches
{
  cuda_step "nvidia-smi" nvidia-smi \
    --query-gpu=name,driver_version,compute_cap,clocks.sm,clocks.mem --format=csv
  grep -m1 'model name' /proc/cpuinfo || true
  echo "CPU cores: $(nproc)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available())"
  python3 -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(pydantic|pydantic.core|typing.extensions|faster.coco.eval|tritonclient|cuda.bindings|onnx|onnxruntime|typer|protobuf|grpcio) ' \
    || true
} >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

say "cuda-python check (benchmarks/cuda_python_check.py)"
step "cuda-python check" python3 benchmarks/cuda_python_check.py 2>&1 | tee -a "$OUT/gpu.txt"

# Only the files that hold gpu-marked tests are collected: a module elsewhere that fails to
# import on the image (a test-only package it lacks) can't stop the GPU tests from running,
# and collecting them takes seconds instead of importing every test module.
mapfile -t GPU_TESTS < <(grep -rlE "pytest\.mark\.gpu|pytestmark = .*gpu" tests \
  --include='test_*.py' | sort)
say "gpu-marked tests are in: ${GPU_TESTS[*]}"
if ((!RUN_CUDA)); then
  say "pytest -m gpu --collect-only"
  step "pytest -m gpu --collect-only" \
    python3 -m pytest -m gpu --collect-only -q -p no:cacheprovider "${GPU_TESTS[@]}" 2>&1 \
    | tee "$OUT/pytest_gpu.log"
  cuda_step "pytest -m gpu (the run)" true
else
  say "pytest -m gpu"
  step "pytest -m gpu" timeout -k 10 "$STEP_LIMIT" python3 -m pytest -m gpu -q -rs \
    --durations=0 -p no:cacheprovider "${GPU_TESTS[@]}" 2>&1 \
    | tee "$OUT/pytest_gpu.log"
fi

# Every `toolkit bench --json` lands in one file, cuda_bench.json ({name: results}), rewritten
# after each bench: the device tool brings back 8 files, and a run cut short keeps what it had.
keep_json() {  # keep_json NAME FILE
  [[ -f $2 ]] || return 0
  python3 - "$OUT/cuda_bench.json" "$1" "$2" <<'PY'
import json
import os
import sys

path, name, new = sys.argv[1:]
merged = json.load(open(path)) if os.path.exists(path) else {}
merged[name] = json.load(open(new))
with open(path + ".tmp", "w") as out:
    json.dump(merged, out, indent=1)
os.replace(path + ".tmp", path)
PY
}

bench() {  # bench NAME BUNDLE BATCHES
  cuda_step "bench $1" toolkit bench "$2" --device cuda --batch "$3" "${BENCH[@]}" --eager \
    --json "$WORK/$1.json"
  keep_json "$1" "$WORK/$1.json"
}

train_detector() {  # a function: its python3 gets the time limit itself
  timeout -k 10 "$STEP_LIMIT" python3 -c "from toolkit.demo.detector import train_detector; \
train_detector(epochs=4, n_train=1200, checkpoint_dir='$WORK/det')" >"$WORK/train.log" 2>&1 \
    || { cat "$WORK/train.log"; return 1; }
  tail -n 1 "$WORK/train.log"
}
show_configs() { cat "$WORK"/repo/*/config.pbtxt; }

{
  # A classifier end to end: eager, TorchScript and pt2 compiled for CUDA, verified at export;
  # timed; the choice for the GPU and its Triton entries (KIND_GPU).
  say "resnet18"
  cuda_step "export resnet18" toolkit export torchvision.models:resnet18 \
    --input x:1-8x3x224x224 --to onnx,torchscript,pt2 --device cuda --out "$WORK/resnet18"
  bench resnet18 "$WORK/resnet18" 1,8
  say "select and deploy"
  cuda_step "select resnet18" toolkit select "$WORK/resnet18" --device cuda --batch 8
  cuda_step "deploy resnet18" toolkit deploy "$WORK/resnet18" --triton "$WORK/repo"
  cuda_step "deploy resnet18 pt2" toolkit deploy "$WORK/resnet18" --triton "$WORK/repo" \
    --format pt2 --name r18_pt2
  cuda_step "Triton configs" show_configs

  # Detectors: the output contract on CUDA (the shapes detector with NMS in the graph, trained
  # here in seconds; torchvision's Faster R-CNN mobilenet 320).
  say "detectors"
  cuda_step "train the shapes detector" train_detector
  cuda_step "export shapes" toolkit export "$WORK/det/shapes_detector.ckpt" \
    --model toolkit.demo.detector:ShapesDetector --nms iou=0.5,score=0.1,max=20 \
    --to onnx,torchscript,pt2 --device cuda --out "$WORK/shapes"
  # (random weights rescaled to unit activations, and image-like samples, as
  # benchmarks/detection_cpu.py does: a plain random init ties every score, nothing is found in
  # N(0,1) noise, and the export refuses a parity check that proves nothing)
  python3 -c "import numpy as np; np.savez('$WORK/images.npz', \
x=np.random.default_rng(1).random((4, 3, 320, 320), dtype=np.float32))"
  cuda_step "export frcnn" toolkit export "$REPO/benchmarks/detection_cpu.py:livened" \
    --model-arg "name='frcnn'" --calib-data "$WORK/images.npz" --input x:1-4x3x320x320 \
    --to onnx,torchscript --device cuda --out "$WORK/frcnn"
  for name in shapes frcnn; do
    cuda_step "verify $name" toolkit verify "$WORK/$name" --device cuda --no-record
    bench "det_$name" "$WORK/$name" 1,4
  done

  # An Ultralytics YOLOv8n from its packaged YAML (random weights; its wheels travel with the
  # others): the Detect head recognised, decode and NMS in the graph.
  say "yolov8n"
  cuda_step "export yolov8n" toolkit export tests.detection.yolo_models:yolov8n \
    --input images:1-8x3x640x640 --to onnx,torchscript --device cuda --out "$WORK/yolov8n"
  bench yolov8n "$WORK/yolov8n" 1,8

  # A transformer with a shared sequence dimension and integer ids (BERT-base's shape, random
  # weights from a config), and a timm model: the image has transformers and timm.
  say "bert_base"
  cuda_step "export bert_base" toolkit export tests.source.hf_models:bert_base \
    --input input_ids:1-8xseq=16-128:int64:0-30522 --input attention_mask:1-8xseq:int64:0-2 \
    --to onnx,torchscript,pt2 --device cuda --out "$WORK/bert_base"
  bench bert_base "$WORK/bert_base" 1,8
  say "convnext_tiny (timm)"
  cuda_step "export convnext_tiny" toolkit export timm:create_model \
    --model-arg "model_name='convnext_tiny'" --input x:1-8x3x224x224 --to torchscript,pt2 \
    --device cuda --out "$WORK/convnext_tiny"
  bench convnext_tiny "$WORK/convnext_tiny" 1,8

  for name in mobilenet_v3_small demo_cnn; do
    say "$name"
    if [[ $name == demo_cnn ]]; then
      source=(toolkit.demo.model:DigitsCNN)
    else
      source=("torchvision.models:$name" --input x:1-8x3x224x224)
    fi
    cuda_step "export $name" toolkit export "${source[@]}" --to onnx,torchscript,pt2 \
      --device cuda --out "$WORK/$name"
    bench "$name" "$WORK/$name" 1,8
  done
} 2>&1 | tee "$OUT/models.log"

# -------------------------------------------------------------------------------------- summary
SUMMARY_REACHED=1
{
  say "summary ($MODE, $((SECONDS - STARTED)) s)"
  if [[ -s $SKIPPED ]]; then
    echo "$(wc -l <"$SKIPPED") steps skipped (no CUDA): $(paste -sd ',' "$SKIPPED" | sed 's/,/, /g')"
  fi
  if [[ -s $SKIPPED_TIME ]]; then
    echo "$(wc -l <"$SKIPPED_TIME") steps skipped for time (past ${DEADLINE} s):" \
      "$(paste -sd ',' "$SKIPPED_TIME" | sed 's/,/, /g')"
  fi
  if [[ -s $FAILURES ]]; then
    echo "FAILED steps: $(wc -l <"$FAILURES")"
    sed 's/^/  /' "$FAILURES"
  else
    echo "every step that ran passed"
  fi
} 2>&1 | tee -a "$OUT/gpu.txt"
ls -la "$OUT"
files=$(find "$OUT" -type f | wc -l)
if ((files > 8)); then
  echo "gpu_check.sh: $files files under $OUT; the device tool brings back only 8" >&2
  exit 1
fi
if [[ -s $FAILURES ]]; then exit 1; fi
