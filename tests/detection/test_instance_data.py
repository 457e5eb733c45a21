"""The generated instance data: masks, boxes, keypoints and oriented boxes agree with each other."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.demo.detection_data import _COLOURS
from toolkit.demo.instance_data import FLIP_IDX, make_instance_data

SIZE = 64


@pytest.fixture(scope="module")
def data():
    return make_instance_data(48, split="val", seed=5)


def objects(data):
    """(image, row) of every real object."""
    return list(zip(*np.nonzero(data["labels"] >= 0)))


def corners(obb: np.ndarray) -> np.ndarray:
    """[4, 2] corners of (cx, cy, w, h, theta) by the contract's convention."""
    cx, cy, w, h, t = (float(v) for v in obb)
    u = np.array([math.cos(t), math.sin(t)]) * w / 2
    v = np.array([-math.sin(t), math.cos(t)]) * h / 2
    c = np.array([cx, cy])
    return np.stack([c + u + v, c - u + v, c - u - v, c + u - v])


def test_same_arguments_same_arrays_and_other_seeds_or_splits_differ(data):
    again = make_instance_data(48, split="val", seed=5)
    assert data.keys() == again.keys()
    for name in data:
        np.testing.assert_array_equal(data[name], again[name])
    for other in (make_instance_data(48, split="train", seed=5),
                  make_instance_data(48, split="val", seed=6)):
        assert not np.array_equal(other["x"], data["x"])
        assert not np.array_equal(other["obb"], data["obb"])


def test_layout_dtypes_and_padding(data):
    n, m = 48, 4
    expected = {"x": ((n, 3, SIZE, SIZE), np.float32), "boxes": ((n, m, 4), np.float32),
                "labels": ((n, m), np.int64), "masks": ((n, m, SIZE, SIZE), np.bool_),
                "keypoints": ((n, m, 5, 3), np.float32), "obb": ((n, m, 5), np.float32),
                "angles": ((n, m), np.float32)}
    for name, (shape, dtype) in expected.items():
        assert data[name].shape == shape and data[name].dtype == dtype, name
    assert data["x"].min() >= 0.0 and data["x"].max() <= 1.0
    pad = data["labels"] < 0
    counts = (~pad).sum(1)
    assert counts.min() >= 1 and set(counts) == {1, 2, 3, 4}  # 1..max_objects per image
    assert set(data["labels"][~pad]) == {0, 1, 2}
    # Objects come first; padding rows: boxes -1, everything else zero.
    assert all(not pad[i, :c].any() for i, c in enumerate(counts))
    assert (data["boxes"][pad] == -1).all()
    for name in ("masks", "keypoints", "obb", "angles"):
        assert not data[name][pad].any(), name


def test_each_box_is_the_tight_box_of_its_mask_and_masks_never_touch(data):
    for i, k in objects(data):
        ys, xs = np.nonzero(data["masks"][i, k])
        assert data["boxes"][i, k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    for i in range(len(data["x"])):
        drawn = data["masks"][i][data["labels"][i] >= 0]
        # no pixel shared, and no two objects 8-adjacent: dilating one misses the others
        assert drawn.sum(0).max() <= 1
        for a in range(len(drawn)):
            grown = np.pad(drawn[a], 1)
            grown = np.any([grown[dy:dy + SIZE, dx:dx + SIZE] for dy in range(3)
                            for dx in range(3)], axis=0)
            others = np.delete(drawn, a, axis=0).any(0)
            assert not (grown & others).any()


def test_the_masks_pixels_have_their_class_colour(data):
    for i, k in objects(data):
        mean = data["x"][i][:, data["masks"][i, k]].mean(1)
        nearest = np.argmin(np.abs(_COLOURS - mean).sum(1))
        assert nearest == data["labels"][i, k]


def test_centre_keypoint_lies_in_its_mask_and_all_points_are_visible_in_the_image(data):
    for i, k in objects(data):
        kp = data["keypoints"][i, k]
        assert (kp[:, 2] == 2).all()
        assert ((kp[:, :2] >= 0) & (kp[:, :2] <= SIZE)).all()
        cx, cy = kp[4, :2]
        assert data["masks"][i, k, int(cy), int(cx)]


def test_oriented_box_holds_every_mask_pixel_and_the_shape_fills_it(data):
    assert np.array_equal(data["angles"], data["obb"][..., 4])
    theta = data["obb"][..., 4][data["labels"] >= 0]
    assert theta.min() >= -math.pi / 4 and theta.max() < 3 * math.pi / 4
    for i, k in objects(data):
        obb = data["obb"][i, k]
        cx, cy, w, h, t = (float(v) for v in obb)
        box_corners = corners(obb)
        assert box_corners.min() >= 0 and box_corners.max() <= SIZE  # fully inside the image
        ys, xs = np.nonzero(data["masks"][i, k])
        d = np.stack([xs + 0.5 - cx, ys + 0.5 - cy])
        u = d[0] * math.cos(t) + d[1] * math.sin(t)
        v = -d[0] * math.sin(t) + d[1] * math.cos(t)
        assert np.abs(u).max() <= w / 2 + 1e-3 and np.abs(v).max() <= h / 2 + 1e-3
        # The shape touches its extent's sides: the mask reaches within a pixel of each (of a
        # triangle, only its flat base: its sharp corners may hold no pixel centre near them).
        if data["labels"][i, k] == 2:
            assert np.abs(v).max() >= h / 2 - 1
        else:
            assert u.max() >= w / 2 - 1 and u.min() <= -w / 2 + 1
            assert v.max() >= h / 2 - 1 and v.min() <= -h / 2 + 1
        area = {0: w * h, 1: math.pi * w * h / 4, 2: w * h / 2}[int(data["labels"][i, k])]
        assert abs(xs.size - area) <= (w + h)  # about the perimeter's worth of edge pixels


def test_outline_keypoints_sit_on_the_extent_in_its_frame(data):
    for i, k in objects(data):
        cx, cy, w, h, t = (float(v) for v in data["obb"][i, k])
        kp = data["keypoints"][i, k, :, :2].astype(np.float64)
        # The obb's theta may be the drawing angle + pi: the shape's own axes up to sign.
        along = np.array([math.cos(t), math.sin(t)])
        across = np.array([-math.sin(t), math.cos(t)])
        local = np.stack([(kp - [cx, cy]) @ along, (kp - [cx, cy]) @ across], 1)
        if data["labels"][i, k] == 2:  # apex on one side, base (3 points) on the other
            assert abs(abs(local[0, 1]) - h / 2) < 1e-3
            np.testing.assert_allclose(np.abs(local[1:4, 1]), h / 2, atol=1e-3)
            np.testing.assert_allclose(np.abs(local[[1, 2, 3], 0]), [w / 2, 0, w / 2],
                                       atol=1e-3)
            np.testing.assert_allclose(local[4], local[:4:2].sum(0) / 3 + local[[1, 3]].sum(0)
                                       / 6, atol=1e-3)  # centroid of apex + 2 base vertices
        else:  # side midpoints, then the centre
            np.testing.assert_allclose(np.abs(local[:, ::-1]), [[h / 2, 0], [0, w / 2],
                                       [h / 2, 0], [0, w / 2], [0, 0]], atol=1e-3)
            assert kp[0, 1] <= kp[4, 1] + 1e-3  # top is never below the centre


def test_flip_idx_keeps_the_points_handedness_under_a_horizontal_flip(data):
    def turn(kp):  # sign of (right - centre) x (bottom - centre): +1 in the shape's own frame
        a, b = kp[1, :2] - kp[4, :2], kp[2, :2] - kp[4, :2]
        return np.sign(a[0] * b[1] - a[1] * b[0])

    for i, k in objects(data):
        kp = data["keypoints"][i, k].copy()
        assert turn(kp) == 1
        kp[:, 0] = SIZE - kp[:, 0]  # mirrored image
        assert turn(kp) == -1 and turn(kp[list(FLIP_IDX)]) == 1


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="split 'dev'"):
        make_instance_data(1, split="dev")
    with pytest.raises(ValueError, match="size must be >= 48"):
        make_instance_data(1, size=32)
