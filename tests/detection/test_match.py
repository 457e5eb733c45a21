"""IoU-matched detection parity: real numpy batches in the output contract, no mocks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from toolkit.detection.match import (
    PRESETS,
    DetectionTolerance,
    check_outputs,
    detection_tolerance,
    match_detections,
    pairwise_iou,
    split_outputs,
)
from toolkit.errors import UsageError

Image = tuple[list[list[float]], list[float], list[int]]


def batch(images: list[Image], k: int = 8) -> dict[str, np.ndarray]:
    """Per-image (boxes, scores, labels) -> one batch in the contract, zero-padded to K."""
    b = len(images)
    out = {
        "num_detections": np.zeros(b, np.int64),
        "boxes": np.zeros((b, k, 4), np.float32),
        "scores": np.zeros((b, k), np.float32),
        "labels": np.zeros((b, k), np.int64),
    }
    for i, (boxes, scores, labels) in enumerate(images):
        n = len(scores)
        out["num_detections"][i] = n
        if n:
            out["boxes"][i, :n] = boxes
            out["scores"][i, :n] = scores
            out["labels"][i, :n] = labels
    return out


def grid_image(n: int, seed: int = 0, size: float = 40.0) -> Image:
    """n boxes of one label each in its own grid cell (no overlaps), distinct scores."""
    rng = np.random.default_rng(seed)
    boxes = [[60.0 * (j % 5) + 5, 60.0 * (j // 5) + 5,
              60.0 * (j % 5) + 5 + size, 60.0 * (j // 5) + 5 + size] for j in range(n)]
    scores = list(np.linspace(0.95, 0.5, n))
    labels = [int(v) for v in rng.integers(0, 3, n)]
    return boxes, scores, labels


def edit(image: Image, j: int, box=None, score=None, label=None) -> Image:
    boxes, scores, labels = ([list(b) for b in image[0]], list(image[1]), list(image[2]))
    if box is not None:
        boxes[j] = box
    if score is not None:
        scores[j] = score
    if label is not None:
        labels[j] = label
    return boxes, scores, labels


def drop(image: Image, j: int) -> Image:
    return tuple([v for i, v in enumerate(part) if i != j] for part in image)  # type: ignore


def add(image: Image, box, score, label) -> Image:
    return image[0] + [box], image[1] + [score], image[2] + [label]


# -- passes -----------------------------------------------------------------------------------


def test_identical_outputs_pass_with_perfect_numbers():
    ref = batch([grid_image(6, 0), grid_image(3, 1)])
    result = match_detections(ref, ref)
    assert result.passed and not result.vacuous
    assert (result.matched, result.reference, result.matched_fraction) == (9, 9, 1.0)
    assert result.worst_iou == 1.0 and result.max_score_diff == 0.0
    assert result.summary().startswith("detections PASS: 9/9 matched")


def test_reordered_rows_pass():
    image = grid_image(7)
    order = [3, 0, 6, 1, 5, 2, 4]
    shuffled = tuple([part[i] for i in order] for part in image)
    result = match_detections(batch([image]), batch([shuffled]))
    assert result.passed and result.matched == 7


def test_fp32_noise_passes_and_fp16_sized_noise_needs_the_fp16_preset():
    image = grid_image(8)
    rng = np.random.default_rng(1)
    noisy = (list(np.asarray(image[0]) + rng.uniform(-0.4, 0.4, (8, 4))),
             list(np.asarray(image[1]) + rng.uniform(-4e-3, 4e-3, 8)), image[2])
    tiny = (list(np.asarray(image[0]) + 1e-4), list(np.asarray(image[1]) + 1e-6), image[2])
    assert match_detections(batch([image]), batch([tiny]), tolerance="fp32").passed
    assert not match_detections(batch([image]), batch([noisy]), tolerance="fp32").passed
    assert match_detections(batch([image]), batch([noisy]), tolerance="fp16").passed


def test_degenerate_boxes_are_judged_by_their_coordinates():
    # Zero-width boxes (clipped at the border) have no IoU; equal coordinates still match.
    image = ([[320.0, 10.0, 320.0, 50.0]], [0.7], [1])
    moved = ([[320.0, 10.0, 320.0, 50.03]], [0.7], [1])
    result = match_detections(batch([image]), batch([moved]))
    assert result.passed, result.summary()
    assert result.worst_iou == 0.0 and result.max_box_shift == pytest.approx(0.03, abs=1e-4)


# -- near-threshold and tied detections are tolerated ------------------------------------------


def test_detection_near_the_score_threshold_may_disappear():
    ref = add(grid_image(5), [250, 250, 290, 290], 0.3005, 2)
    result = match_detections(batch([ref]), batch([grid_image(5)]), score_threshold=0.3)
    assert result.passed, result.summary()
    assert (result.tolerated_missing, result.missing) == (1, 0)
    # ... and appear.
    result = match_detections(batch([grid_image(5)]), batch([ref]), score_threshold=0.3)
    assert result.passed and result.tolerated_extra == 1


def test_confident_detection_far_above_the_threshold_is_a_lost_object():
    ref = add(grid_image(5), [250, 250, 290, 290], 0.4, 2)
    result = match_detections(batch([ref]), batch([grid_image(5)]), score_threshold=0.3)
    assert not result.passed and result.missing == 1
    assert "1 object(s) lost" in result.summary()
    assert "first offending image 0: lost label 2 score 0.4000" in result.summary()


def test_a_near_tie_at_the_top_k_cut_may_swap():
    # K = 4, full on both sides; the 4th place goes to a different box by a 4e-4 score wobble.
    base = grid_image(3)
    ref = add(base, [250, 250, 290, 290], 0.4000, 1)
    act = add(base, [190, 190, 230, 230], 0.4004, 2)
    result = match_detections(batch([ref], k=4), batch([act], k=4))
    assert result.passed, result.summary()
    assert (result.tolerated_missing, result.tolerated_extra) == (1, 1)


def test_a_newcomer_well_above_the_cut_is_not_a_tie():
    base = grid_image(3)
    ref = add(base, [250, 250, 290, 290], 0.4, 1)
    act = add(base, [190, 190, 230, 230], 0.45, 2)
    result = match_detections(batch([ref], k=4), batch([act], k=4))
    assert not result.passed and result.extra == 1 and result.tolerated_missing == 1


def test_the_top_k_cut_only_counts_when_the_set_is_full():
    base = grid_image(3)
    ref = add(base, [250, 250, 290, 290], 0.4, 1)
    result = match_detections(batch([ref], k=8), batch([base], k=8))
    assert not result.passed and result.missing == 1


def test_nms_keeping_a_tied_neighbour_is_a_tolerated_swap():
    # Among 20 detections, NMS kept a neighbour (IoU 0.6) of a reference box: same label, tied
    # score. One swap in 20 stays above the fp32 matched fraction of 0.95.
    ref = grid_image(20)
    x1, y1, x2, y2 = ref[0][7]
    act = edit(ref, 7, box=[x1 + 10, y1, x2 + 10, y2], score=ref[1][7] + 1e-4)
    result = match_detections(batch([ref], k=32), batch([act], k=32))
    assert result.passed, result.summary()
    assert result.swapped == 1 and result.matched_fraction == pytest.approx(19 / 20)


# -- real changes fail ------------------------------------------------------------------------


def test_every_box_scaled_by_5_percent_fails():
    ref = grid_image(10)
    act = (list(np.asarray(ref[0]) * 1.05), ref[1], ref[2])
    result = match_detections(batch([ref], k=16), batch([act], k=16))
    assert not result.passed
    assert result.worst_iou < 0.99
    assert "matched fraction 0.000 < 0.95" in result.summary()
    assert "moved with unchanged scores" in result.summary()


def test_a_moved_box_with_a_changed_score_fails():
    ref = grid_image(5)
    x1, y1, x2, y2 = ref[0][2]
    act = edit(ref, 2, box=[x1 + 8, y1, x2 + 8, y2], score=ref[1][2] - 0.1)
    result = match_detections(batch([ref]), batch([act]))
    assert not result.passed and result.moved == 1
    assert "1 box(es) moved" in result.summary()


def test_a_changed_score_fails():
    ref = grid_image(5)
    act = edit(ref, 1, score=ref[1][1] - 0.01)
    result = match_detections(batch([ref]), batch([act]))
    assert not result.passed and result.score_changed == 1
    assert result.max_score_diff == pytest.approx(0.01, abs=1e-6)
    assert match_detections(batch([ref]), batch([act]), tolerance="fp16").passed


def test_a_changed_label_is_reported_as_such():
    ref = grid_image(5)
    act = edit(ref, 3, label=ref[2][3] + 1)
    result = match_detections(batch([ref]), batch([act]))
    assert not result.passed
    assert (result.label_changed, result.missing, result.extra) == (1, 0, 0)
    assert "label changed" in result.summary()


def test_an_extra_confident_object_fails():
    act = add(grid_image(5), [250, 250, 290, 290], 0.9, 0)
    result = match_detections(batch([grid_image(5)]), batch([act]))
    assert not result.passed and result.extra == 1


def test_the_first_offending_image_is_named():
    good, ref = grid_image(4, 0), grid_image(4, 1)
    bad = drop(ref, 0)
    result = match_detections(batch([good, ref, ref]), batch([good, bad, bad]))
    assert not result.passed and result.missing == 2
    assert [im.index for im in result.offending_images] == [1, 2]
    assert "first offending image 1" in result.summary()


def test_nan_outputs_fail():
    ref = grid_image(3)
    result = match_detections(batch([ref]), batch([edit(ref, 0, score=float("nan"))]))
    assert not result.passed
    json.dumps(result.to_dict(), allow_nan=False)  # still valid JSON


def test_non_zero_padding_fails():
    ref = batch([grid_image(3)])
    act = {name: a.copy() for name, a in ref.items()}
    act["scores"][0, 5] = 0.2
    result = match_detections(ref, act)
    assert not result.passed and result.padding_violations == 1
    assert "rows past num_detections not zero" in result.summary()


# -- vacuous ----------------------------------------------------------------------------------


def test_a_reference_without_detections_is_vacuous_and_never_passes():
    empty = batch([([], [], []), ([], [], [])])
    result = match_detections(empty, empty)
    assert result.vacuous and not result.passed
    assert "vacuous" in result.summary()
    assert result.to_dict()["vacuous"] is True


def test_a_reference_whose_detections_are_all_tied_at_the_cut_is_vacuous():
    # A random-weight SSDlite scores every anchor 0.2: which 100 of the thousands of tied
    # anchors fill K differs between runtimes, so nothing can be compared.
    ref = ([[10.0 * j, 0.0, 10.0 * j + 8, 8.0] for j in range(4)], [0.2] * 4, [1] * 4)
    act = ([[10.0 * j, 50.0, 10.0 * j + 8, 58.0] for j in range(4)], [0.2] * 4, [1] * 4)
    result = match_detections(batch([ref], k=4), batch([act], k=4))
    assert result.vacuous and not result.passed
    assert result.tolerated_missing == 4 and result.matched == 0
    # the cut that bit is named, with the option that moves it
    assert "tied at the top-K cut (4 of 4" in result.summary()
    assert "--max-detections" in result.summary()


def test_a_reference_at_the_score_threshold_names_that_cut():
    at = ([[10.0 * j, 0.0, 10.0 * j + 8, 8.0] for j in range(3)], [0.3001] * 3, [1] * 3)
    result = match_detections(batch([at], k=10), batch([at], k=10), score_threshold=0.3)
    assert result.vacuous
    assert "at the score threshold" in result.summary() and "--nms score" in result.summary()
    empty = batch([([], [], [])])
    nothing = match_detections(empty, empty, score_threshold=0.25)
    assert "no detection above the score threshold 0.25" in nothing.summary()


def test_tied_boxes_on_the_cut_that_overlap_are_not_judged_as_a_pair():
    # Faster R-CNN with random weights: all 100 scores equal to 1e-8, so NMS and the top-K cut
    # keep different, overlapping boxes; they are borderline on both sides, not "moved".
    # One confident detection besides them keeps the comparison from being vacuous.
    confident = [200, 0, 240, 40]
    ref = ([confident, [0, 0, 40, 40], [100, 100, 140, 140]], [0.9, 0.2066, 0.2066], [2, 1, 1])
    act = ([confident, [0, 0, 40, 40], [110, 100, 150, 140]], [0.9, 0.2066, 0.2066], [2, 1, 1])
    result = match_detections(batch([ref], k=3), batch([act], k=3))
    assert result.passed, result.summary()
    assert (result.matched, result.swapped, result.tolerated_missing) == (2, 0, 1)
    assert result.worst_iou == 1.0
    tied_only = match_detections(batch([(ref[0][1:], ref[1][1:], ref[2][1:])], k=2),
                                 batch([(act[0][1:], act[1][1:], act[2][1:])], k=2))
    assert tied_only.vacuous and not tied_only.passed  # ties alone prove nothing


def test_to_dict_is_json_and_lists_the_offending_images():
    ref = grid_image(4)
    result = match_detections(batch([ref, ref]), batch([ref, drop(ref, 1)]))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["missing"] == 1
    assert data["offending_images"][0]["index"] == 1
    assert data["offending_images"][0]["problems"][0].startswith("lost label")
    assert data["tolerance"] == PRESETS["fp32"].to_dict()


# -- input validation -------------------------------------------------------------------------


def test_a_missing_output_is_a_usage_error_naming_what_was_found():
    ref = batch([grid_image(2)])
    act = {k: v for k, v in ref.items() if k != "labels"}
    with pytest.raises(UsageError, match=r"missing labels \(found: boxes, num_detections, "
                                         r"scores\)") as info:
        match_detections(ref, act)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


@pytest.mark.parametrize("name, shape", [
    ("boxes", (1, 8, 5)), ("boxes", (8, 4)), ("scores", (1, 7)), ("labels", (8,)),
    ("num_detections", (1, 1)),
])
def test_wrong_ranks_are_usage_errors_naming_the_shapes(name, shape):
    ref = batch([grid_image(2)])
    bad = dict(ref, **{name: np.zeros(shape)})
    with pytest.raises(UsageError, match=rf"{name} \[{', '.join(map(str, shape))}\]"):
        match_detections(ref, bad)


def test_num_detections_beyond_k_and_unequal_batches_are_usage_errors():
    ref = batch([grid_image(2)], k=4)
    with pytest.raises(UsageError, match=r"num_detections must lie in \[0, K=4\]; found 5"):
        check_outputs(dict(ref, num_detections=np.array([5])))
    with pytest.raises(UsageError, match="reference has 1 images and the actual outputs 2"):
        match_detections(ref, batch([grid_image(2), grid_image(2)], k=4))


def test_integral_float_labels_and_int32_counts_are_accepted():
    ref = batch([grid_image(3)])
    other = dict(ref, labels=ref["labels"].astype(np.float32),
                 num_detections=ref["num_detections"].astype(np.int32))
    assert match_detections(ref, other).passed
    with pytest.raises(UsageError, match="labels must hold integers"):
        match_detections(ref, dict(ref, labels=ref["labels"] + 0.5))


def test_split_outputs_strips_the_padding():
    images = split_outputs(batch([grid_image(3), ([], [], [])]))
    assert [s.size for _, s, _ in images] == [3, 0]
    boxes, scores, labels = images[0]
    assert (boxes.dtype, scores.dtype, labels.dtype) == (np.float32, np.float32, np.int64)


# -- tolerances -------------------------------------------------------------------------------


def test_presets_loosen_with_precision():
    order = [PRESETS[p] for p in ("fp32", "fp16", "bf16", "int8")]
    for strict, loose in zip(order, order[1:]):
        assert loose.min_iou <= strict.min_iou
        assert loose.max_score_diff >= strict.max_score_diff
        assert loose.min_matched_fraction <= strict.min_matched_fraction
        assert loose.box_atol >= strict.box_atol
    assert PRESETS["fp32"].min_iou >= 0.9  # the bar for fp32
    assert detection_tolerance("half") == PRESETS["fp16"]
    assert detection_tolerance("tf32") == PRESETS["fp16"]


def test_tolerance_overrides_and_bad_values():
    assert detection_tolerance("fp32", min_iou=0.5).min_iou == 0.5
    with pytest.raises(UsageError, match="unknown detection tolerance key 'iou'"):
        detection_tolerance("fp32", iou=0.5)
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        detection_tolerance("fp8")
    with pytest.raises(UsageError, match=r"min_iou=1.5 must lie in \[0, 1\]"):
        DetectionTolerance(min_iou=1.5, max_score_diff=0, score_margin=0,
                           min_matched_fraction=1)
    with pytest.raises(UsageError, match="score_margin=nan must be >= 0"):
        DetectionTolerance(min_iou=0.5, max_score_diff=0, score_margin=float("nan"),
                           min_matched_fraction=1)


def test_pairwise_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    iou = pairwise_iou(a, b)
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]])
    assert pairwise_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_the_module_needs_neither_torch_nor_a_map_library():
    code = ("import sys; import toolkit.detection.match, toolkit.detection.coco_map, "
            "toolkit.detection.eval_data; "
            "print([m for m in ('torch', 'faster_coco_eval', 'pycocotools') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# -- properties -------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def detection_batches(draw, max_images: int = 3, k: int = 6):
    """Random contract batches: any boxes (overlapping, duplicated), labels and scores."""
    images = []
    for _ in range(draw(st.integers(1, max_images))):
        n = draw(st.integers(0, k))
        xy = draw(st.lists(st.tuples(st.floats(0, 300), st.floats(0, 300)), min_size=n,
                           max_size=n))
        wh = draw(st.lists(st.tuples(st.floats(1, 80), st.floats(1, 80)), min_size=n,
                           max_size=n))
        scores = draw(st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n))
        labels = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        boxes = [[x, y, x + w, y + h] for (x, y), (w, h) in zip(xy, wh)]
        images.append((boxes, scores, labels))
    return batch(images, k=k)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(detection_batches(), st.randoms())
def test_property_a_batch_matches_any_reordering_of_itself(ref, rnd):
    act = {name: a.copy() for name, a in ref.items()}
    for i, n in enumerate(ref["num_detections"]):
        order = list(range(int(n)))
        rnd.shuffle(order)
        for name in ("boxes", "scores", "labels"):
            act[name][i, : int(n)] = ref[name][i, order]
    for tolerance in ("fp32", "int8"):
        result = match_detections(ref, act, tolerance=tolerance)
        # vacuous is the reference's own property: none of its detections clears every cut
        if ref["num_detections"].sum() == 0:
            assert result.vacuous
        if not result.vacuous:
            assert result.passed, result.summary()
            assert result.matched == result.reference and result.worst_iou == 1.0


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.integers(1, 20), st.integers(0, 10_000), st.floats(0, 0.04),
                  st.floats(0, 9e-4))
def test_property_wobble_inside_the_fp32_tolerance_passes(n, seed, shift, wobble):
    ref = grid_image(n, seed)
    rng = np.random.default_rng(seed)
    act = (list(np.asarray(ref[0]) + rng.uniform(-shift, shift, (n, 4))),
           list(np.asarray(ref[1]) + rng.uniform(-wobble, wobble, n)), ref[2])
    result = match_detections(batch([ref], k=24), batch([act], k=24))
    assert result.passed, result.summary()


def _with_neighbour(overlap_shift: float) -> tuple[Image, Image]:
    """Reference: one box kept. Actual: the same box plus a same-label neighbour shifted by
    `overlap_shift` px (IoU with the first decided by the shift), as when NMS let it through."""
    first = ([[10.0, 10.0, 50.0, 50.0]], [0.9], [1])
    neighbour = [10.0 + overlap_shift, 10.0, 50.0 + overlap_shift, 50.0]
    return first, ([first[0][0], neighbour], [0.9, 0.6], [1, 1])


def test_an_nms_decision_at_the_iou_threshold_is_borderline_not_extra():
    ref, act = _with_neighbour(13.2)  # IoU 0.51 with the kept box
    iou = pairwise_iou(np.array(ref[0]), np.array([act[0][1]]))[0, 0]
    assert abs(iou - 0.5) < 0.02
    near = match_detections(batch([ref]), batch([act]), tolerance="fp16", nms_iou=0.5)
    assert near.passed and near.tolerated_extra == 1
    unknown = match_detections(batch([ref]), batch([act]), tolerance="fp16")
    assert not unknown.passed and unknown.extra == 1  # without the NMS threshold: extra
    far_ref, far_act = _with_neighbour(25.0)  # IoU ~0.23: NMS would never have flipped
    far = match_detections(batch([far_ref]), batch([far_act]), tolerance="fp16", nms_iou=0.5)
    assert not far.passed and far.extra == 1
