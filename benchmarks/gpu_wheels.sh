#!/usr/bin/env bash
# Downloads, HERE (where pip reaches an index), the wheels that benchmarks/gpu_check.sh installs
# on the GPU machine, which has no network: the project's requirements (core, the export,
# detection, triton and demo extras, and what `pytest -m gpu` needs to collect) that the GPU
# machine's image lacks, and what those need in turn.
#
#   bash benchmarks/gpu_wheels.sh [--python 3.12|3.11] [--dest DIR]
#   bash benchmarks/gpu_wheels.sh --list             # the pinned NAME==VERSION, one a line
#   bash benchmarks/gpu_wheels.sh --list-models      # the test models' pins (ultralytics)
#   bash benchmarks/gpu_wheels.sh --image-packages   # what the image already has, one a line
#
# Default: Python 3.12 (the GPU machine's python3) into .whl/ (git-ignored); the device tool
# carries it when `run` names it: carry=[".whl"]. --python 3.11 fetches the same pins for this
# machine's Python, for `gpu_check.sh --rehearse`. A wheel already in DIR is not fetched again;
# wheels of these packages at another version or for another Python are removed from DIR (two
# versions of one package stop the whole offline install). Other wheels in DIR are left alone.
set -euo pipefail

# The pins: one version each, wheels for cp311 and cp312 on manylinux x86-64 (or pure Python),
# and consistent with each other (pydantic names its pydantic-core exactly).
PACKAGES=(
  pydantic==2.14.4           # core: toolkit.manifest
  pydantic-core==2.50.5      #   pydantic 2.14.4 pins pydantic-core==2.50.5
  annotated-types==0.8.0     #   pydantic: annotated-types>=0.6.0
  typing-inspection==0.4.5   #   pydantic: typing-inspection>=0.4.4
  typing-extensions==4.16.0  #   pydantic, pydantic-core: >=4.16.0; gpu_check.sh installs it
                             #   only where the image's is older (never a downgrade)
  faster-coco-eval==1.8.0    # export and detection extras (needs numpy only)
  tritonclient==2.71.0       # triton extra; tests/deploy/test_triton.py imports it to collect.
                             #   2.71.0: gencode with no protobuf runtime check (2.73.0 needs
                             #   protobuf>=6.33.5 at import) and grpcio>=1.67.1
  python-rapidjson==1.25     #   tritonclient: python-rapidjson>=0.9.1
)
# Test-only models the image lacks (the dev extra's, never the toolkit's own requirements): an
# Ultralytics YOLO built from its packaged YAML. Building and running one imports neither
# polars nor the rest of ultralytics' requirements that the image lacks.
MODEL_PACKAGES=(
  ultralytics==8.4.190
  ultralytics-thop==2.2.3      #   ultralytics: ultralytics-thop>=2.0.18
  ultralytics-platform==0.1.99 #   ultralytics: imported by ultralytics.utils
)

# The image 'cuda' of the nvidia-h200 machine: /work/.library/device/KINDS.md, "Python packages
# already there", as read on a machine running it on 2026-11-17 (tests/test_gpu_check.py holds
# the same list and checks the two agree). gpu_check.sh --rehearse exposes only these.
IMAGE_PACKAGES="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc
anyio attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama
contourpy coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler
cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py
mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64)

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

PY=3.12
DEST=.whl
while (($#)); do
  case $1 in
    --python) PY=${2:?--python needs 3.12 or 3.11}; shift 2 ;;
    --dest) DEST=${2:?--dest needs a directory}; shift 2 ;;
    --list) printf '%s\n' "${PACKAGES[@]}"; exit 0 ;;
    --list-models) printf '%s\n' "${MODEL_PACKAGES[@]}"; exit 0 ;;
    --image-packages) tr -s ' ' '\n' <<<"$IMAGE_PACKAGES"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_wheels.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case $PY in
  3.11|3.12) ;;
  *) echo "gpu_wheels.sh: --python must be 3.12 or 3.11, not '$PY'" >&2; exit 2 ;;
esac
PYTAG="cp${PY/./}"
PYTHON=${PYTHON:-python3}
mkdir -p "$DEST"

platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done

# A wheel file fits when it is this version and pure Python or built for this CPython.
fits() {  # fits FILE VERSION
  local base=${1##*/} version=$2
  [[ $base == *-"$version"-* ]] || return 1
  [[ $base == *-py3-none-any.whl || $base == *-py2.py3-none-any.whl \
     || $base == *-"$PYTAG"-"$PYTAG"-*.whl || $base == *-"$PYTAG"-abi3-*.whl ]]
}

for spec in "${PACKAGES[@]}" "${MODEL_PACKAGES[@]}"; do
  name=${spec%%==*}
  version=${spec#*==}
  stem=${name//-/_}  # wheel file names spell the distribution with underscores
  have=""
  shopt -s nullglob nocaseglob
  for file in "$DEST/$stem"-*.whl; do
    if [[ -z $have ]] && fits "$file" "$version"; then
      have=$file
    else
      echo "removing $file (not $name $version for $PYTAG)"
      rm -f -- "$file"
    fi
  done
  shopt -u nullglob nocaseglob
  if [[ -n $have ]]; then
    echo "have ${have##*/}"
    continue
  fi
  echo "downloading $spec for $PYTAG"
  # Into a folder of its own, then moved: a run beside this one never sees half a wheel.
  # pip's own messages are kept, and shown whole on failure.
  fetch=$(mktemp -d "$DEST/.download.XXXXXX")
  if ! "$PYTHON" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version "$PY" --implementation cp "${platform_args[@]}" \
      -d "$fetch" "$spec" >"$fetch/log" 2>&1; then
    cat "$fetch/log" >&2
    rm -rf "$fetch"
    echo "gpu_wheels.sh: FAILED to download $spec for Python $PY (pip's output above)" >&2
    exit 1
  fi
  shopt -s nullglob nocaseglob
  got=("$fetch/${stem}-${version}-"*.whl)
  shopt -u nullglob nocaseglob
  if ((${#got[@]} != 1)) || ! fits "${got[0]}" "$version"; then
    cat "$fetch/log" >&2
    echo "gpu_wheels.sh: FAILED: expected one wheel of $spec for $PYTAG, pip fetched:" \
      "${got[*]:-none}" >&2
    rm -rf "$fetch"
    exit 1
  fi
  mv -f "${got[0]}" "$DEST/"
  rm -rf "$fetch"
done

total=0
count=0
for spec in "${PACKAGES[@]}" "${MODEL_PACKAGES[@]}"; do
  stem=${spec%%==*}
  stem=${stem//-/_}
  shopt -s nocaseglob
  for file in "$DEST/${stem}-${spec#*==}-"*.whl; do
    size=$(stat -c %s "$file")
    total=$((total + size))
    count=$((count + 1))
    printf '%10d  %s\n' "$size" "${file##*/}"
  done
  shopt -u nocaseglob
done
awk -v n="$count" -v b="$total" -v d="$DEST" -v py="$PY" \
  'BEGIN { printf "total: %d wheels, %d bytes (%.1f MiB) in %s for Python %s\n", n, b, b / 1048576, d, py }' 
if ((count != ${#PACKAGES[@]} + ${#MODEL_PACKAGES[@]})); then
  echo "gpu_wheels.sh: FAILED: $count wheels for $((${#PACKAGES[@]} + ${#MODEL_PACKAGES[@]})) packages" >&2
  exit 1
fi
if ((total > 40 * 1048576)); then
  echo "gpu_wheels.sh: FAILED: $total bytes is over the 40 MiB budget" >&2
  exit 1
fi
