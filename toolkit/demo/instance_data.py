"""Deterministic synthetic instance data: masks, keypoints and oriented boxes (numpy only).

The detection demo's shapes (0 rectangle / red, 1 ellipse / green, 2 triangle / blue; the same
backgrounds and colours), each drawn ROTATED about its centre by an angle in [-pi/2, pi/2), so
every task of issue #30 has exact ground truth:

- `masks`: the pixels whose centre lies inside the rotated shape. Objects never overlap nor
  touch (rejection sampling keeps a gap of at least one pixel), so each mask is the whole shape
  and all of it is visible; nothing paints over anything.
- `boxes`: tight xyxy pixel-edge boxes around each mask (a mask covering columns 3..9 has
  x1=3, x2=10), as in `detection_data`.
- `keypoints` (P = 5, pixel coordinates: pixel (i, j) spans [j, j+1) x [i, i+1), its centre at
  +0.5), in the shape's own frame before it is rotated, in this order:
  0 top, 1 right, 2 bottom, 3 left, 4 centre. Rectangle and ellipse: the midpoints of the four
  sides of the shape's w x h extent (the ellipse's axis ends) and its centre. Triangle (apex on
  the top side, base along the bottom side): 0 the apex, 1 the right base vertex, 2 the base
  midpoint, 3 the left base vertex, 4 its centroid (deep inside it, unlike the extent's centre).
  A horizontal flip swaps right and left: FLIP_IDX = (0, 3, 2, 1, 4). As the angle stays within
  [-pi/2, pi/2), the top point is never below the centre on screen.
- `obb`: cx, cy, w, h, theta of the shape's own w x h extent, rotated: the w side runs along
  (cos theta, sin theta) in image coordinates (x right, y down); corners are
  centre +- (w/2)(cos, sin) +- (h/2)(-sin, cos). theta is brought into [-pi/4, 3pi/4)
  (Ultralytics' range) by adding pi where needed: a turn by pi is the same rectangle, so w and h
  keep their meaning (the shape's width and height) and never swap. `angles` is that theta;
  save it with `obb`: `boxes` turned by `angles` alone is not the oriented box (`boxes` are the
  tight axis-aligned boxes of the rotated shapes, not their unrotated extents).

Arrays are padded to `max_objects` rows: labels -1, boxes -1, everything else 0.
"""

from __future__ import annotations

import math

import numpy as np

from toolkit.demo.detection_data import (
    _COLOURS,
    _MIN_SIDE,
    CLASS_NAMES,
    NUM_CLASSES,
    SPLITS,
    _background,
)

__all__ = ["CLASS_NAMES", "FLIP_IDX", "KEYPOINT_NAMES", "NUM_CLASSES", "make_instance_data"]

IMAGE_SIZE = 64
MAX_OBJECTS = 4
KEYPOINT_NAMES = ("top", "right", "bottom", "left", "centre")
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
FLIP_IDX = (0, 3, 2, 1, 4)  # left <-> right under a horizontal flip
VISIBLE = 2  # COCO's v: labelled and visible
# Smaller than detection_data's 28: a rotated shape needs up to sqrt(2) x its side, and the
# objects of one image must not touch.
_MAX_SIDE = 24
_TRIES_PER_OBJECT = 20
_STREAM = 30  # keeps these images apart from detection_data's for the same seed and split


def _frame(theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Image-space directions of the shape's local u (its w side) and v (its h side) axes."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([c, s]), np.array([-s, c])


def _local_keypoints(label: int, w: float, h: float, apex: float) -> np.ndarray:
    """[5, 2] (u, v) in the shape's frame, centred on its w x h extent."""
    if label == 2:  # triangle: apex at u=apex on the top side, base along the bottom side
        return np.array([[apex, -h / 2], [w / 2, h / 2], [0.0, h / 2], [-w / 2, h / 2],
                         [apex / 3, h / 6]])
    return np.array([[0.0, -h / 2], [w / 2, 0.0], [0.0, h / 2], [-w / 2, 0.0], [0.0, 0.0]])


def _rotated_mask(label: int, w: float, h: float, apex: float, centre: np.ndarray,
                  theta: float, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Pixels whose centre lies inside the shape (closed), as a boolean [size, size]."""
    ex, ey = _frame(theta)
    dx, dy = grid[0] - centre[0], grid[1] - centre[1]
    u = dx * ex[0] + dy * ex[1]
    v = dx * ey[0] + dy * ey[1]
    if label == 0:
        return (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)
    if label == 1:
        return (u / (w / 2)) ** 2 + (v / (h / 2)) ** 2 <= 1.0
    t = (v + h / 2) / h  # 0 on the apex's side, 1 on the base
    left = apex + (-w / 2 - apex) * t
    right = apex + (w / 2 - apex) * t
    return (t >= 0) & (t <= 1) & (u >= left) & (u <= right)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel in all 8 directions."""
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    size_y, size_x = mask.shape
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + size_y, dx:dx + size_x]
    return out


def normalise_obb_angle(theta: float) -> float:
    """theta + k*pi in [-pi/4, 3pi/4): the same rectangle, w and h unchanged."""
    return (theta + math.pi / 4) % math.pi - math.pi / 4


def make_instance_data(
    n: int,
    split: str = "train",
    seed: int = 0,
    size: int = IMAGE_SIZE,
    max_objects: int = MAX_OBJECTS,
) -> dict[str, np.ndarray]:
    """`n` images of `split`; the same arguments always give the same arrays.

    Returns (M = max_objects, P = 5): `x` float32 [n,3,size,size] in [0,1]; `boxes` float32
    [n,M,4] xyxy; `labels` int64 [n,M] (-1 pads); `masks` bool [n,M,size,size]; `keypoints`
    float32 [n,M,P,3] (x, y, v=2); `obb` float32 [n,M,5] (cx, cy, w, h, theta); `angles`
    float32 [n,M] (= obb theta). Padding rows: labels and boxes -1, the rest 0.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if size < 2 * _MAX_SIDE:
        raise ValueError(f"size must be >= {2 * _MAX_SIDE}, got {size}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    rng = np.random.default_rng([seed, SPLITS[split], size, _STREAM])
    m = max_objects
    x = np.empty((n, 3, size, size), dtype=np.float32)
    boxes = np.full((n, m, 4), -1, dtype=np.float32)
    labels = np.full((n, m), -1, dtype=np.int64)
    masks = np.zeros((n, m, size, size), dtype=bool)
    keypoints = np.zeros((n, m, NUM_KEYPOINTS, 3), dtype=np.float32)
    obb = np.zeros((n, m, 5), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    grid = (xx, yy)
    for i in range(n):
        img = _background(rng, size)
        count = int(rng.integers(1, max_objects + 1))
        taken = np.zeros((size, size), dtype=bool)  # drawn pixels grown by one: the no-go zone
        k = 0
        for _ in range(count * _TRIES_PER_OBJECT):  # rejection sampling: objects never touch
            if k == count:
                break
            label = int(rng.integers(0, NUM_CLASSES))
            w, h = (float(v) for v in rng.integers(_MIN_SIDE, _MAX_SIDE + 1, size=2))
            apex = float(rng.uniform(-0.3, 0.3)) * w if label == 2 else 0.0
            theta = float(rng.uniform(-math.pi / 2, math.pi / 2))
            # Half the rotated extent's axis-aligned size: the centre keeps all of it inside.
            half = np.array([abs(w * math.cos(theta)) + abs(h * math.sin(theta)),
                             abs(w * math.sin(theta)) + abs(h * math.cos(theta))]) / 2
            centre = rng.uniform(half, size - half)
            mask = _rotated_mask(label, w, h, apex, centre, theta, grid)
            if (mask & taken).any():
                continue
            colour = _COLOURS[label] + rng.uniform(-0.1, 0.1, size=3).astype(np.float32)
            img[:, mask] = colour[:, None] + rng.normal(0, 0.03, size=(3, int(mask.sum())))
            taken |= _dilate(mask)
            ys, xs = np.nonzero(mask)
            boxes[i, k] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            labels[i, k] = label
            masks[i, k] = mask
            ex, ey = _frame(theta)
            local = _local_keypoints(label, w, h, apex)
            points = centre + local[:, :1] * ex + local[:, 1:] * ey
            inside = np.all((points >= 0) & (points <= size), axis=1)
            keypoints[i, k, :, :2] = np.where(inside[:, None], points, 0.0)
            keypoints[i, k, :, 2] = np.where(inside, VISIBLE, 0)
            obb[i, k] = [centre[0], centre[1], w, h, normalise_obb_angle(theta)]
            k += 1
        x[i] = np.clip(img, 0.0, 1.0)
    return {"x": x, "boxes": boxes, "labels": labels, "masks": masks, "keypoints": keypoints,
            "obb": obb, "angles": obb[..., 4].copy()}
