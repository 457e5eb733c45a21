"""Geometry of masks, keypoints and oriented boxes (toolkit.detection.instances), on hand-made
cases with known answers and against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.detection.instances import (
    COCO_KEYPOINT_SIGMAS,
    binarise,
    keypoint_sigmas,
    mask_iou,
    max_prob_diff,
    obb_corners,
    obb_to_xyxy,
    oks,
    probiou,
    rotated_iou,
)
from toolkit.detection.match import pairwise_iou
from toolkit.errors import UsageError

# -- masks ------------------------------------------------------------------------------------


def test_binarise_is_strictly_above_the_threshold_and_keeps_booleans():
    assert binarise(np.array([0.2, 0.5, 0.51])).tolist() == [False, False, True]
    flags = np.array([True, False])
    assert binarise(flags) is flags


def test_mask_iou_of_two_overlapping_squares():
    a = np.zeros((1, 10, 10))
    b = np.zeros((2, 10, 10))
    a[0, 0:4, 0:4] = 0.9  # 16 pixels
    b[0, 2:6, 2:6] = 0.8  # 16 pixels, 4 shared
    b[1, 0:4, 0:4] = 0.6  # the same pixels as a
    assert mask_iou(a, b) == pytest.approx(np.array([[4 / 28, 1.0]]))
    assert mask_iou(b, a) == pytest.approx(np.array([[4 / 28], [1.0]]))


def test_two_empty_masks_agree_and_an_empty_against_a_full_one_does_not():
    empty, full = np.zeros((1, 4, 4)), np.ones((1, 4, 4))
    assert mask_iou(empty, empty)[0, 0] == 1.0
    assert mask_iou(empty, full)[0, 0] == 0.0


def test_the_margin_leaves_the_reference_borderline_pixels_out_of_both_sets():
    reference = np.zeros((1, 1, 4))
    reference[0, 0] = [0.9, 0.9, 0.52, 0.1]
    actual = np.zeros((1, 1, 4))
    actual[0, 0] = [0.9, 0.9, 0.48, 0.1]  # pixel 2 flips across 0.5
    assert mask_iou(reference, actual)[0, 0] == pytest.approx(2 / 3)
    assert mask_iou(reference, actual, margin=0.05)[0, 0] == 1.0
    # a pixel far from the threshold in the reference still counts
    actual[0, 0, 3] = 0.9
    assert mask_iou(reference, actual, margin=0.05)[0, 0] == pytest.approx(2 / 3)


def test_mask_iou_equals_counting_pixels_pair_by_pair():
    # 100 + 10 masks of 40,000 pixels: the pixel axis is worked through in two slices
    rng = np.random.default_rng(0)
    a = rng.random((100, 40, 1000))
    b = np.clip(a[:10] + rng.normal(0, 0.1, (10, 40, 1000)), 0, 1)
    a_in, b_in, judged = a > 0.5, b > 0.5, np.abs(a - 0.5) > 0.05
    for margin, keep in ((0.0, np.ones_like(judged)), (0.05, judged)):
        expected = np.array([((a_in[i] & b_in & keep[i]).sum((1, 2))
                              / ((a_in[i] | b_in) & keep[i]).sum((1, 2))) for i in range(100)])
        assert mask_iou(a, b, margin=margin) == pytest.approx(expected, abs=1e-12)


def test_mask_iou_refuses_different_resolutions_in_one_line():
    with pytest.raises(UsageError, match="same resolution") as info:
        mask_iou(np.zeros((1, 4, 4)), np.zeros((1, 8, 8)))
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match=r"expected \[n, h, w\]"):
        mask_iou(np.zeros((4, 4)), np.zeros((1, 4, 4)))


def test_max_prob_diff():
    assert max_prob_diff(np.array([0.1, 0.7]), np.array([0.15, 0.4])) == pytest.approx(0.3)
    with pytest.raises(UsageError):
        max_prob_diff(np.zeros(2), np.zeros(3))


# -- keypoints --------------------------------------------------------------------------------


def test_sigmas_are_cocos_for_17_points_and_uniform_otherwise():
    sigmas, said = keypoint_sigmas(17)
    assert sigmas == pytest.approx(COCO_KEYPOINT_SIGMAS) and "COCO" in said
    assert COCO_KEYPOINT_SIGMAS[0] == pytest.approx(0.026)  # nose
    assert COCO_KEYPOINT_SIGMAS[11] == pytest.approx(0.107)  # left hip
    sigmas, said = keypoint_sigmas(5)
    assert sigmas == pytest.approx(np.full(5, 0.2)) and "1/5" in said and "Ultralytics" in said


def person(seed: int, n: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = np.concatenate([rng.uniform(0, 100, (n, 17, 2)), np.full((n, 17, 1), 2.0)], -1)
    return points


def test_oks_of_identical_keypoints_is_one():
    people = person(0, 3)
    result = oks(people, people, np.full(3, 900.0), COCO_KEYPOINT_SIGMAS)
    assert np.diag(result) == pytest.approx(np.ones(3))


def test_oks_matches_the_formula_and_falls_with_distance():
    reference = person(1)
    area, sigma = 400.0, COCO_KEYPOINT_SIGMAS
    scores = []
    for shift in (1.0, 2.0, 4.0):
        moved = reference.copy()
        moved[..., 0] += shift
        expected = np.mean(np.exp(-shift ** 2 / (2 * area * (2 * sigma) ** 2)))
        scores.append(oks(reference, moved, [area], sigma)[0, 0])
        assert scores[-1] == pytest.approx(expected)
    assert scores[0] > scores[1] > scores[2]


def test_oks_averages_over_the_references_visible_keypoints_only():
    reference, actual = person(2), person(2)
    reference[0, 5:, 2] = 0  # only the first five are labelled
    actual[0, 5:, :2] += 50  # the unlabelled ones are far off: they must not count
    assert oks(reference, actual, [100.0], COCO_KEYPOINT_SIGMAS)[0, 0] == pytest.approx(1.0)
    # model outputs: visible when the score is above the threshold given
    reference[0, :, 2] = 0.3
    reference[0, :5, 2] = 0.9
    result = oks(reference, actual, [100.0], COCO_KEYPOINT_SIGMAS, visible_threshold=0.5)
    assert result[0, 0] == pytest.approx(1.0)


def test_a_reference_without_visible_keypoints_has_nothing_to_judge():
    reference = person(3)
    reference[..., 2] = 0
    assert np.isnan(oks(reference, person(3), [100.0], COCO_KEYPOINT_SIGMAS)[0, 0])


def test_oks_refuses_mismatched_keypoint_counts():
    with pytest.raises(UsageError, match="must agree"):
        oks(person(0), person(0)[:, :5], [1.0], COCO_KEYPOINT_SIGMAS)
    with pytest.raises(UsageError, match=r"\[n, P, 3\]"):
        oks(person(0)[..., :2], person(0), [1.0], COCO_KEYPOINT_SIGMAS)


# -- oriented boxes ---------------------------------------------------------------------------


def test_corners_follow_the_contracts_angle_convention():
    # w = 4 along (cos, sin) of 90 degrees = straight down on screen (y grows downward)
    corners = obb_corners(np.array([[10.0, 20.0, 4.0, 2.0, math.pi / 2]]))[0]
    assert corners == pytest.approx(np.array([[9, 22], [9, 18], [11, 18], [11, 22]]))
    assert obb_to_xyxy(np.array([[10.0, 20.0, 4.0, 2.0, math.pi / 2]])) == pytest.approx(
        np.array([[9.0, 18.0, 11.0, 22.0]]))
    # a small positive angle turns the w side clockwise on screen: its right end goes down
    right_end = obb_corners(np.array([[0.0, 0.0, 2.0, 0.0, 0.1]]))[0, 0]
    assert right_end[1] > 0


def test_a_square_against_itself_turned_45_degrees():
    # the intersection is a regular octagon: IoU = (8 sqrt2 - 8) / (16 - 8 sqrt2) = 1/sqrt2
    square = np.array([[0.0, 0.0, 2.0, 2.0, 0.0]])
    turned = np.array([[0.0, 0.0, 2.0, 2.0, math.pi / 4]])
    assert rotated_iou(square, turned)[0, 0] == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert rotated_iou(turned, turned)[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_hand_computed_cases():
    a = np.array([[0.0, 0.0, 4.0, 4.0, 0.0]])
    shifted = np.array([[2.0, 0.0, 4.0, 4.0, 0.0]])  # half overlap: 8 / 24
    inside = np.array([[0.5, 0.5, 2.0, 2.0, 0.3]])  # contained, any angle: 4 / 16
    apart = np.array([[10.0, 0.0, 4.0, 4.0, 0.7]])
    cross = np.array([[0.0, 0.0, 4.0, 1.0, math.pi / 2]])  # 4x1 against itself turned: 1 / 7
    bar = np.array([[0.0, 0.0, 4.0, 1.0, 0.0]])
    assert rotated_iou(a, shifted)[0, 0] == pytest.approx(1 / 3)
    assert rotated_iou(a, inside)[0, 0] == pytest.approx(0.25)
    assert rotated_iou(a, apart)[0, 0] == 0.0
    assert rotated_iou(bar, cross)[0, 0] == pytest.approx(1 / 7)
    # theta and theta + pi are the same rectangle; so are (w, h, theta) and (h, w, theta+pi/2)
    assert rotated_iou(bar, bar + [0, 0, 0, 0, math.pi])[0, 0] == pytest.approx(1.0)
    assert rotated_iou(bar, np.array([[0.0, 0.0, 1.0, 4.0, math.pi / 2]]))[0, 0] == \
        pytest.approx(1.0)


def test_degenerate_boxes_have_iou_zero_with_everything():
    flat = np.array([[0.0, 0.0, 4.0, 0.0, 0.0], [0.0, 0.0, -1.0, 2.0, 0.0]])
    assert rotated_iou(flat, flat).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert rotated_iou(np.zeros((0, 5)), flat).shape == (0, 2)


def random_boxes(rng: np.random.Generator, n: int, angles: bool) -> np.ndarray:
    theta = rng.uniform(-math.pi, math.pi, n) if angles else np.zeros(n)
    return np.c_[rng.uniform(0, 60, (n, 2)), rng.uniform(1, 30, (n, 2)), theta]


def test_at_angle_zero_it_is_the_axis_aligned_iou():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 80, False), random_boxes(rng, 60, False)
    expected = pairwise_iou(obb_to_xyxy(a), obb_to_xyxy(b))
    assert (expected > 0).sum() > 500  # many overlapping pairs, not only zeros
    assert rotated_iou(a, b) == pytest.approx(expected, abs=1e-12)


def test_it_agrees_with_opencvs_convex_polygon_intersection():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 30, True), random_boxes(rng, 30, True)
    ca, cb = obb_corners(a), obb_corners(b)
    expected = np.zeros((30, 30))
    for i in range(30):
        for j in range(30):
            inter, _ = cv2.intersectConvexConvex(ca[i].astype(np.float32),
                                                 cb[j].astype(np.float32))
            area_i, area_j = a[i, 2] * a[i, 3], b[j, 2] * b[j, 3]
            expected[i, j] = inter / (area_i + area_j - inter)
    assert (expected > 0.05).sum() > 50
    assert rotated_iou(a, b) == pytest.approx(expected, abs=1e-4)  # cv2 works in float32


box = st.tuples(st.floats(-50, 50), st.floats(-50, 50), st.floats(0.5, 40), st.floats(0.5, 40),
                st.floats(-4, 4))


@settings(max_examples=150, deadline=None)
@given(box, box, st.floats(-math.pi, math.pi))
def test_properties_symmetry_range_and_invariance_under_a_common_rotation(p, q, turn):
    a, b = np.array([p]), np.array([q])
    iou = rotated_iou(a, b)[0, 0]
    assert 0.0 <= iou <= 1.0
    assert rotated_iou(b, a)[0, 0] == pytest.approx(iou, abs=1e-9)
    assert rotated_iou(a, a)[0, 0] == pytest.approx(1.0, abs=1e-9)
    # turning the whole scene about the origin changes nothing
    c, s = math.cos(turn), math.sin(turn)

    def turned(x: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[:, 0], out[:, 1] = c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1]
        out[:, 4] += turn
        return out

    assert rotated_iou(turned(a), turned(b))[0, 0] == pytest.approx(iou, abs=1e-9)


def bhattacharyya(p: np.ndarray, q: np.ndarray) -> float:
    """The textbook Bhattacharyya distance of the two boxes' Gaussians, by matrix algebra."""
    def gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(x[4]), math.sin(x[4])
        rot = np.array([[c, -s], [s, c]])
        return x[:2], rot @ np.diag([x[2] ** 2 / 12, x[3] ** 2 / 12]) @ rot.T

    (m1, s1), (m2, s2) = gaussian(p), gaussian(q)
    s = (s1 + s2) / 2
    d = m1 - m2
    return float(d @ np.linalg.inv(s) @ d / 8 + 0.5 * math.log(
        np.linalg.det(s) / math.sqrt(np.linalg.det(s1) * np.linalg.det(s2))))


def test_probiou_is_one_minus_the_hellinger_distance_of_the_gaussians():
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 12, True), random_boxes(rng, 9, True)
    expected = np.array([[1 - math.sqrt(1 - math.exp(-bhattacharyya(p, q))) for q in b]
                         for p in a])
    assert probiou(a, b, eps=0) == pytest.approx(expected, abs=1e-9)
    # Ultralytics' guards move it by about sqrt(eps) at most
    assert probiou(a, b) == pytest.approx(expected, abs=1e-3)
    assert probiou(a, a).diagonal() == pytest.approx(np.full(12, 1 - math.sqrt(2e-7)))


def test_probiou_sees_a_square_turned_45_degrees_as_the_same_box():
    # a square's Gaussian is round: turning it changes nothing (the exact IoU says 0.71)
    square = np.array([[0.0, 0.0, 2.0, 2.0, 0.0]])
    turned = np.array([[0.0, 0.0, 2.0, 2.0, math.pi / 4]])
    assert probiou(square, turned, eps=0)[0, 0] == pytest.approx(1.0)
    far = np.array([[100.0, 0.0, 2.0, 2.0, 0.0]])
    assert probiou(square, far)[0, 0] < 1e-3
    assert probiou(square, np.array([[0.0, 0.0, 0.0, 2.0, 0.0]]))[0, 0] < 1e-3  # degenerate


def test_oriented_boxes_of_the_wrong_shape_are_refused():
    with pytest.raises(UsageError, match=r"\[n, 5\]"):
        rotated_iou(np.zeros((2, 4)), np.zeros((1, 5)))
