"""`toolkit inspect BUNDLE|FILE`: inputs, outputs, shapes, dtypes, sizes, opset, versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.console import console, human_size, print_json


def inspect_command(
    target: Annotated[Path, typer.Argument(help="A bundle directory or an artifact file.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
) -> int:
    """Show what a bundle or artifact holds."""
    from toolkit.bundle import Bundle
    from toolkit.errors import UsageError

    if target.is_dir():
        info = _bundle_info(Bundle.open(target))
    elif target.is_file():
        info = _file_info(target)
    else:
        raise UsageError(f"{target} not found")
    if json_output:
        print_json(info)
    else:
        _render(info)
    return 0


def _bundle_info(bundle: Any) -> dict[str, Any]:
    artifacts = []
    for record in bundle.artifacts:
        row = {k: record.get(k) for k in ("format", "precision", "path", "size_bytes",
                                          "exporter", "opset", "nodes", "device", "sha256")}
        parity = record.get("parity")
        row["parity"] = None if parity is None else ("pass" if parity.get("passed") else "FAIL")
        if record.get("bench"):
            row["bench_p50_ms"] = record["bench"].get("p50_ms")
        artifacts.append(row)
    manifest = bundle.manifest
    return {
        "bundle": str(bundle.root), "inputs": manifest["inputs"],
        "outputs": manifest["outputs"], "source": manifest.get("source"),
        "golden": manifest.get("golden"), "artifacts": artifacts,
        "environment": manifest.get("environment"),
    }


def _file_info(path: Path) -> dict[str, Any]:
    from toolkit.bundle import Bundle

    if Bundle.is_bundle(path.parent):
        info = _bundle_info(Bundle.open(path.parent))
        info["artifacts"] = [a for a in info["artifacts"] if a["path"] == path.name]
        if info["artifacts"]:
            return info
    if path.suffix == ".onnx":
        return _onnx_info(path)
    return {"file": str(path), "size_bytes": path.stat().st_size,
            "note": "inputs and outputs are recorded in the bundle's manifest.json"}


def _onnx_info(path: Path) -> dict[str, Any]:
    import onnx

    from toolkit.errors import UsageError
    from toolkit.sources import _ONNX_DTYPES

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends
        raise UsageError(f"{path} is not a readable ONNX model ({err})") from None

    def dims(value: Any) -> list[Any]:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in value.type.tensor_type.shape.dim]

    initializers = {i.name for i in model.graph.initializer}
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {
        "file": str(path), "size_bytes": path.stat().st_size,
        "inputs": [{"name": v.name, "dtype": _ONNX_DTYPES.get(v.type.tensor_type.elem_type),
                    "shape": dims(v)} for v in model.graph.input if v.name not in initializers],
        "outputs": [{"name": v.name, "dtype": _ONNX_DTYPES.get(v.type.tensor_type.elem_type),
                     "shape": dims(v)} for v in model.graph.output],
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "nodes": len(model.graph.node), "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }


def _render(info: dict[str, Any]) -> None:
    from rich.table import Table

    title = info.get("bundle") or info.get("file")
    console.print(f"[bold]{title}[/]")
    if "size_bytes" in info:
        console.print(f"size {human_size(info['size_bytes'])}")
    if info.get("inputs"):
        table = Table("input", "dtype", "shape", "min", "opt", "max", title_justify="left")
        for spec in info["inputs"]:
            table.add_row(spec["name"], str(spec["dtype"]), str(spec.get("shape")),
                          str(spec.get("min", "")), str(spec.get("opt", "")),
                          str(spec.get("max", "")))
        console.print(table)
    if info.get("outputs"):
        table = Table("output", "dtype", "shape")
        for spec in info["outputs"]:
            table.add_row(spec["name"], str(spec["dtype"]), str(spec.get("shape", "")))
        console.print(table)
    if info.get("artifacts"):
        table = Table("format", "precision", "file", "size", "exporter", "opset", "nodes",
                      "parity", title="artifacts", title_justify="left")
        for a in info["artifacts"]:
            table.add_row(a["format"], a.get("precision") or "fp32", str(a.get("path")),
                          human_size(a.get("size_bytes")), str(a.get("exporter") or ""),
                          str(a.get("opset") or ""), str(a.get("nodes") or ""),
                          str(a.get("parity") or "not checked"))
        console.print(table)
    for key in ("opset", "nodes", "producer"):
        if key in info:
            console.print(f"{key}: {info[key]}")
    if info.get("ops"):
        top = ", ".join(f"{op}×{n}" for op, n in list(info["ops"].items())[:12])
        console.print(f"ops: {top}")
    if info.get("source"):
        src = info["source"]
        console.print(f"source: {src.get('kind')} {src.get('path')} ({src.get('class', '')})")
    env = info.get("environment")
    if env:
        libs = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items())
        console.print(f"exported on: {env.get('cpu')} · python {env.get('python')} · {libs}")
    if info.get("note"):
        console.print(info["note"])
