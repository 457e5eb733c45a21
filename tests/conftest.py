"""Shared, session-scoped fixtures: slow steps (checkpoints, the AOTInductor compile) run once."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `tests.models:...` must import like a user's package
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture(scope="session")
def two_io_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One checkpoint for all workers (`shared_dir`)."""
    import torch

    from tests.models import TwoInTwoOut, save_checkpoint

    root, lock = shared_dir(tmp_path_factory, "two_io_ckpt")
    path = root / "two_io.ckpt"
    with lock:
        if not path.is_file():
            root.mkdir(exist_ok=True)
            torch.manual_seed(0)
            save_checkpoint(TwoInTwoOut(hidden=16, scale=2.5), path)
    return path


@pytest.fixture(scope="session")
def two_io_bundle(two_io_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint exported to every saved format this machine runs, once for all workers
    (`shared_dir`; pt2 and ExecuTorch compile for tens of seconds). Readers share it; a test
    that changes a bundle works on a copy."""
    from toolkit import formats
    from toolkit.export.pipeline import SourceOptions

    # every saved format this machine runs (the extras installed), a GPU's engines aside
    targets = [f.name for f in formats.exportable() if f.saved and f.installed
               and not (f.triton and f.triton.gpu)]
    return shared_export(tmp_path_factory, "two_io_bundle", str(two_io_checkpoint), targets,
                         "two_io", source_options=SourceOptions(model="tests.models:TwoInTwoOut"))


def shared_export(tmp_path_factory: pytest.TempPathFactory, key: str, source: str,
                  targets: list[str], bundle: str, **options: Any) -> Path:
    """`source` exported to `targets` once for all workers (`shared_dir` `key`): the bundle
    directory `bundle` (its name is the Triton model's), which readers share; a test that
    changes a bundle works on a copy."""
    from toolkit.export.pipeline import export

    root, lock = shared_dir(tmp_path_factory, key)
    with lock:
        if not (root / "done").is_file():
            root.mkdir(exist_ok=True)
            result = export(source, targets, root / bundle, force=True, **options)
            assert result.exit_code == 0, result.to_dict()
            (root / "done").write_text("")
    return root / bundle


@pytest.fixture(scope="session")
def cnn_onnx_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_cnn exported to ONNX once; tests that change it work on a copy."""
    return shared_export(tmp_path_factory, "cnn_onnx", "tests.models:small_cnn", ["onnx"],
                         "cnn")


@pytest.fixture(scope="session")
def cnn_onnx_torchscript_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_cnn exported to ONNX and TorchScript once; tests that change it work on a copy."""
    return shared_export(tmp_path_factory, "cnn_onnx_torchscript", "tests.models:small_cnn",
                         ["onnx", "torchscript"], "cnn")


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, Any]:
    """A folder every xdist worker of this run sees (the workers' common temp root), and an
    open lock file on it: the first worker to take the lock builds the folder's contents,
    the others wait, then reuse them. Without xdist, the run's own temp root."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    lock = open(root / f"{name}.lock", "w")  # noqa: SIM115 (held by the caller's `with`)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return root / name, lock


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo raw-head detector, trained small (once for all workers: the trained module is
    saved whole beside its checkpoint): model, checkpoint dir, val data."""
    import json

    import torch

    from toolkit.demo.detection_data import make_detection_data
    from toolkit.demo.detector import train_detector

    out, lock = shared_dir(tmp_path_factory, "detector")
    with lock:
        if not (out / "done.json").is_file():
            out.mkdir(exist_ok=True)
            start = time.perf_counter()
            model = train_detector(epochs=6, n_train=1200, n_val=64, seed=0,
                                   checkpoint_dir=out)
            seconds = time.perf_counter() - start
            torch.save(model, out / "module.pt")
            (out / "done.json").write_text(json.dumps({"seconds": seconds}))
    model = torch.load(out / "module.pt", weights_only=False).eval()
    seconds = json.loads((out / "done.json").read_text())["seconds"]
    val = make_detection_data(128, split="val", seed=1)
    return {"model": model, "dir": out, "seconds": seconds, "val": val,
            "x": torch.from_numpy(val["x"])}



@pytest.fixture(scope="session")
def detector_onnx_bundle(trained: dict[str, Any],
                         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained demo detector with NMS appended, in ONNX, once for all workers. Readers
    share it; a test that exports more into it works on a copy."""
    from toolkit.detection.options import DetectionOptions
    from toolkit.export.pipeline import SourceOptions

    return shared_export(
        tmp_path_factory, "detector_onnx", str(trained["dir"] / "shapes_detector.ckpt"),
        ["onnx"], "det", source_options=SourceOptions(model="toolkit.demo.detector:ShapesDetector"),
        detection=DetectionOptions(nms="iou=0.5,score=0.3,max=20"))


#: the test files that take 30 s or more on 2 cores (`--junitxml` of a full run, AMD EPYC
#: 2-core, 2026-12-07), longest first. `make test` hands whole files to its two workers in
#: collection order; starting with the longest keeps one worker from finishing a long file
#: alone at the end (longest-processing-time-first). A file missing here only runs later.
LONGEST_FIRST = (
    "detection/test_instances_export.py", "lightning/test_callback.py",
    "detection/test_export_detection.py", "test_crash.py", "remote/test_fleet.py",
    "detection/test_torchvision_instances_cli.py", "detection/test_torchvision_instances.py",
    "detection/test_yolo.py", "export/test_int8_fallback.py", "detection/test_wrong_boxes.py",
    "export/test_pipeline.py", "test_gpu_check.py", "backends/openvino/test_openvino.py",
    "detection/test_postprocess.py", "cli/test_security.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = ROOT / "tests"
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def order(item: pytest.Item) -> int:
        path = Path(str(item.path))
        name = path.relative_to(tests).as_posix() if tests in path.parents else ""
        return rank.get(name, len(rank))

    items.sort(key=order)  # stable: each file's tests keep their order
