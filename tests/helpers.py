"""One place that decides which hardware-gated tests can run here, and says why not
(after Lightning's RunIf)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def skip_reason(*, cuda: bool = False, tensorrt: bool = False, ort_cuda: bool = False,
                module: str | None = None) -> str | None:
    """Why a test with these needs can't run on this machine (None when it can)."""
    if module and importlib.util.find_spec(module) is None:
        return f"{module} not installed"
    if tensorrt and importlib.util.find_spec("tensorrt") is None:
        return "TensorRT not installed (pip install 'toolkit[trt]' on a GPU machine)"
    if cuda or tensorrt or ort_cuda:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU on this machine"
    if ort_cuda:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider (install the 'gpu' extra)"
    return None


def requires(**needs: object) -> pytest.MarkDecorator:
    reason = skip_reason(**needs)  # type: ignore[arg-type]
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def damaged_onnx_copy(bundle_dir: Path, dest: Path, name_part: str,
                      change: Callable[[np.ndarray], np.ndarray], *,
                      rehash: bool = True) -> Path:
    """A copy of a bundle whose model.onnx has the first initializer containing `name_part`
    changed. `rehash` updates the manifest's sha256, as a faulty exporter would have written
    it; without it the file looks tampered with after export."""
    import onnx
    from onnx import numpy_helper

    from toolkit.bundle import sha256_file

    shutil.copytree(bundle_dir, dest)
    model = onnx.load(str(dest / "model.onnx"))
    hits = [t for t in model.graph.initializer if name_part in t.name]
    assert hits, [t.name for t in model.graph.initializer]
    tensor = hits[0]
    tensor.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(tensor).copy()),
                                            tensor.name))
    onnx.save(model, str(dest / "model.onnx"))
    if rehash:
        manifest = json.loads((dest / "manifest.json").read_text())
        for record in manifest["artifacts"]:
            if record.get("path") == "model.onnx":
                record["sha256"] = sha256_file(dest / "model.onnx")
        (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def assert_reproduces_golden(bundle_dir: Path, format: str, *, rtol: float,
                             atol: float) -> None:
    """The bundle's artifact of `format`, through its runner, gives the golden outputs."""
    import numpy as np

    from toolkit import runtime
    from toolkit.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    with runtime.load(bundle, format=format) as runner:
        for sample in bundle.golden():
            outputs = runner.infer(sample.inputs)
            for name, expected in sample.outputs.items():
                np.testing.assert_allclose(outputs[name], expected, rtol=rtol, atol=atol)


def triton_config(bundle_dir: Path, format: str, repo: Path) -> str:
    """`toolkit deploy BUNDLE --triton REPO --format F --name net`: the config.pbtxt written
    (asserting the deploy succeeded and put the served file in version 1)."""
    from typer.testing import CliRunner

    from toolkit import formats
    from toolkit.cli.app import app

    result = CliRunner().invoke(app, ["deploy", str(bundle_dir), "--triton", str(repo),
                                      "--format", format, "--name", "net"])
    assert result.exit_code == 0, result.output
    assert (repo / "net" / "1" / formats.get(format).triton.filename).is_file()
    return (repo / "net" / "config.pbtxt").read_text()
