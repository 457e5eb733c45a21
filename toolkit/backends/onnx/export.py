"""ONNX export: torch.onnx.export(dynamo=True), falling back to the TorchScript-based exporter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import interrupts
from toolkit.errors import ExportFailed, UsageError, first_line
from toolkit.export.common import dynamic_shapes, example_args, lightning_export_mode, quiet
from toolkit.export.job import ExportJob

if TYPE_CHECKING:  # torch is imported only where a model is exported: a device has none
    from toolkit.source.wrapper import LoadedModel

TWO_GIB = 2 * 1024**3
#: test-only: weights at or above this many bytes go to external data (default: protobuf's
#: 2 GiB limit), so the >2 GiB path is tested on a small model
EXTERNAL_DATA_ENV = "TOOLKIT_ONNX_EXTERNAL_DATA_MIN_BYTES"


def _parameter_bytes(model: LoadedModel) -> int:
    return sum(p.numel() * p.element_size() for p in model.module.parameters())


def _needs_external_data(model: LoadedModel) -> bool:
    import os

    threshold = int(os.environ.get(EXTERNAL_DATA_ENV) or TWO_GIB)
    return _parameter_bytes(model) >= threshold


def name_external_data(onnx_path: Path, final_name: str) -> bool:
    """Point the graph's external tensors at `final_name` (the weights file as the bundle
    will name it: model.onnx.data), since the exporter named them after the temp file the
    graph was written to. True when the graph has external data."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    external = [t for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    for tensor in external:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = final_name
    if external:
        onnx.save_model(proto, str(onnx_path))
    return bool(external)


def _export_dynamo(model: LoadedModel, dest: Path, opset: int | None) -> None:
    import torch

    with quiet():
        program = torch.onnx.export(
            model.flat, example_args(model), None,
            input_names=[s.name for s in model.inputs],
            output_names=[o.name for o in model.outputs],
            dynamic_shapes=dynamic_shapes(model), opset_version=opset,
            dynamo=True, optimize=True, verbose=False, report=False,
        )
        # Weights stay inside the file unless the 2 GB protobuf limit forces external data:
        # then they go to `<dest>.data`, which the pipeline renames beside the final file.
        program.save(str(dest), external_data=_needs_external_data(model))


def _export_legacy(model: LoadedModel, dest: Path, opset: int | None) -> None:
    import torch

    from toolkit.spec import shared_dims

    names, _ = shared_dims(model.inputs)  # one ONNX dim_param per symbolic dimension
    axes: dict[str, dict[int, str]] = {}
    for spec in model.inputs:
        axes[spec.name] = {a: names[(spec.name, a)] for a in spec.dynamic_dims}
    if any(s.has_dynamic_batch for s in model.inputs):
        for out in model.outputs:
            axes[out.name] = {0: "batch"}
    module = model.flat
    # A module may name the module this exporter should trace instead (a torchvision detector:
    # a scripted loop over images keeps the batch dynamic where tracing would unroll it).
    hook = getattr(model.module, "toolkit_legacy_onnx_module", None)
    if hook is not None:
        module = hook(*example_args(model)) or module
    with quiet():
        torch.onnx.export(
            module, example_args(model), str(dest),
            input_names=[s.name for s in model.inputs],
            output_names=[o.name for o in model.outputs],
            dynamic_axes=axes or None, opset_version=opset or 17, dynamo=False,
        )


def export_onnx(model: LoadedModel, dest: Path, *, opset: int | None = None) -> dict[str, Any]:
    """Write `dest`; returns record fields (exporter used, opset, nodes, fallback reason)."""
    from toolkit.backends.onnx import nms  # noqa: F401 - puts ONNX's NMS node in detectors

    with lightning_export_mode(model.module):
        return _export_onnx(model, dest, opset)


def _with_cause(err: BaseException) -> str:
    """The error's first line and its innermost cause's: torch.onnx's own line only says
    which of its steps failed ("step 1/3"), the cause says why (the guard, the op)."""
    inner, seen = err, {id(err)}
    while inner.__cause__ is not None and id(inner.__cause__) not in seen:
        inner = inner.__cause__
        seen.add(id(inner))
    if inner is err:
        return first_line(err)
    return f"{first_line(err, 120)} Cause: {first_line(inner, 240)}"


def _export_onnx(model: LoadedModel, dest: Path, opset: int | None) -> dict[str, Any]:
    import onnx

    from toolkit.export.torch_export import declared_limit  # torch: not on an edge device

    notes: list[str] = []
    exporter = "torch.onnx dynamo"
    # the dynamo exporter starts with torch.export: a model that says it can't skips it
    why_not_dynamo = declared_limit(model)
    if why_not_dynamo:
        notes.append("the TorchScript-based exporter: torch.export, where the dynamo exporter "
                     f"starts, can't take this model ({why_not_dynamo})")
    else:
        try:
            _export_dynamo(model, dest, opset)
        except Exception as dynamo_error:  # any exporter failure: try the legacy route
            interrupts.raise_if_pending()  # torch.export wraps Ctrl-C: it is not a failure
            why_not_dynamo = _with_cause(dynamo_error)
            notes.append(f"dynamo exporter failed ({why_not_dynamo}); fell back to the "
                         "TorchScript-based exporter")
    if why_not_dynamo:
        try:
            _export_legacy(model, dest, opset)
            exporter = "torch.onnx torchscript (fallback)"
        except Exception as legacy_error:
            raise ExportFailed(
                f"ONNX export failed with both exporters. dynamo: {why_not_dynamo} | "
                f"torchscript: {first_line(legacy_error)}"
            ) from legacy_error
    try:
        onnx.checker.check_model(str(dest), full_check=False)
    except onnx.checker.ValidationError as err:
        raise ExportFailed(f"the exported ONNX fails onnx.checker: {first_line(err)}") from err
    proto = onnx.load(str(dest), load_external_data=False)
    opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset_used != opset:
        raise ExportFailed(
            f"--opset {opset}: the exporter produced opset {opset_used} and could not convert "
            f"it (the dynamo exporter starts at 18 and converts down only where ONNX has an "
            f"adapter for every op of the model); try a later --opset, or leave it out")
    _check_dynamic_dims(model, proto, exporter)
    return {"exporter": exporter, "opset": opset_used, "nodes": len(proto.graph.node),
            "notes": notes}


def _check_dynamic_dims(model: LoadedModel, proto: Any, exporter: str = "torch.onnx") -> None:
    """A dimension declared dynamic must not come out fixed: that would fail at run time. The
    exporter is named: the model may be innocent (torch.onnx's dynamo route fixed RAFT's
    batch at 2 where torch.export alone kept it dynamic)."""
    by_name = {v.name: v for v in proto.graph.input}
    for spec in model.inputs:
        value = by_name.get(spec.name)
        if value is None:
            raise ExportFailed(f"the exported ONNX lost input '{spec.name}'")
        dims = value.type.tensor_type.shape.dim
        for axis in spec.dynamic_dims:
            if axis < len(dims) and dims[axis].HasField("dim_value"):
                raise ExportFailed(
                    f"input '{spec.name}' dimension {axis} was declared dynamic but the ONNX "
                    f"that {exporter} wrote fixes it to {dims[axis].dim_value} (the model, or "
                    "the exporter: the torch.export-based formats may keep it dynamic); for "
                    "ONNX pass --static or a fixed --input shape")


def export_artifact(job: ExportJob) -> dict[str, Any]:
    fields = _export_artifact(job)
    assert job.dest is not None
    final = job.bundle.root / job.format.filename(job.precision, job.layout)
    (data_name,) = job.format.companions(final.name)
    if name_external_data(job.dest, data_name):
        fields["notes"] = [*fields.get("notes", []),
                           f"weights in {data_name} (external data: over the 2 GB protobuf "
                           "limit); copy both files together"]
    return fields


def _export_artifact(job: ExportJob) -> dict[str, Any]:
    """fp32 from the model; reduced precisions rewritten from the bundle's fp32 ONNX."""
    assert job.dest is not None
    if job.precision == "fp32":
        return export_onnx(job.need_model(), job.dest, opset=job.format_options.opset)
    from toolkit.backends.onnx.precision.steps import make_reduced_onnx

    base = job.bundle.artifact(job.format.name, "fp32")
    if base is None:
        raise UsageError(f"--precision {job.precision} converts the fp32 ONNX; include fp32: "
                         f"--precision fp32,{job.precision}")
    return make_reduced_onnx(job.bundle, base, job.dest, job.precision,
                             job.options.precision_options, layout=job.layout)
