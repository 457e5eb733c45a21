"""Load, save and count an ONNX graph for the precision passes (external data past 2 GiB)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError

TWO_GIB = 2 * 1024**3
# -- ONNX helpers ------------------------------------------------------------------------------
def _load(src: Path) -> Any:
    import onnx

    if not Path(src).is_file():
        raise UsageError(f"{src}: ONNX file not found")
    try:
        return onnx.load(str(src))
    except Exception as err:  # onnx raises DecodeError/OSError variants
        raise UsageError(f"{src}: not a readable ONNX model ({err})") from None


def _save(model: Any, dst: Path) -> None:
    """Write atomically; weights stay inline unless the 2 GiB protobuf limit forces them out."""
    import onnx

    from toolkit.bundle import atomic_path

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    external = model.ByteSize() >= TWO_GIB
    if external:  # data file name must be final, so write it beside the model directly
        onnx.save(model, str(dst), save_as_external_data=True, location=dst.name + ".data")
        return
    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))


def op_counts(model_or_path: Any) -> dict[str, int]:
    """Op-type histogram of a model (path or ModelProto), for summaries and tests."""
    import onnx

    model = model_or_path
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model_or_path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node))


def exposing_session(model: Any, outputs: Sequence[str], *, optimize: bool = True,
                     disabled_optimizers: Sequence[str] = ()) -> Any:
    """An ONNX Runtime CPU session of `model` (a ModelProto, left unchanged) whose outputs also
    include the tensors named in `outputs`, for measuring inside the graph. optimize=False
    keeps every tensor as the graph names it (no fusion hides one)."""
    import copy

    import onnx
    import onnxruntime as ort

    model = copy.deepcopy(model)
    present = {o.name for o in model.graph.output}
    for name in outputs:
        if name not in present:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers))
