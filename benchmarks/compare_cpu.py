"""CPU latency: the paths users take without the toolkit against the toolkit's artifacts.

For the demo CNN (3x32x32), torchvision resnet18 and mobilenet_v3_small (random weights, no
downloads), at batch 1 and 8, fp32, on this CPU, in one process and with one thread count:

  default paths   eager PyTorch · LightningModule.to_onnx() + a default InferenceSession
                  (session.run on numpy) · torch.compile() defaults (compiled per batch) ·
                  torch.jit.trace
  toolkit         `toolkit export --to onnx,torchscript,pt2`, timed by `toolkit.bench.driver`
                  (ONNX Runtime with IO binding, frozen TorchScript, AOTInductor .pt2)

Every path is timed by the same `toolkit.bench.measure`. The harness overhead is measured too:
the wall time of `measure(call)` against a bare `for` loop over the same call.

    .venv/bin/python benchmarks/compare_cpu.py                 # -> results/cpu_<cpu>.{json,md}
    .venv/bin/python benchmarks/compare_cpu.py --skip pt2 --models resnet18 --budget 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.bench.measurement import Measurement
from toolkit.bench.results import results_document, save_results
from toolkit.bench.timer import measure

HERE = Path(__file__).resolve()
MODELS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "demo_cnn": (f"{HERE}:demo_cnn", (3, 32, 32)),
    "resnet18": ("torchvision.models:resnet18", (3, 224, 224)),
    "mobilenet_v3_small": ("torchvision.models:mobilenet_v3_small", (3, 224, 224)),
}
TOOLKIT_FORMATS = ("onnx", "torchscript", "pt2")
DEFAULT_PATHS = ("eager", "lightning-onnx+ort", "torch.compile", "torch.jit.trace")
#: best toolkit p50 / eager p50 at batch 1 must be at most this (the issue's targets)
SPEEDUP_TARGETS = {"resnet18": 0.60, "mobilenet_v3_small": 0.25}
OVERHEAD_TARGET = 0.03


def demo_cnn() -> Any:
    """The demo CNN: conv 3→64, ReLU, pool, conv 64→64, ReLU, pool, fc 4096→512, ReLU, 512→10."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 512), nn.ReLU(), nn.Linear(512, 10),
    )


def build(ref: str) -> Any:
    import torch

    from toolkit.source.imports import import_object

    torch.manual_seed(0)
    return import_object(ref)().eval()


# -- configurations: a ready call per path and batch, timed in interleaved rounds ------------
@dataclass
class Config:
    """One path at one batch: a zero-argument call with inputs in place, and its cold start."""

    labels: dict[str, Any]
    batch: int
    call: Callable[[], Any]
    cold_s: float
    sync: Callable[[], Any] | None = None
    rounds: list[Measurement] = field(default_factory=list)

    def result(self) -> Measurement:
        """Every round's raw times as one Measurement; stable when the rounds' medians agree
        within 5% (the within-round criterion can't see drift between rounds)."""
        medians = [m.p50 for m in self.rounds]
        labels = {**self.labels, "round_p50_ms": [round(v * 1e3, 4) for v in medians]}
        return Measurement(
            times_s=[t for m in self.rounds for t in m.times_s], batch=self.batch,
            cold_start_s=self.cold_s, warmup_iters=sum(m.warmup_iters for m in self.rounds),
            stable=max(medians) <= 1.05 * min(medians), labels=labels)


def inference(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    import torch

    def call() -> Any:
        with torch.inference_mode():
            return fn(*args)

    return call


def cold(make: Callable[[], Callable[[], Any]]) -> tuple[Callable[[], Any], float]:
    """Build the call and run it once: artifact or module in memory -> first result."""
    t0 = time.perf_counter()
    call = make()
    call()
    return call, time.perf_counter() - t0


def default_configs(name: str, module: Any, batch: int, threads: int, work: Path,
                    skip: set[str]) -> list[Config]:
    """Eager, Lightning's to_onnx + a default ORT session, torch.compile, torch.jit.trace."""
    import numpy as np
    import torch

    chw = MODELS[name][1]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, *chw),
                                                                  dtype=np.float32))

    def compiled() -> Callable[[], Any]:
        # static shapes (one graph per batch): the default path's best case; with plain
        # defaults the second batch size would recompile as a dynamic-shape graph
        return inference(torch.compile(module, dynamic=False), x)

    def traced() -> Callable[[], Any]:
        with torch.no_grad():
            return inference(torch.jit.trace(module, x), x)

    makers = {
        "eager": lambda: inference(module, x),
        "lightning-onnx+ort": lambda: lightning_onnx_session(module, x, threads, work, batch),
        "torch.compile": compiled,
        "torch.jit.trace": traced,
    }
    out = []
    for path, make in makers.items():
        if path in skip:
            continue
        call, cold_s = cold(make)
        labels = {"model": name, "path": path, "kind": "default", "format": path,
                  "precision": "fp32", "device": "cpu", "threads": threads}
        out.append(Config(labels, batch, call, cold_s))
    return out


def lightning_onnx_session(module: Any, x: Any, threads: int, work: Path, batch: int
                           ) -> Callable[[], Any]:
    """What a Lightning user does: `self.to_onnx(path, sample)`, then a default session."""
    import onnxruntime as ort
    import pytorch_lightning as pl

    class Wrapped(pl.LightningModule):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net(x)

    path = work / f"lightning_b{batch}.onnx"
    if not path.exists():  # the export is not part of the cold start (a file on disk is)
        with contextlib.redirect_stdout(io.StringIO()):
            Wrapped(module).eval().to_onnx(path, x)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # the one non-default: the same threads for all
    session = ort.InferenceSession(str(path), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def toolkit_configs(name: str, threads: int, work: Path, skip: set[str], batches: list[int]
                    ) -> tuple[list[Config], dict[str, Any], list[Any]]:
    """`toolkit export` the model, then each artifact's Runner as `toolkit bench` drives it:
    load + first inference as the cold start, `prepare` (IO binding for ORT) for timing."""
    from toolkit import runtime
    from toolkit.bench.driver import quiet_libraries
    from toolkit.bench.timer import time_once
    from toolkit.export.pipeline import export
    from toolkit.spec import random_inputs

    ref, chw = MODELS[name]
    formats = [f for f in TOOLKIT_FORMATS if f not in skip]
    out = work / f"bundle_{name}"
    t0 = time.perf_counter()
    result = export(ref, formats, out, inputs=[f"x:1-{max(batches)}x{'x'.join(map(str, chw))}"])
    info = {"export_s": round(time.perf_counter() - t0, 1),
            "export_failed": {s.target: s.detail for s in result.steps
                              if s.status not in ("ok", "exists")}}
    bundle = result.bundle
    configs, runners = [], []
    for record in bundle.artifacts:
        runner = runtime.load_artifact(bundle, record, threads=threads)
        runners.append(runner)
        for i, batch in enumerate(batches):
            feed = random_inputs(bundle.inputs, batch=batch, seed=0)
            with quiet_libraries():
                if i == 0:
                    t0 = time.perf_counter()
                    runner.activate()
                    call = runner.prepare(feed)
                    call()
                    cold_s = time.perf_counter() - t0
                else:
                    call = runner.prepare(feed)
                    cold_s = time_once(call)
            labels = {"model": name, "path": f"toolkit:{record['format']}", "kind": "toolkit",
                      "format": record["format"], "precision": "fp32", "device": "cpu",
                      "threads": threads}
            configs.append(Config(labels, batch, call, cold_s, runner.synchronize))
    return configs, info, runners


SETTLE_S = 0.3


def time_rounds(configs: list[Config], rounds: int, knobs: dict[str, Any]) -> None:
    """Each round times every configuration once, in a rotated order, with 1/rounds of the
    budget: drift on a shared machine then spreads over all paths instead of hitting one."""
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for c in order:
            # Let the previous path's worker threads stop spinning (OpenMP's blocktime, ORT's
            # spin-wait): on 2 cores they would otherwise steal this path's CPU.
            time.sleep(SETTLE_S)
            m = measure(c.call, batch=c.batch, sync=c.sync,
                        budget_s=knobs["budget_s"] / rounds,
                        warmup_s=knobs["warmup_s"] if r == 0 else min(0.2, knobs["warmup_s"]),
                        min_iters=max(1, knobs["min_iters"] // rounds))
            c.rounds.append(m)
        print(f"    round {r + 1}/{rounds}: " + ", ".join(
            f"{c.labels['path']} b{c.batch} {c.rounds[-1].p50 * 1e3:.2f}" for c in configs),
            flush=True)


# -- harness overhead ------------------------------------------------------------------------
def harness_overhead(call: Callable[[], Any], rounds: int = 9, block_s: float = 0.5
                     ) -> dict[str, Any]:
    """Wall time per call of `measure(call)` over a bare loop over the same call.

    Blocks alternate (bare, measure / measure, bare) so that drift on a shared machine
    doesn't favour either; the median ratio over the rounds is reported.
    """
    for _ in range(20):
        call()
    t0 = time.perf_counter()
    for _ in range(20):
        call()
    n = max(200, int(block_s / max((time.perf_counter() - t0) / 20, 1e-7)))

    def bare() -> float:
        t = time.perf_counter()
        for _ in range(n):
            call()
        return (time.perf_counter() - t) / n

    def harnessed() -> tuple[float, Measurement]:
        t = time.perf_counter()
        m = measure(call, warmup_s=0, min_warmup_iters=0, budget_s=math.inf,
                    min_iters=n, max_iters=n)
        return (time.perf_counter() - t) / n, m

    wall_ratios, reported_ratios, bare_times, harness_times = [], [], [], []
    for i in range(rounds):
        if i % 2:
            (h, m), b = harnessed(), bare()
        else:
            b = bare()
            h, m = harnessed()
        bare_times.append(b)
        harness_times.append(h)
        wall_ratios.append(h / b)
        reported_ratios.append(m.mean / b)
    # other load only ever adds time: the fastest block of each kind is the least disturbed
    best = min(harness_times) / min(bare_times)
    per_iter = harness_cost_per_iteration()
    call_s = min(bare_times)
    # The verdict uses the harness's own cost per iteration (timed around a no-op, so the
    # call's noise can't hide or inflate it) relative to the call. The wall-time ratios of
    # whole blocks are kept as a cross-check: on a shared 2-core machine they swing by
    # +-15 % either way, far more than the few hundred nanoseconds being measured.
    cost_pct = per_iter / call_s * 100
    return {
        "iterations_per_block": n,
        "rounds": rounds,
        "bare_us_per_call": call_s * 1e6,
        "wall_ratio_best": best,
        "wall_ratio_median": statistics.median(wall_ratios),
        "wall_ratios": wall_ratios,
        "reported_mean_ratio_median": statistics.median(reported_ratios),
        "harness_ns_per_iteration": per_iter * 1e9,
        "harness_cost_pct_of_call": cost_pct,
        "wall_overhead_pct_best_blocks": (best - 1) * 100,
        "overhead_pct": cost_pct,
        "met": cost_pct <= OVERHEAD_TARGET * 100,
    }


def harness_cost_per_iteration(n: int = 200_000) -> float:
    """What `measure` adds per iteration (two clock reads, a sync call, an append, a
    compare), from timing a no-op both ways: a noise-free bound on the overhead."""
    noop = lambda: None
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            noop()
        bare = time.perf_counter() - t
        t = time.perf_counter()
        measure(noop, warmup_s=0, min_warmup_iters=0, budget_s=math.inf, min_iters=n,
                max_iters=n)
        best = min(best, (time.perf_counter() - t - bare) / n)
    return max(best, 0.0)


# -- verdicts --------------------------------------------------------------------------------
def evaluate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with its numbers and met / missed."""
    checks = []

    def pick(model: str, batch: int, kind: str | None = None, path: str | None = None):
        return [r for r in rows if r["model"] == model and r["batch"] == batch
                and (kind is None or r["kind"] == kind) and (path is None or r["path"] == path)]

    for model, limit in SPEEDUP_TARGETS.items():
        eager, tk = pick(model, 1, path="eager"), pick(model, 1, kind="toolkit")
        if eager and tk:
            best = min(tk, key=lambda r: r["p50_ms"])
            ratio = best["p50_ms"] / eager[0]["p50_ms"]
            checks.append({"target": f"{model} b1: best toolkit p50 <= {limit:.2f}x eager",
                           "value": f"{best['path']} {ratio:.2f}x "
                                    f"({best['p50_ms']:.2f} vs {eager[0]['p50_ms']:.2f} ms)",
                           "met": ratio <= limit})
    for model in sorted({r["model"] for r in rows}):
        for batch in sorted({r["batch"] for r in rows if r["model"] == model}):
            tk, df = pick(model, batch, kind="toolkit"), pick(model, batch, kind="default")
            if tk and df:
                bt = min(tk, key=lambda r: r["p50_ms"])
                bd = min(df, key=lambda r: r["p50_ms"])
                checks.append({
                    "target": f"{model} b{batch}: best toolkit <= best default path",
                    "value": f"{bt['path']} {bt['p50_ms']:.3f} ms vs {bd['path']} "
                             f"{bd['p50_ms']:.3f} ms ({bt['p50_ms'] / bd['p50_ms']:.2f}x)",
                    "met": bt["p50_ms"] <= bd["p50_ms"]})
    return checks


# -- report ----------------------------------------------------------------------------------
def markdown(doc: dict[str, Any]) -> str:
    from toolkit.bench.render import environment_markdown, fmt_cold, fmt_ms

    rows = doc["results"]
    lines = ["# CPU latency: default paths vs toolkit artifacts", "",
             f"Created {doc['created']} by `{doc['command']}`; {doc['threads']} threads for "
             f"every path; per configuration: warm-up ≤ {doc['settings']['warmup_s']} s, "
             f"timing ≤ {doc['settings']['budget_s']} s (stops early once stable). "
             "p50/p99 per call (one batch); “vs eager” = eager p50 / this p50.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += [f"## {model}", "", "| path | kind | batch | p50 ms | p99 ms | items/s | "
                  "vs eager | cold start | iters | note |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in sorted((r for r in rows if r["model"] == model),
                        key=lambda r: (r["batch"], r["p50_ms"])):
            eager = next((e for e in rows if e["model"] == model and e["path"] == "eager"
                          and e["batch"] == r["batch"]), None)
            vs = f"{eager['p50_ms'] / r['p50_ms']:.2f}×" if eager else "—"
            note = ("noisy (CV %.0f%%)" % (100 * r["cv"])) if r["noisy"] else ""
            if not r["stable"]:
                note += ("; " if note else "") + "unstable"
            lines.append(f"| {r['path']} | {r['kind']} | {r['batch']} | {fmt_ms(r['p50_ms'])} | "
                         f"{fmt_ms(r['p99_ms'])} | {r['throughput']:.1f} | {vs} | "
                         f"{fmt_cold(r['cold_start_ms'])} | {r['iterations']} | {note} |")
        lines.append("")
    lines += ["## Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    for c in doc["targets"]:
        lines.append(f"| {c['target']} | {c['value']} | {'met' if c['met'] else '**missed**'} |")
    o = doc["harness_overhead"]
    if o:
        lines += ["", f"Harness overhead ({o['call']}, {o['bare_us_per_call']:.0f} µs per "
                  f"call): timing a no-op both ways, `measure` adds "
                  f"{o['harness_ns_per_iteration']:.0f} ns per iteration, "
                  f"{o['harness_cost_pct_of_call']:.3f}% of this call "
                  f"({'met' if o['met'] else '**missed**'} ≤ {OVERHEAD_TARGET:.0%}). Cross-check "
                  f"on the call itself: over {o['rounds']} alternating blocks of "
                  f"{o['iterations_per_block']} calls, `measure(call)` took "
                  f"{o['wall_ratio_median']:.4f}× a bare loop (median; fastest blocks "
                  f"{o['wall_ratio_best']:.4f}×): noise on a shared machine swings this by "
                  "more than the harness costs."]
    if doc["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    lines += ["", "## Environment", "", environment_markdown(doc["environment"]), ""]
    return "\n".join(lines)


def slug() -> str:
    from toolkit.environment import cpu_model

    words = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-").split("-")[:3]
    return f"{'-'.join(words) or 'cpu'}-{os.cpu_count()}c"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per configuration")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--min-iters", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; each gets budget/rounds per configuration")
    parser.add_argument("--skip", action="append", default=[],
                        help="paths to skip: pt2, torchscript, onnx, torch.compile, ...")
    parser.add_argument("--out", type=Path, default=HERE.parent / "results")
    parser.add_argument("--tag", default=None, help="result file name part (default: CPU)")
    args = parser.parse_args(argv)

    import torch

    from toolkit.bench.driver import machine_notes
    from toolkit.environment import describe

    threads = args.threads
    torch.set_num_threads(threads)
    batches = [int(b) for b in args.batches.split(",")]
    skip = {s for v in args.skip for s in v.split(",") if s}
    knobs = {"budget_s": args.budget, "warmup_s": args.warmup, "min_iters": args.min_iters}
    notes = machine_notes(threads, "cpu")
    measurements: list[Measurement] = []
    info: dict[str, Any] = {}
    overhead: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="toolkit-compare-") as tmp:
        for name in args.models.split(","):
            work = Path(tmp) / name
            work.mkdir()
            print(f"{name}: load average {os.getloadavg()[0]:.1f}", flush=True)
            tk, info[name], runners = toolkit_configs(name, threads, work, skip, batches)
            torch.set_num_threads(threads)
            module = build(MODELS[name][0])
            configs = [c for b in batches
                       for c in default_configs(name, module, b, threads, work, skip)] + tk
            torch._dynamo.reset()
            time_rounds(configs, args.rounds, knobs)
            measurements += [c.result() for c in configs]
            if info[name]["export_failed"]:
                notes.append(f"{name}: export failed for {info[name]['export_failed']}")
            if name == "demo_cnn" and overhead is None:
                # one thread: a single-threaded call is the least disturbed by other load
                torch.set_num_threads(1)
                call = inference(module, torch.randn(1, *MODELS[name][1]))
                overhead = harness_overhead(call)
                overhead["call"] = "demo CNN eager, batch 1, 1 thread"
                torch.set_num_threads(threads)
                print(f"  harness overhead {overhead['overhead_pct']:.3f}% of the call "
                      f"(wall-time blocks: {overhead['wall_ratio_median']:.3f}x)", flush=True)
            for runner in runners:
                runner.deactivate()
            del configs, tk, runners
    load = os.getloadavg()
    notes.append(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
                 f"(1/5/15 min) on {os.cpu_count()} cores")
    rows = [m.to_row() for m in measurements]
    env = describe()
    env["load_average_end"] = [round(v, 2) for v in load]
    doc = results_document(
        rows, env, command="python benchmarks/compare_cpu.py " + " ".join(argv or sys.argv[1:]),
        threads=threads, settings=knobs, exports=info, targets=evaluate(rows),
        harness_overhead=overhead, notes=notes)
    if overhead:
        doc["targets"].append({"target": f"harness overhead <= {OVERHEAD_TARGET:.0%}",
                               "value": f"{overhead['overhead_pct']:+.2f}%",
                               "met": overhead["met"]})
    stem = args.out / f"cpu_{args.tag or slug()}"
    args.out.mkdir(parents=True, exist_ok=True)
    save_results(stem.with_suffix(".json"), doc)
    stem.with_suffix(".md").write_text(markdown(doc), encoding="utf-8")
    for check in doc["targets"]:
        print(f"{'met   ' if check['met'] else 'MISSED'} {check['target']}: {check['value']}")
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
