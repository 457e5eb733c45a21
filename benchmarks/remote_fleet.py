"""What `--on` costs, and what a fleet gains from running devices in parallel.

On a real OpenSSH server on 127.0.0.1 (the test lab: tests/remote/lab.py), with simulated
devices that are this machine (a device side without torch):

1. Overhead of `toolkit bench BUNDLE --on DEV` against running the same `toolkit bench` on the
   device itself (its copy of the bundle, its own command line): the first run (the files go
   over), then runs with nothing to send. Whole-process wall times, interleaved, repeated.
2. Fan-out: `toolkit verify BUNDLE --on` 1, 4 and 16 devices, in parallel against one after
   another (--parallel 1).

The devices share this machine's CPU, so a fleet of 16 here is CPU-bound in a way 16 real
devices are not: the parallel gain measured here is a floor.

    .venv/bin/python benchmarks/remote_fleet.py [--repeats 5]
Writes benchmarks/results/remote_fleet_<machine>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.remote.lab import Lab, ssh_lab

FAST = ["--budget", "0.1", "--warmup", "0.05", "--min-iters", "5", "--batch", "1"]


def toolkit(*args: object) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "toolkit.cli.app", *map(str, args)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"toolkit {' '.join(map(str, args))} failed:\n{done.stdout}\n"
                         f"{done.stderr}")
    return time.perf_counter() - started


def on_device(lab: Lab, name: str, *args: object) -> float:
    """The same command run on the device itself, as its user would (no SSH, no sync)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "remote" / "device_env.py"),
                           "plain", *map(str, args)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise SystemExit(f"on the device: {done.stdout}\n{done.stderr}")
    return time.perf_counter() - started


def machine() -> str:
    from toolkit.environment import cpu_flags, cpu_model

    return f"{cpu_model()}, {__import__('os').cpu_count()} cores, flags {' '.join(cpu_flags())}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    options = parser.parse_args()
    from toolkit.export.pipeline import export

    with tempfile.TemporaryDirectory() as tmp, ssh_lab(Path(tmp) / "lab") as lab:
        bundle = Path(tmp) / "cnn"
        assert export("tests.models:small_cnn", ["onnx"], bundle).exit_code == 0
        targets = ["--targets", lab.targets]
        first = toolkit("bench", bundle, "--on", "fan-00", *targets, *FAST)
        remote_bundle = next((lab.workdir("fan-00") / "bundles").iterdir())
        again, direct = [], []
        for _ in range(options.repeats):  # interleaved
            again.append(toolkit("bench", bundle, "--on", "fan-00", *targets, *FAST))
            direct.append(on_device(lab, "fan-00", "bench", remote_bundle, *FAST,
                                    "--format", "onnx"))
        fan: dict[str, dict[str, float]] = {}
        for size in (1, 4, 16):
            names = ",".join(f"fan-{i:02d}" for i in range(size))
            toolkit("verify", bundle, "--on", names, *targets)  # files there already
            parallel = [toolkit("verify", bundle, "--on", names, *targets)
                        for _ in range(max(1, options.repeats // 2))]
            serial = [toolkit("verify", bundle, "--on", names, *targets, "--parallel", "1")
                      for _ in range(max(1, options.repeats // 2))]
            fan[str(size)] = {"parallel_s": statistics.median(parallel),
                              "one_after_another_s": statistics.median(serial)}
    result = {
        "machine": machine(), "python": sys.version.split()[0], "repeats": options.repeats,
        "bundle": "tests.models:small_cnn, ONNX fp32 (28 KiB) + golden samples",
        "overhead": {"first_run_s": first, "again_median_s": statistics.median(again),
                     "on_device_median_s": statistics.median(direct),
                     "again_s": again, "on_device_s": direct},
        "fan_out": fan,
    }
    out = Path(options.out)
    tag = "amd-epyc-avx512-vnni-2c" if "avx512_vnni" in result["machine"] else "cpu"
    (out / f"remote_fleet_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    o = result["overhead"]
    lines = [
        "# `--on` over SSH: overhead and fan-out", "",
        f"Machine: {result['machine']}; Python {result['python']}. Devices are simulated on "
        "this machine behind a real OpenSSH server on 127.0.0.1 (a device side without "
        "torch); whole-process wall times, interleaved, median of "
        f"{options.repeats}. `benchmarks/remote_fleet.py`.", "",
        "| `toolkit bench` of one ONNX artifact, batch 1 | wall |", "|---|---|",
        f"| on the device itself (no SSH) | {o['on_device_median_s']:.2f} s |",
        f"| `--on` from the workstation, first run (files sent) | {o['first_run_s']:.2f} s |",
        f"| `--on`, nothing new to send | {o['again_median_s']:.2f} s "
        f"(+{o['again_median_s'] - o['on_device_median_s']:.2f} s) |", "",
        "| `toolkit verify --on` N devices | parallel | one after another | gain |",
        "|---|---|---|---|",
    ]
    for size, row in fan.items():
        lines.append(f"| {size} | {row['parallel_s']:.2f} s | {row['one_after_another_s']:.2f} s"
                     f" | {row['one_after_another_s'] / row['parallel_s']:.2f}x |")
    lines += ["", "The devices here share this machine's 2 cores: each device's own work (a "
              "Python start, ONNX Runtime, the parity check) competes for them, so 16 devices "
              "in parallel are CPU-bound here; on 16 real devices only the workstation's ssh "
              "processes would share it."]
    (out / f"remote_fleet_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
