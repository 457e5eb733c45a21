"""benchmarks/yolo_dataset.py: the instance data as Ultralytics datasets, read back by
Ultralytics' own label checker (training one epoch is the script's --train-check)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.yolo_dataset import (
    TASKS,
    obb_corners,
    outline_polygon,
    write_yolo_dataset,
)
from toolkit.demo.instance_data import make_instance_data

SIZE = 64


def inside(polygon: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd rule: points (x, y) inside the closed polygon [k, 2]."""
    result = np.zeros(x.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, 0)):
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        result ^= crosses & (x < at)
    return result


def test_outline_holds_exactly_the_masks_pixels_and_its_box_is_the_tight_box():
    data = make_instance_data(24, split="val", seed=4)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    for i, k in zip(*np.nonzero(data["labels"] >= 0)):
        mask = data["masks"][i, k]
        polygon = outline_polygon(mask)
        np.testing.assert_array_equal(inside(polygon, xx, yy), mask)
        assert [*polygon.min(0), *polygon.max(0)] == data["boxes"][i, k].tolist()
        assert len(polygon) < 4 * (mask.any(0).sum() + mask.any(1).sum())  # no collinear points


def test_outline_refuses_a_mask_it_cannot_trace():
    mask = np.zeros((8, 8), bool)
    mask[2, 1:3] = mask[2, 5:7] = True
    with pytest.raises(ValueError, match="row 2 of the mask holds more than one run"):
        outline_polygon(mask)
    with pytest.raises(ValueError, match="empty"):
        outline_polygon(np.zeros((4, 4), bool))


def test_obb_corners_follow_the_contract():
    corners = obb_corners(np.array([10, 20, 8, 4, np.pi / 2]))  # w side runs down the screen
    np.testing.assert_allclose(corners, [[12, 16], [12, 24], [8, 24], [8, 16]], atol=1e-9)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    return {task: write_yolo_dataset(root / task, task, SIZE, n_train=6, n_val=3, seed=1)
            for task in TASKS}


def test_the_yaml_says_paths_names_and_the_pose_skeleton(datasets):
    yaml = pytest.importorskip("yaml")
    for task, path in datasets.items():
        spec = yaml.safe_load(path.read_text())
        assert spec["path"] == str(path.parent) and spec["train"] == "images/train"
        assert spec["names"] == {0: "rectangle", 1: "ellipse", 2: "triangle"}
        assert ("kpt_shape" in spec) == (task == "pose")
    pose = yaml.safe_load(datasets["pose"].read_text())
    assert pose["kpt_shape"] == [5, 3] and pose["flip_idx"] == [0, 3, 2, 1, 4]


@pytest.mark.parametrize("task", TASKS)
def test_ultralytics_reads_every_label_back_as_written(datasets, task):
    pytest.importorskip("ultralytics", reason="ultralytics (a test dependency) is not installed")
    from ultralytics.data.utils import verify_image_label
    from ultralytics.utils.ops import xyxyxyxy2xywhr

    root = datasets[task].parent
    data = make_instance_data(6, "train", seed=1, size=SIZE)
    for i in range(6):
        image = root / "images" / "train" / f"{i:05d}.png"
        label = root / "labels" / "train" / f"{i:05d}.txt"
        _, boxes, shape, segments, keypoints, missing, found, empty, corrupt, msg = (
            verify_image_label((str(image), str(label), "", task == "pose", 3,
                                5 if task == "pose" else 0, 3, False)))
        assert (missing, found, empty, corrupt, msg) == (0, 1, 0, 0, "")
        assert shape == (SIZE, SIZE)
        keep = data["labels"][i] >= 0
        np.testing.assert_array_equal(boxes[:, 0], data["labels"][i][keep])
        tight = data["boxes"][i][keep] / SIZE
        if task != "obb":  # segment and pose boxes: the tight box, as cx cy w h
            xywh = np.concatenate([(tight[:, :2] + tight[:, 2:]) / 2, tight[:, 2:] - tight[:, :2]],
                                  1)
            np.testing.assert_allclose(boxes[:, 1:], xywh, atol=1e-6)
        if task == "pose":
            expected = data["keypoints"][i][keep].copy()
            expected[..., :2] /= SIZE
            np.testing.assert_allclose(keypoints, expected, atol=1e-6)
        if task == "obb":  # Ultralytics' own corners -> xywhr gives back our rectangles
            mine = data["obb"][i][keep]
            theirs = xyxyxyxy2xywhr(np.stack(segments).reshape(len(segments), 8) * SIZE)
            np.testing.assert_allclose(theirs[:, :2], mine[:, :2], atol=1e-3)
            np.testing.assert_allclose(np.sort(theirs[:, 2:4], 1), np.sort(mine[:, 2:4], 1),
                                       atol=1e-2)
        else:
            assert len(segments) == (keep.sum() if task == "segment" else 0)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_ultralytics_trains_an_epoch_on_each_dataset_offline(datasets, task, tmp_path):
    pytest.importorskip("ultralytics", reason="ultralytics (a test dependency) is not installed")
    import torch

    from benchmarks.yolo_dataset import train_one_epoch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    _, trainer = train_one_epoch(datasets[task], task, SIZE, tmp_path)
    assert torch.get_num_threads() == threads  # the trainer's global settings are put back
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    data = make_instance_data(6, "train", seed=1, size=SIZE)
    labels = trainer.train_loader.dataset.labels
    assert len(labels) == 6
    assert sum(len(image["cls"]) for image in labels) == (data["labels"] >= 0).sum()
    if task == "pose":
        assert trainer.data["kpt_shape"] == [5, 3] and trainer.data["flip_idx"] == [0, 3, 2, 1, 4]
        assert all(image["keypoints"].shape[1:] == (5, 3) for image in labels)
    if task == "segment":
        assert all(len(image["segments"]) == len(image["cls"]) for image in labels)
    suffix = {"segment": "(M)", "pose": "(P)", "obb": "(B)"}[task]
    assert f"metrics/mAP50-95{suffix}" in trainer.metrics
    losses = trainer.tloss  # the epoch's mean training losses (a dict by name in 8.4)
    losses = [float(v) for v in (losses.values() if isinstance(losses, dict) else losses)]
    assert len(losses) >= 3 and np.isfinite(losses).all()
