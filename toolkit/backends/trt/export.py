"""The TensorRT format's exporter: an engine from the bundle's ONNX of the same precision
(TensorRT's parser, strongly typed), or from the PyTorch model through Torch-TensorRT."""

from __future__ import annotations

from typing import Any

from toolkit.errors import BackendUnavailable, UsageError
from toolkit.export.job import ExportJob


def export_artifact(job: ExportJob) -> dict[str, Any]:
    if job.format.uses_model(job.options):
        return _from_model(job)
    return _from_onnx(job)


def _from_onnx(job: ExportJob) -> dict[str, Any]:
    from toolkit.backends.trt.build import build_engine

    (source_format,) = job.format.builds_from
    assert job.ensure is not None and job.dest is not None
    onnx_record = job.ensure(source_format, job.precision, job.format.int8_layout_needed)
    bundle = job.bundle
    try:
        record = build_engine(bundle.checked_path(onnx_record), job.dest, bundle.inputs,
                              job.format_options, precision=job.precision,
                              device=cuda_device(job.options.device))
    except BackendUnavailable as missing:
        flag = f" --precision {job.precision}" if job.precision != "fp32" else ""
        raise BackendUnavailable(
            f"{missing} — the ONNX is in the bundle: copy {bundle.root} to the target and run "
            f"`toolkit export {bundle.root} --to {job.format.name}{flag}`"
        ) from missing
    record.pop("path", None)
    return {**record, "from_onnx": onnx_record.path}


def _from_model(job: ExportJob) -> dict[str, Any]:
    """Torch-TensorRT route: the engine comes from the PyTorch model, not the ONNX."""
    from toolkit.backends.trt.torch_tensorrt import build_engine_from_model

    if job.precision != "fp32":
        raise UsageError(f"--via {job.format_options.via} builds fp32 engines; reduced precision "
                         "comes from the ONNX (--via onnx --precision ...)")
    assert job.dest is not None
    return build_engine_from_model(job.need_model(), job.dest, job.format_options,
                                   job.format_options.via,
                                   device=cuda_device(job.options.device))


def cuda_device(device: str) -> str:
    """The GPU an engine is built for: --device cuda:N names one; otherwise the current."""
    return device if device.startswith("cuda") else "cuda"
