"""Measure the error of healthy and broken exports, to choose the parity presets.

For a few small real models (random weights, batch 2) this exports fp32 ONNX with the dynamo
exporter, derives an fp16 model (onnxconverter-common, fp32 I/O kept) and an int8 QDQ model
(onnxruntime static quantization, calibrated on random inputs), plants defects in the fp32
graph (the middle conv's weights x1.03 and x1.05, a NaN in its bias, the two outputs
swapped), runs every variant with onnxruntime and prints, per output, the metrics
toolkit.parity computes and the verdict of every preset. The healthy rows must PASS their
own preset and the broken rows must FAIL the fp32 one; the distance between them is the margin.

    .venv/bin/python benchmarks/tolerance_study.py   # -> results/tolerance_study_<host>.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit import parity

PRESET_NAMES = ("fp32", "fp16", "bf16", "int8")


def small_cnn():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4096, 512), nn.ReLU(), nn.Linear(512, 10),
    )


def models() -> dict[str, tuple[object, tuple[int, ...]]]:
    import torch
    import torchvision

    torch.manual_seed(0)
    return {
        "small_cnn": (small_cnn(), (3, 32, 32)),
        "resnet18": (torchvision.models.resnet18(), (3, 224, 224)),
        "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small(), (3, 224, 224)),
    }


def two_outputs(model):
    """Logits and probabilities: two same-shape outputs, so a swap is observable."""
    import torch

    class TwoOutputs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.inner(x)
            return logits, torch.softmax(logits, dim=1)

    return TwoOutputs(model).eval()


def export(model, shape: tuple[int, ...], path: Path) -> None:
    import torch

    torch.onnx.export(
        model, (torch.zeros(2, *shape),), str(path), dynamo=True, input_names=["x"],
        output_names=["logits", "probs"], verbose=False,
    )


def run_onnx(model_bytes: bytes, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(None, feed), strict=True)) for feed in feeds]


def middle_conv(model):
    """The middle Conv node that reads an initializer weight, and that weight's name."""
    inits = {init.name for init in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    node = convs[len(convs) // 2]
    return node, node.input[1]


def middle_bias(model):
    """The bias initializer of the middle Conv/Gemm that has one (exporters drop zero biases,
    e.g. a conv fused with a freshly initialised BatchNorm)."""
    inits = {init.name for init in model.graph.initializer}
    biased = [n.input[2] for n in model.graph.node
              if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits]
    return biased[len(biased) // 2] if biased else None


def to_fp16(model):
    """fp16 with fp32 I/O. onnxconverter-common mistypes a graph output that also feeds another
    node (here logits -> softmax), so such outputs first get an Identity of their own."""
    import onnx
    from onnx import helper
    from onnxconverter_common import float16

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    consumed = {i for n in fixed.graph.node for i in n.input}
    for out in fixed.graph.output:
        if out.name not in consumed:
            continue
        inner = f"{out.name}__value"
        for n in fixed.graph.node:
            n.input[:] = [inner if i == out.name else i for i in n.input]
            n.output[:] = [inner if o == out.name else o for o in n.output]
        fixed.graph.node.append(helper.make_node("Identity", [inner], [out.name]))
    return float16.convert_float_to_float16(fixed, keep_io_types=True)


def planted(model_fp32) -> dict[str, bytes]:
    import onnx
    from onnx import numpy_helper

    variants: dict[str, bytes] = {}
    node, weight = middle_conv(model_fp32)
    bias = middle_bias(model_fp32)
    for label, factor in (("conv x1.03", 1.03), ("conv x1.05", 1.05)):
        broken = onnx.ModelProto()
        broken.CopyFrom(model_fp32)
        for init in broken.graph.initializer:
            if init.name == weight:
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, weight))
        variants[f"{label} ({node.name})"] = broken.SerializeToString()
    if bias is not None:
        broken = onnx.ModelProto()
        broken.CopyFrom(model_fp32)
        for init in broken.graph.initializer:
            if init.name == bias:
                arr = numpy_helper.to_array(init).copy()
                arr[0] = np.nan
                init.CopyFrom(numpy_helper.from_array(arr, bias))
        variants[f"NaN in {bias}[0]"] = broken.SerializeToString()
    swapped = onnx.ModelProto()
    swapped.CopyFrom(model_fp32)
    first, second = swapped.graph.output[0].name, swapped.graph.output[1].name
    rename = {first: second, second: first}
    for n in swapped.graph.node:  # inputs too, or the graph would read its own outputs
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    variants["outputs swapped"] = swapped.SerializeToString()
    return variants


def quantize_int8(path: Path, feeds: list[dict[str, np.ndarray]], out: Path) -> bytes | None:
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError:
        return None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    )
    return out.read_bytes()


def rows_for(model_name: str, variant: str, refs, acts, scales: dict) -> list[str]:
    rows = []
    verdicts = {
        name: parity.check(zip(refs, acts, strict=True), precision=name, artifact=variant)
        for name in PRESET_NAMES
    }
    report = verdicts["fp32"]
    for s in report.summaries():
        # Per sample, as satol sees it: max|a-b| / max|reference| of that sample.
        scaled = [r.metrics.max_abs / r.metrics.peak if r.metrics.peak else float("inf")
                  for r in report.results if r.output == s.output and r.metrics]
        m_scaled = max(scaled, default=float("nan"))
        worst = scales.setdefault(variant, {})
        worst[model_name] = max(worst.get(model_name, 0.0), m_scaled)
        task = s.task.get("top1")
        cells = [
            model_name, variant, s.output, f"{s.max_abs:.2e}", f"{s.p99_abs:.2e}",
            f"{m_scaled:.2e}", f"{s.max_rel:.2e}", f"{s.min_cosine:.7f}",
            f"{s.nan_actual}", f"{task:.2f}" if task is not None else "-",
            f"{s.required_atol:.1e}",
        ]
        cells += ["pass" if verdicts[p].worst()[s.output].passed else "FAIL"
                  for p in PRESET_NAMES]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def margins(scales: dict[str, dict[str, float]]) -> list[str]:
    """How far each preset's satol sits from the healthy and the broken exports."""
    lines = ["## Margins", "",
             "max|a-b| / max|reference| of each model's worst output (worst sample):", ""]

    def per_model(variant: str) -> str:
        return ", ".join(f"{m} {v:.2e}" for m, v in scales.get(variant, {}).items())

    defects = [v for k, v in scales.items() if k.startswith("conv x1.03")]
    smallest_defect = min((min(d.values()) for d in defects), default=float("nan"))
    lines.append(f"- one conv x1.03: {'; '.join(per_model(k) for k in scales if 'x1.03' in k)}")
    for precision, variant in (("fp32", "healthy fp32"), ("fp16", "healthy fp16"),
                               ("int8", "int8 QDQ (random calib)")):
        if variant not in scales:
            continue
        healthy = max(scales[variant].values())
        satol = parity.PRESETS[precision].satol
        lines.append(
            f"- {variant}: {per_model(variant)}; preset satol {satol:g} is "
            f"{satol / healthy:.2g}x the worst and {smallest_defect / satol:.2g}x below the "
            "smallest 3 % defect"
        )
    return lines


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main() -> None:
    import onnx
    import onnxruntime as ort
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=2, help="input batches per model")
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    header = [
        "| model | variant | output | max abs | p99 abs | max abs / peak | max rel | cosine "
        "| NaN | top1 | atol needed @fp32 rtol | " + " | ".join(PRESET_NAMES) + " |",
        "|" + "---|" * (11 + len(PRESET_NAMES)),
    ]
    rows: list[str] = []
    scales: dict[str, dict[str, float]] = {}  # variant -> model -> worst max-abs/peak
    chosen = models()
    for name, (net, shape) in chosen.items():
        if args.models and name not in args.models:
            continue
        model = two_outputs(net)
        rng = np.random.default_rng(1)
        feeds = [{"x": rng.standard_normal((2, *shape)).astype(np.float32)}
                 for _ in range(args.samples)]
        with torch.no_grad():
            refs = [
                {k: v.numpy() for k, v in zip(("logits", "probs"),
                                              model(torch.from_numpy(f["x"])), strict=True)}
                for f in feeds
            ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.onnx"
            export(model, shape, path)
            fp32 = onnx.load(str(path))
            variants: dict[str, bytes] = {"healthy fp32": fp32.SerializeToString()}
            variants["healthy fp16"] = to_fp16(fp32).SerializeToString()
            calib = [{"x": rng.standard_normal((2, *shape)).astype(np.float32)} for _ in range(8)]
            int8 = quantize_int8(path, calib, Path(tmp) / f"{name}.int8.onnx")
            if int8 is not None:
                variants["int8 QDQ (random calib)"] = int8
            variants.update(planted(fp32))
            for variant, blob in variants.items():
                acts = run_onnx(blob, feeds)
                rows += rows_for(name, variant, refs, acts, scales)
                print(rows[-2], rows[-1], sep="\n", flush=True)

    presets = "\n".join(f"- `{k}`: {v.describe()}" for k, v in parity.PRESETS.items())
    text = "\n".join([
        "# Tolerance study",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- host: {socket.gethostname()}, CPU: {cpu_model()}, threads: {torch.get_num_threads()}",
        f"- torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, "
        f"python {platform.python_version()}",
        f"- reference: eager PyTorch fp32 on CPU; {args.samples} samples of batch 2, "
        "inputs ~ N(0, 1); random weights (torch.manual_seed(0))",
        "- 'max abs / peak' is max|a-b| / max|reference| (worst sample); 'atol needed' is "
        "the smallest atol that passes every element at the fp32 preset's rtol and satol",
        "- the last columns are each preset's verdict for that output",
        "",
        "Presets:",
        "",
        presets,
        "",
        *header,
        *rows,
        "",
        *margins(scales),
        "",
    ])
    host = socket.gethostname()
    out = args.out or Path(__file__).parent / "results" / f"tolerance_study_{host}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
