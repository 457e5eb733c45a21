"""CPU latency of detectors: the path users take without the toolkit against its artifacts.

Without the toolkit, a torchvision detector runs as `model(list_of_images)` with its own
post-processing, and a raw-head detector as the model plus torchvision's `batched_nms`, image
by image, in Python. The toolkit's artifacts carry the post-processing inside the graph and
return the fixed-rank contract. Every path is timed by the same `toolkit.bench.measure`, in
interleaved rounds, at batch 1 and 4, fp32, with one thread count.

Models (nothing is downloaded; torchvision's random init ties every score, so its detectors
get LSUV-style rescaled weights, seeded, which make scores distinct):
  shapes      the demo raw-head detector, trained 4 epochs here, 3x64x64, NMS appended
  frcnn       fasterrcnn_mobilenet_v3_large_320_fpn, 3x320x320
  ssdlite     ssdlite320_mobilenet_v3_large, 3x320x320
  fcos        fcos_resnet50_fpn resized to 320, 3x320x320

    .venv/bin/python benchmarks/detection_cpu.py          # -> results/detection_cpu_<cpu>.*
    .venv/bin/python benchmarks/detection_cpu.py --models shapes,frcnn --budget 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_cpu import Config, cold, inference, slug, time_rounds

from toolkit.bench.results import results_document, save_results

TORCHVISION = {
    "frcnn": ("fasterrcnn_mobilenet_v3_large_320_fpn", {"box_score_thresh": 0.05}),
    "ssdlite": ("ssdlite320_mobilenet_v3_large", {"score_thresh": 0.05}),
    "fcos": ("fcos_resnet50_fpn", {"score_thresh": 0.05, "min_size": 320, "max_size": 320}),
}
SIZE = {"shapes": 64, "frcnn": 320, "ssdlite": 320, "fcos": 320}


def build(name: str, work: Path) -> tuple[Any, str, list[str], list[str]]:
    """(eager module, export source, export arguments, formats)."""
    import torch

    torch.manual_seed(0)
    if name == "shapes":
        from toolkit.demo.detector import CHECKPOINT_NAME, train_detector

        model = train_detector(epochs=4, n_train=1200, checkpoint_dir=work)
        return (model, str(work / CHECKPOINT_NAME),
                ["--model", "toolkit.demo.detector:ShapesDetector",
                 "--nms", "iou=0.5,score=0.1,max=20"], ["onnx", "torchscript", "pt2"])
    model = livened(name)
    return (model, f"{Path(__file__).resolve()}:livened", ["--model-arg", f"name={name!r}"],
            ["onnx", "torchscript"])


def livened(name: str) -> Any:
    """A torchvision detector (random init, seeded) whose conv/linear layers are rescaled to
    unit output on seeded images (LSUV): its scores are distinct instead of all tied."""
    import torch
    from torchvision.models import detection

    from toolkit.demo.liven import liven

    factory, kwargs = TORCHVISION[name]
    torch.manual_seed(0)
    model = getattr(detection, factory)(weights=None, weights_backbone=None, num_classes=4,
                                        **kwargs).eval()
    images = torch.rand((2, 3, SIZE[name], SIZE[name]), generator=torch.Generator().manual_seed(0))
    return liven(model, images)


def eager_call(name: str, model: Any, x: Any) -> Any:
    """What a user runs without the toolkit: the model and its own post-processing."""
    import torch
    from torchvision.ops import batched_nms

    if name != "shapes":
        return inference(model, list(x))

    def raw_then_nms() -> Any:
        with torch.inference_mode():
            out = model(x)
            kept = []
            for boxes, scores in zip(out["boxes"], out["scores"]):
                best, labels = scores.max(dim=1)
                keep = best > 0.1
                idx = batched_nms(boxes[keep], best[keep], labels[keep], 0.5)[:20]
                kept.append((boxes[keep][idx], best[keep][idx], labels[keep][idx]))
            return kept

    return raw_then_nms


def configs_for(name: str, batches: list[int], threads: int, work: Path
                ) -> tuple[list[Config], dict[str, Any], list[Any]]:
    import numpy as np
    import torch
    from typer.testing import CliRunner

    from toolkit import runtime
    from toolkit.cli.app import app  # the CLI, as a user runs it

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    model, source, args, formats = build(name, work)
    out = work / f"bundle_{name}"
    size = SIZE[name]
    t0 = time.perf_counter()
    # Real-looking images for the golden samples (a detector finds nothing in N(0,1) noise)
    np.savez(work / "images.npz", x=np.random.default_rng(1).random(
        (4, 3, size, size), dtype=np.float32))
    if name != "shapes":
        args = [*args, "--calib-data", str(work / "images.npz")]
    result = CliRunner().invoke(app, ["export", source, *args, "--to", ",".join(formats),
                                      "--input", f"x:1-{max(batches)}x3x{size}x{size}",
                                      "--out", str(out)])
    info = {"export_s": round(time.perf_counter() - t0, 1), "export_exit": result.exit_code}
    if result.exit_code != 0:
        print(result.output[-2000:], flush=True)
    rng = np.random.default_rng(0)
    configs, runners = [], []
    from toolkit.bundle import Bundle

    bundle = Bundle.open(out)
    for batch in batches:
        x = rng.random((batch, 3, size, size), dtype=np.float32)
        if name == "shapes":
            from toolkit.demo.detection_data import make_detection_data

            x = make_detection_data(batch, split="test")["x"]
        call, cold_s = cold(lambda x=x: eager_call(name, model, torch.from_numpy(x)))
        configs.append(Config({"model": name, "path": "eager + own post-processing",
                               "kind": "default", "format": "eager", "precision": "fp32",
                               "device": "cpu", "threads": threads}, batch, call, cold_s))
        for record in bundle.artifacts:
            runner = runtime.load_artifact(bundle, record, threads=threads)
            runners.append(runner)
            t0 = time.perf_counter()
            runner.activate()
            call = runner.prepare({"x": x})
            call()
            configs.append(Config({"model": name, "path": f"toolkit:{record['format']}",
                                   "kind": "toolkit", "format": record["format"],
                                   "precision": "fp32", "device": "cpu", "threads": threads},
                                  batch, call, time.perf_counter() - t0, runner.synchronize))
    return configs, info, runners


def markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    lines = [f"# Detector latency on CPU — {env.get('cpu')} ({os.cpu_count()} cores)", "",
             f"torch {env['libraries'].get('torch')}, onnxruntime "
             f"{env['libraries'].get('onnxruntime')}, {doc['settings']['threads']} threads, "
             f"{doc['settings']['rounds']} interleaved rounds; p50 ms (p90 ms).", "",
             "| model | batch | path | p50 ms | p90 ms | vs eager |",
             "|---|---:|---|---:|---:|---:|"]
    rows = doc["results"]
    for row in rows:
        eager = next(r for r in rows if r["model"] == row["model"] and r["batch"] == row["batch"]
                     and r["format"] == "eager")
        lines.append(f"| {row['model']} | {row['batch']} | {row['path']} | {row['p50_ms']:.2f} "
                     f"| {row['p90_ms']:.2f} | {row['p50_ms'] / eager['p50_ms']:.2f}× |")
    lines += ["", "Exports: " + ", ".join(f"{m} {i['export_s']} s (exit {i['export_exit']})"
                                           for m, i in doc["exports"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="shapes,frcnn,ssdlite,fcos")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--budget", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    knobs = {"budget_s": args.budget, "warmup_s": 1.0, "min_iters": 30}
    rows, exports = [], {}
    with tempfile.TemporaryDirectory(prefix="toolkit-det-bench-") as tmp:
        for name in args.models.split(","):
            print(f"== {name}", flush=True)
            configs, info, runners = configs_for(name, batches, args.threads, Path(tmp) / name)
            exports[name] = info
            time_rounds(configs, args.rounds, knobs)
            rows += [c.result().to_row() for c in configs]
            for runner in runners:
                runner.deactivate()
    from toolkit.environment import describe

    doc = results_document(rows, describe(), target="detectors", command=" ".join(sys.argv),
                           settings={**knobs, "threads": args.threads, "rounds": args.rounds},
                           exports=exports)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"detection_cpu_{slug()}"
    save_results(stem.with_suffix(".json"), doc)
    stem.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
