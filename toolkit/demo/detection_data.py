"""Deterministic synthetic detection data for the detection demo (numpy only, nothing downloaded).

Each image is float32 3×64×64 in [0, 1]: a smooth, noisy background with 1–4 filled shapes, one
shape and colour family per class (0 rectangle / red, 1 ellipse / green, 2 triangle / blue).
Boxes are xyxy in pixels (pixel edges: a shape covering columns 3..9 has x1=3, x2=10), tight
around the drawn pixels. Arrays are padded to `max_objects` rows with -1, the layout of
`--eval-data` for detection: `x` [n,3,H,W], `boxes` [n,M,4], `labels` [n,M].
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("rectangle", "ellipse", "triangle")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 64
MAX_OBJECTS = 4
SPLITS = {"train": 0, "val": 1, "test": 2}
# Base colours, jittered per object; far apart so colour and shape agree on the class.
_COLOURS = np.array([[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.25, 0.35, 0.95]], dtype=np.float32)
_MIN_SIDE, _MAX_SIDE = 10, 28  # >= 10 px: every object covers a stride-8 cell centre
_MAX_OVERLAP = 0.25  # IoU between objects of one image stays below this


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (area + areas - inter)


def _shape_mask(label: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean h×w mask of the class's shape, filling its box edge to edge."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    if label == 0:
        return np.ones((h, w), dtype=bool)
    if label == 1:
        return ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2 <= 1.0
    # Triangle with its apex anywhere along the top edge and its base on the bottom edge.
    apex = float(rng.uniform(0.2, 0.8)) * w
    t = yy / h  # 0 at the apex row, 1 at the base
    return (xx >= apex * (1 - t)) & (xx <= apex + (w - apex) * t)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(0.3, 0.6, size=(3, 1, 1)).astype(np.float32)
    # A gentle gradient plus pixel noise, so "any non-grey pixel" isn't already the answer.
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    grad = rng.uniform(-0.1, 0.1, size=(3, 2, 1, 1)).astype(np.float32)
    img = base + grad[:, 0] * ramp[None, :, None] + grad[:, 1] * ramp[None, None, :]
    return img + rng.normal(0, 0.06, size=(3, size, size)).astype(np.float32)


def make_detection_data(
    n: int,
    split: str = "train",
    seed: int = 0,
    size: int = IMAGE_SIZE,
    max_objects: int = MAX_OBJECTS,
) -> dict[str, np.ndarray]:
    """`n` images of `split`; the same (n, split, seed, size) always gives the same arrays.

    Returns `x` float32 [n,3,size,size] in [0,1], `boxes` float32 [n,max_objects,4] and
    `labels` int64 [n,max_objects], padded with -1 past each image's objects.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if size < 2 * _MAX_SIDE:
        raise ValueError(f"size must be >= {2 * _MAX_SIDE}, got {size}")
    # One stream per (seed, split): splits never share images.
    rng = np.random.default_rng([seed, SPLITS[split], size])
    x = np.empty((n, 3, size, size), dtype=np.float32)
    boxes = np.full((n, max_objects, 4), -1, dtype=np.float32)
    labels = np.full((n, max_objects), -1, dtype=np.int64)
    for i in range(n):
        img = _background(rng, size)
        count = int(rng.integers(1, max_objects + 1))
        placed: list[np.ndarray] = []
        for _ in range(count * 10):  # rejection sampling keeps overlaps small
            if len(placed) == count:
                break
            w, h = (int(v) for v in rng.integers(_MIN_SIDE, _MAX_SIDE + 1, size=2))
            x1, y1 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float32)
            if placed and _iou(box, np.stack(placed)).max() > _MAX_OVERLAP:
                continue
            label = int(rng.integers(0, NUM_CLASSES))
            mask = _shape_mask(label, w, h, rng)
            colour = _COLOURS[label] + rng.uniform(-0.1, 0.1, size=3).astype(np.float32)
            region = img[:, y1:y1 + h, x1:x1 + w]
            region[:, mask] = colour[:, None] + rng.normal(0, 0.03, size=(3, int(mask.sum())))
            # Tight box around the drawn pixels (ellipses and triangles don't fill every edge).
            ys, xs = np.nonzero(mask)
            k = len(placed)
            boxes[i, k] = [x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1]
            labels[i, k] = label
            placed.append(box)
        x[i] = np.clip(img, 0.0, 1.0)
    return {"x": x, "boxes": boxes, "labels": labels}
