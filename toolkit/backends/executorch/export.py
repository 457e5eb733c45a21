"""torch.export -> ExecuTorch edge program -> XNNPACK delegate -> .pte.

fp32 lowers the exported program as it is. INT8 quantises it first with PT2E and the XNNPACK
quantiser (symmetric, per-channel weights), calibrated on --calib-data, so that XNNPACK runs
the quantised operators; what the delegate can't take runs on ExecuTorch's portable kernels,
and the record says how much that is."""

from __future__ import annotations

from collections import Counter
from typing import Any

from toolkit import tasks
from toolkit.environment import library_version
from toolkit.errors import ExportFailed, UsageError, first_line
from toolkit.export.common import quiet
from toolkit.export.job import ExportJob
from toolkit.export.torch_export import export_program
from toolkit.formats import Format

from .imports import executorch_module

QUANTIZER = "XNNPACKQuantizer (PT2E), symmetric int8, per-channel weights"


def export_artifact(job: ExportJob) -> dict[str, Any]:
    assert job.dest is not None
    if job.options.device != "cpu":
        raise UsageError(f"--to {job.format.name} --device {job.options.device}: ExecuTorch's "
                         "XNNPACK delegate runs on the CPU; export with --device cpu")
    _require(job.format)
    model = job.need_model()
    # ExecuTorch plans memory at each dimension's upper bound, but with a delegated conv it
    # takes the traced size as the bound (a program traced at batch 2 of 1-64 refused batch
    # 64: "Attempted to resize a bounded tensor"); traced at the largest batch, it holds all
    largest = _largest_batch(model)
    program = export_program(model, batch=largest)
    _check_kernels(program)
    fields: dict[str, Any] = {}
    notes: list[str] = []
    if job.precision == "int8":
        program, fields = _quantised(job, program, largest)
    edge = _lowered(program)
    counts = _op_counts(edge)
    try:
        with quiet():
            buffer = edge.to_executorch().buffer
    except Exception as err:  # exir raises many types; the first line names the operator
        raise ExportFailed(f"ExecuTorch could not emit the program: {first_line(err, 300)}"
                           ) from err
    with open(job.dest, "wb") as out:
        out.write(buffer)
    delegated, portable = counts
    if portable:
        notes.append(f"{sum(portable.values())} of {delegated + sum(portable.values())} "
                     f"operators run on ExecuTorch's portable kernels, not XNNPACK: "
                     f"{', '.join(name for name, _ in portable.most_common(4))}")
    if job.precision == "int8" and job.options.precision_options.eval_data:
        fields["accuracy"] = _accuracy(job)
    return {"exporter": f"torch.export + ExecuTorch {library_version('executorch')} (XNNPACK)",
            "device": "cpu", "delegate": "xnnpack", "delegated_ops": delegated,
            "portable_ops": sum(portable.values()),
            "portable_op_names": [name for name, _ in portable.most_common(64)],
            "notes": notes, **fields}


#: operators torch.export keeps that ExecuTorch has no kernel for, and what to do instead
_NO_KERNEL = {
    "torchvision.nms": "ExecuTorch has no NMS kernel (torchvision::nms has no out variant): "
                       "export the detector's raw head without --nms and run NMS in the "
                       "application, or export a format whose graph carries NMS as an operator",
}


def _check_kernels(program: Any) -> None:
    """Refused before lowering, in one line, rather than by the emitter's missing-variant
    error minutes later."""
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target).split(".default")[0].replace("::", ".")
        for op, why in _NO_KERNEL.items():
            if name.startswith(op):
                raise ExportFailed(f"the program calls {op.replace('.', '::')}: {why}")


def _largest_batch(model: Any) -> int | None:
    from toolkit.spec import batch_range

    rng = batch_range(model.inputs)
    return rng[2] if rng else None


def _require(fmt: Format) -> None:
    # the first import of ExecuTorch's compiler (it brings torchao) goes through the quiet path
    executorch_module("executorch.exir", f"--to {fmt.name}")


def _quantised(job: ExportJob, program: Any, batch: int | None
               ) -> tuple[Any, dict[str, Any]]:
    """PT2E: annotate with the XNNPACK quantiser, calibrate, convert, export again."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from toolkit.export.common import dynamic_shapes
    from toolkit.export.precision.data import calibration_feeds

    model = job.need_model()
    feeds = calibration_feeds(job.bundle, job.options.precision_options)
    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = XNNPACKQuantizer()
    if tasks.of(job.bundle.detection).quantize_network_only:
        # a detector's post-processing (decoding, NMS, indices) stays float: only the
        # network's convolutions and linear layers are quantised
        for layer in (torch.nn.Conv2d, torch.nn.Linear):
            quantizer.set_module_type(layer, config)
    else:
        quantizer.set_global(config)
    names = [spec.name for spec in model.inputs]
    samples = 0
    try:
        with quiet():
            prepared = prepare_pt2e(program.module(), quantizer)
            with torch.no_grad():
                for feed in feeds:
                    prepared(*(torch.from_numpy(feed[name]) for name in names))
                    samples += len(feed[names[0]])
            converted = convert_pt2e(prepared)
            # the converted graph takes the inputs one by one, where FlatModule takes *args
            shapes = dynamic_shapes(model)
            example = model.to_tensors(model.example_feed(batch=batch))
            program = torch.export.export(converted, example,
                                          dynamic_shapes=shapes[0] if shapes else None)
    except UsageError:
        raise
    except Exception as err:  # torchao and torch.export raise many types
        raise ExportFailed(f"PT2E INT8 quantisation failed: {first_line(err, 300)}") from err
    return program, {"quantizer": QUANTIZER, "calibration_samples": samples}


def _lowered(program: Any) -> Any:
    """The edge program with XNNPACK's partitions lowered into it."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with quiet():
            return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    except Exception as err:  # exir raises many types
        raise ExportFailed(f"ExecuTorch could not lower the program to XNNPACK: "
                           f"{first_line(err, 300)}") from err


def _op_counts(edge: Any) -> tuple[int, Counter[str]]:
    """Operators the XNNPACK delegate took, and the portable ones by name."""
    graph_module = edge.exported_program().graph_module
    delegated = 0
    for name, child in graph_module.named_children():
        original = getattr(child, "original_module", None)
        if name.startswith("lowered_module") and original is not None:
            delegated += sum(node.op == "call_function" for node in original.graph.nodes)
    portable: Counter[str] = Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or "delegate" in str(node.target):
            continue
        target = str(getattr(node.target, "__name__", node.target))
        # getitem unpacks a delegate's outputs; sym_size reads a dynamic dimension (a number,
        # not a tensor operator)
        if target == "getitem" or target.startswith(("_operator", "sym_size")):
            continue
        portable[target.removeprefix("aten.").split(".default")[0]] += 1
    return delegated, portable


def _accuracy(job: ExportJob) -> dict[str, Any]:
    """The task's score on --eval-data of the PyTorch model and of this INT8 program."""
    from toolkit import formats
    from toolkit.export.precision.data import accuracy_between
    from toolkit.runtime import model_runner

    from .runner import ExecuTorchRunner

    assert job.dest is not None
    bundle = job.bundle
    reference = model_runner(job.need_model(), formats.REFERENCE)
    reduced = ExecuTorchRunner(job.dest, inputs=bundle.inputs, outputs=bundle.outputs,
                               precision="int8")
    return accuracy_between(bundle, reference, reduced, job.options.precision_options)
