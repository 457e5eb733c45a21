"""The toolkit's generated instance data written as Ultralytics datasets (segment, pose, obb), for
training offline; optionally proves Ultralytics accepts them by training one epoch of each.

    .venv/bin/python -m benchmarks.yolo_dataset OUT [--tasks segment pose obb] [--train 32]
        [--val 16] [--size 64] [--seed 0] [--train-check]

OUT/<task>/ gets images/{train,val}/*.png (8-bit RGB of `make_instance_data`'s `x`),
labels/{train,val}/*.txt and <task>.yaml. Label rows, coordinates normalised by the image size:

- segment: `class x1 y1 x2 y2 ...`, the traced outline of the mask's pixel squares (pixel
  edges, clockwise on screen). The shapes are convex, so each row of a mask is one run of pixels
  and the outline is exact: its box is the tight box, its inside is exactly the mask's pixels.
- pose: `class cx cy w h` (the tight box) then 5 x `x y v` (v = 2, visible), keypoints in
  `instance_data`'s order: top, right, bottom, left, centre; `kpt_shape: [5, 3]` and
  `flip_idx: [0, 3, 2, 1, 4]` (a horizontal flip swaps right and left) in the YAML.
- obb: `class x1 y1 ... x4 y4`, the corners of `obb` (cx, cy, w, h, theta) in turn:
  centre -u -v, +u -v, +u +v, -u +v with u = (w/2)(cos, sin), v = (h/2)(-sin, cos).

--train-check trains yolo11n-{seg,pose,obb} (built from their YAML, random weights) for one
epoch on CPU and prints the seconds each took. Nothing is downloaded: AMP's check (which fetches
weights) and plots (fonts) are off, and the dataset check's font fetch, which no setting stops,
is replaced; any other download attempt fails the run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.demo.instance_data import CLASS_NAMES, FLIP_IDX, NUM_KEYPOINTS, make_instance_data

TASKS = ("segment", "pose", "obb")
MODELS = {"segment": "yolo11n-seg.yaml", "pose": "yolo11n-pose.yaml", "obb": "yolo11n-obb.yaml"}


def outline_polygon(mask: np.ndarray) -> np.ndarray:
    """[k, 2] (x, y) vertices in pixel-edge coordinates tracing the boundary of a mask that holds
    one run of pixels per row, clockwise on screen; collinear vertices dropped."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        raise ValueError("the mask is empty")
    if rows[-1] - rows[0] + 1 != rows.size:
        raise ValueError("the mask's rows are not contiguous")
    left, right = [], []
    for y in rows:
        xs = np.flatnonzero(mask[y])
        if xs[-1] - xs[0] + 1 != xs.size:
            raise ValueError(f"row {y} of the mask holds more than one run of pixels")
        left.append(xs[0])
        right.append(xs[-1] + 1)
    points = []
    for y, x in zip(rows, right):  # down the right side
        points += [(x, y), (x, y + 1)]
    for y, x in zip(rows[::-1], left[::-1]):  # back up the left side
        points += [(x, y + 1), (x, y)]
    return _drop_collinear(np.array(points, dtype=np.float64))


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Closed polygon without repeated or collinear vertices."""
    changed = True
    while changed and len(points) > 3:
        prev, nxt = np.roll(points, 1, 0), np.roll(points, -1, 0)
        cross = ((points - prev)[:, 0] * (nxt - points)[:, 1]
                 - (points - prev)[:, 1] * (nxt - points)[:, 0])
        same = np.all(points == prev, axis=1)
        keep = (cross != 0) & ~same
        changed = not keep.all()
        points = points[keep]
    return points


def obb_corners(obb: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h, theta) -> [4, 2] corners: centre -u-v, +u-v, +u+v, -u+v."""
    cx, cy, w, h, theta = (float(v) for v in obb)
    u = np.array([math.cos(theta), math.sin(theta)]) * w / 2
    v = np.array([-math.sin(theta), math.cos(theta)]) * h / 2
    centre = np.array([cx, cy])
    return np.stack([centre - u - v, centre + u - v, centre + u + v, centre - u + v])


def _numbers(values) -> str:
    return " ".join(f"{float(v):.6f}" for v in values)


def label_rows(task: str, data: dict[str, np.ndarray], i: int) -> list[str]:
    """Ultralytics' label rows of image `i` for `task` (coordinates normalised)."""
    size = data["x"].shape[-1]
    rows = []
    for k in np.flatnonzero(data["labels"][i] >= 0):
        label = int(data["labels"][i, k])
        if task == "segment":
            polygon = outline_polygon(data["masks"][i, k]) / size
            rows.append(f"{label} {_numbers(polygon.ravel())}")
        elif task == "pose":
            x1, y1, x2, y2 = data["boxes"][i, k] / size
            points = data["keypoints"][i, k].astype(np.float64)
            points[:, :2] /= size
            rows.append(f"{label} {_numbers([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])} "
                        + " ".join(f"{x:.6f} {y:.6f} {int(v)}" for x, y, v in points))
        elif task == "obb":
            rows.append(f"{label} {_numbers((obb_corners(data['obb'][i, k]) / size).ravel())}")
        else:
            raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    return rows


def dataset_yaml(root: Path, task: str) -> str:
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASS_NAMES))
    text = f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}"
    if task == "pose":
        # top, right, bottom, left, centre: a horizontal flip swaps right (1) and left (3)
        text += f"kpt_shape: [{NUM_KEYPOINTS}, 3]\nflip_idx: {list(FLIP_IDX)}\n"
    return text


def write_yolo_dataset(root: Path, task: str, size: int = 64, n_train: int = 32,
                       n_val: int = 16, seed: int = 0) -> Path:
    """`make_instance_data`'s train and val splits as an Ultralytics `task` dataset under
    `root` (which must not exist yet); returns the dataset YAML."""
    from PIL import Image

    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    root = Path(root).resolve()
    root.mkdir(parents=True)  # FileExistsError rather than mixing with an older dataset
    for split, n in (("train", n_train), ("val", n_val)):
        data = make_instance_data(n, split, seed=seed, size=size)
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, image in enumerate(data["x"]):
            pixels = (image.transpose(1, 2, 0) * 255).round().clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / split / f"{i:05d}.png")
            text = "\n".join(label_rows(task, data, i)) + "\n"
            (root / "labels" / split / f"{i:05d}.txt").write_text(text)
    yaml = root / f"{task}.yaml"
    yaml.write_text(dataset_yaml(root, task))
    return yaml


@contextmanager
def offline_trainer() -> Iterator[None]:
    """Ultralytics as an offline trainer in this process, put back as it was afterwards: any
    download attempt raises, the dataset check's font fetch (Arial.ttf, for plot labels; plots=False
    does not skip it) is a no-op, and the torch threads and determinism the trainer sets globally
    are restored."""
    import torch
    import ultralytics.data.utils as data_utils
    from ultralytics.utils import downloads

    def refuse(*args, **kwargs):
        raise RuntimeError(f"offline: Ultralytics tried to download {kwargs.get('url', args)}")

    saved = (downloads.safe_download, data_utils.safe_download, data_utils.check_font)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    downloads.safe_download = data_utils.safe_download = refuse
    data_utils.check_font = lambda *args, **kwargs: None
    try:
        yield
    finally:
        downloads.safe_download, data_utils.safe_download, data_utils.check_font = saved
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def train_one_epoch(yaml: Path, task: str, size: int, work: Path) -> tuple[float, Any]:
    """One epoch of yolo11n for `task` from random weights on CPU: the seconds it took (dataset
    scan, training, validation) and Ultralytics' trainer."""
    from ultralytics import YOLO

    with offline_trainer():
        model = YOLO(MODELS[task])
        started = time.perf_counter()
        model.train(data=str(yaml), epochs=1, imgsz=size, batch=16, device="cpu", workers=0,
                    pretrained=False, amp=False, plots=False, project=str(work), name=task,
                    exist_ok=True, seed=0, deterministic=False, verbose=False, val=True)
        return time.perf_counter() - started, model.trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="new folder; one dataset per task inside it")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--train", type=int, default=32)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-check", action="store_true",
                        help="train one epoch of each task's yolo11n on CPU (weights in a "
                             "temporary folder, then removed)")
    args = parser.parse_args(argv)
    # Before Ultralytics is imported: no hub, no telemetry, no online checks.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    taken = [str(args.out / t) for t in args.tasks if (args.out / t).exists()]
    if taken:
        print(f"error: {', '.join(taken)} already exist(s); choose a new OUT", file=sys.stderr)
        return 2
    yamls = {task: write_yolo_dataset(args.out / task, task, args.size, args.train, args.val,
                                      args.seed) for task in args.tasks}
    for task, yaml in yamls.items():
        print(f"{task}: {yaml}")
    if args.train_check:
        with tempfile.TemporaryDirectory() as work:
            for task, yaml in yamls.items():
                seconds, _ = train_one_epoch(yaml, task, args.size, Path(work))
                print(f"{task}: 1 epoch of {MODELS[task]} on {args.train} train / {args.val} "
                      f"val images at {args.size} px took {seconds:.1f} s (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
