"""Geometry of instance outputs: masks, keypoints, oriented boxes (numpy only; device side).

Conventions (issue #30's output contract):

- Masks are per-detection probabilities in [0, 1]; a pixel belongs to the instance when its
  probability is > MASK_THRESHOLD (0.5). Boolean masks are taken as they are.
- Keypoints are [P, 3] rows (x, y, visibility) in input pixels. Object keypoint similarity
  (OKS) is COCO's: exp(-d^2 / (2 * area * (2 * sigma)^2)) averaged over the reference's
  visible keypoints, where `area` is the object's area in pixels (COCO uses the segment's
  area; callers without one pass the box area). Sigmas are COCO's 17 person sigmas when
  P == 17, else 1/P each (Ultralytics' choice for other skeletons).
- Oriented boxes are (cx, cy, w, h, theta) in input pixels and radians. The w side runs along
  (cos theta, sin theta) in image coordinates (x right, y down), so a positive theta turns
  clockwise on screen; the corners are centre +- (w/2)(cos, sin) +- (h/2)(-sin, cos).
  `rotated_iou` is the exact IoU of the two rectangles (convex polygon clipping); `probiou`
  is the probabilistic IoU of Llerena et al. 2021 that Ultralytics' rotated NMS uses.
"""

from __future__ import annotations

import numpy as np

from toolkit.errors import UsageError

#: a mask pixel belongs to the instance when its probability is above this
MASK_THRESHOLD = 0.5

#: COCO's per-keypoint sigmas for its 17-point person skeleton (nose, eyes, ears, shoulders,
#: elbows, wrists, hips, knees, ankles), as in COCOeval's Params
COCO_KEYPOINT_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                                 1.07, 1.07, .87, .87, .89, .89]) / 10.0


# -- masks ------------------------------------------------------------------------------------


def binarise(masks: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Boolean masks: probability > threshold (boolean input is returned as it is)."""
    masks = np.asarray(masks)
    return masks if masks.dtype == np.bool_ else masks > threshold


def _mask_stack(masks: np.ndarray, name: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise UsageError(f"{name} masks have shape {list(masks.shape)}; expected [n, h, w]")
    return masks


def mask_iou(a: np.ndarray, b: np.ndarray, threshold: float = MASK_THRESHOLD,
             margin: float = 0.0) -> np.ndarray:
    """IoU of every binarised mask in `a` [n, h, w] with every one in `b` [m, h, w] -> [n, m].

    `a` is the reference. With margin > 0, the pixels whose probability in a[i] lies within
    `margin` of the threshold are borderline (a tiny numeric change flips them) and are left
    out of both sets for the pairs of a[i], as borderline detections are left out of matching.
    A pair with an empty union (both masks empty on the judged pixels) agrees: IoU 1.0.
    """
    a, b = _mask_stack(a, "reference"), _mask_stack(b, "actual")
    if a.shape[1:] != b.shape[1:]:
        raise UsageError(f"mask IoU: masks of {list(a.shape[1:])} and {list(b.shape[1:])} "
                         "pixels; both sets need the same resolution")
    n, m = a.shape[0], b.shape[0]
    a, b = a.reshape(n, -1), b.reshape(m, -1)
    inter, union = np.zeros((n, m)), np.zeros((n, m))
    # pixel slices keep the temporaries near 16 MB; float32 counts are exact below 2^24
    step = max(1, min(2 ** 22 // max(n + m, 1), 2 ** 24))
    for start in range(0, a.shape[1], step):
        a_part, b_part = a[:, start:start + step], b[:, start:start + step]
        a_bin = binarise(a_part, threshold)
        judged = (np.abs(a_part.astype(np.float64) - threshold) > margin if margin > 0
                  else np.ones_like(a_bin))
        a_judged = (a_bin & judged).astype(np.float32)
        b_bin = binarise(b_part, threshold).astype(np.float32)
        part = a_judged @ b_bin.T
        inter += part
        # |A_i or B_j| on i's judged pixels = |A_i| + |B_j on i's judged pixels| - |A_i and B_j|
        union += a_judged.sum(1, dtype=np.float64)[:, None] + \
            judged.astype(np.float32) @ b_bin.T - part
    out = np.ones((n, m), dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def max_prob_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between two mask (probability) arrays of one shape."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise UsageError(f"mask difference: shapes {list(a.shape)} and {list(b.shape)} differ")
    return float(np.abs(a - b).max()) if a.size else 0.0


# -- keypoints --------------------------------------------------------------------------------


def keypoint_sigmas(num_keypoints: int) -> tuple[np.ndarray, str]:
    """(the OKS sigmas for P keypoints, a sentence saying which were chosen and why)."""
    if num_keypoints < 1:
        raise UsageError(f"keypoints: {num_keypoints} keypoints per object; need at least 1")
    if num_keypoints == len(COCO_KEYPOINT_SIGMAS):
        return COCO_KEYPOINT_SIGMAS.copy(), "COCO's 17 person-keypoint sigmas"
    return (np.full(num_keypoints, 1.0 / num_keypoints),
            f"uniform sigmas 1/{num_keypoints} (not COCO's 17-point person skeleton; "
            "Ultralytics' choice for other skeletons)")


def _keypoint_stack(k: np.ndarray, name: str) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 3 or k.shape[2] != 3:
        raise UsageError(f"{name} keypoints have shape {list(k.shape)}; expected [n, P, 3] "
                         "(x, y, visibility)")
    return k


def oks(reference: np.ndarray, actual: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
        visible_threshold: float = 0.0) -> np.ndarray:
    """COCO's object keypoint similarity of every reference object [n, P, 3] with every actual
    one [m, P, 3] -> [n, m], averaged over the reference's visible keypoints.

    A reference keypoint is visible when its third column is > visible_threshold: 0 suits
    ground truth (COCO's v > 0); for model outputs pass the score threshold (e.g. 0.5).
    `areas` [n] is each reference object's area in pixels. A reference with no visible
    keypoint has nothing to judge: its row is NaN.
    """
    ref, act = _keypoint_stack(reference, "reference"), _keypoint_stack(actual, "actual")
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    if act.shape[1] != ref.shape[1] or sigmas.size != ref.shape[1]:
        raise UsageError(f"OKS: {ref.shape[1]} reference keypoints, {act.shape[1]} actual and "
                         f"{sigmas.size} sigmas; they must agree")
    if areas.size != ref.shape[0]:
        raise UsageError(f"OKS: {areas.size} areas for {ref.shape[0]} reference objects")
    d2 = ((ref[:, None, :, :2] - act[None, :, :, :2]) ** 2).sum(-1)  # [n, m, P]
    # as COCOeval: spacing(1) keeps a zero-area object from dividing by zero
    e = d2 / ((2 * sigmas) ** 2 * 2 * (areas[:, None, None] + np.spacing(1)))
    visible = (ref[:, :, 2] > visible_threshold)[:, None, :]
    count = visible.sum(-1)
    total = np.where(visible, np.exp(-e), 0.0).sum(-1)
    out = np.full(total.shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


# -- oriented boxes ---------------------------------------------------------------------------


def _obb_stack(obb: np.ndarray, name: str = "oriented") -> np.ndarray:
    obb = np.asarray(obb, dtype=np.float64)
    if obb.ndim != 2 or obb.shape[1] != 5:
        if obb.size == 0:
            return obb.reshape(0, 5)
        raise UsageError(f"{name} boxes have shape {list(obb.shape)}; expected [n, 5] "
                         "(cx, cy, w, h, theta)")
    return obb


def obb_corners(obb: np.ndarray) -> np.ndarray:
    """Corners [n, 4, 2] of oriented boxes [n, 5]: c+u+v, c-u+v, c-u-v, c+u-v with
    u = (w/2)(cos, sin), v = (h/2)(-sin, cos); counter-clockwise in x-right/y-up terms (a
    positive shoelace area) whenever w, h > 0."""
    obb = _obb_stack(obb)
    c, s = np.cos(obb[:, 4]), np.sin(obb[:, 4])
    u = np.stack([c, s], -1) * (obb[:, 2:3] / 2)
    v = np.stack([-s, c], -1) * (obb[:, 3:4] / 2)
    centre = obb[:, :2]
    return np.stack([centre + u + v, centre - u + v, centre - u - v, centre + u - v], 1)


def obb_to_xyxy(obb: np.ndarray) -> np.ndarray:
    """The axis-aligned xyxy box [n, 4] enclosing each oriented box [n, 5]."""
    corners = obb_corners(obb)
    return np.concatenate([corners.min(1), corners.max(1)], -1)


def _cross(o: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """z of (a - o) x (p - o): > 0 when p lies left of the directed line o -> a."""
    return (a[..., 0] - o[..., 0]) * (p[..., 1] - o[..., 1]) - \
           (a[..., 1] - o[..., 1]) * (p[..., 0] - o[..., 0])


def _clip(poly: np.ndarray, count: np.ndarray, a: np.ndarray, b: np.ndarray):
    """One Sutherland-Hodgman step for N polygons at once: keep the part of each polygon
    (poly [N, V, 2], its first count[N] vertices) left of its line a[N] -> b[N].
    Returns (poly [N, V + 1, 2], count); slots past count repeat vertex 0."""
    n, slots = poly.shape[:2]
    i = np.arange(slots)[None, :]
    prev_i = np.where(i == 0, count[:, None] - 1, i - 1).clip(0)
    cur = poly
    prev = np.take_along_axis(poly, prev_i[..., None], 1)
    s_cur = _cross(a[:, None], b[:, None], cur)
    s_prev = _cross(a[:, None], b[:, None], prev)
    cur_in, prev_in = s_cur >= 0, s_prev >= 0
    live = i < count[:, None]
    crossing = live & (cur_in != prev_in)
    denom = np.where(crossing, s_prev - s_cur, 1.0)
    t = (s_prev / denom)[..., None]
    hit = prev + t * (cur - prev)
    # per input vertex: [the crossing into/out of the half-plane, the vertex if inside]
    candidates = np.stack([hit, cur], 2).reshape(n, 2 * slots, 2)
    keep = np.stack([crossing, live & cur_in], 2).reshape(n, 2 * slots)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :slots + 1]
    out = np.take_along_axis(candidates, order[..., None], 1)
    new_count = keep.sum(1)
    filler = np.arange(slots + 1)[None, :] >= new_count[:, None]
    out = np.where(filler[..., None], out[:, :1], out)
    return out, new_count


def _shoelace(poly: np.ndarray) -> np.ndarray:
    """Signed area of polygons [N, V, 2] (repeated trailing vertices add nothing)."""
    nxt = np.roll(poly, -1, axis=1)
    return 0.5 * (poly[..., 0] * nxt[..., 1] - nxt[..., 0] * poly[..., 1]).sum(1)


def _intersection_areas(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """Areas of the intersections of convex quadrilaterals pa[N] and pb[N] ([N, 4, 2] each,
    counter-clockwise)."""
    poly, count = pa, np.full(len(pa), 4)
    for k in range(4):
        poly, count = _clip(poly, count, pb[:, k], pb[:, (k + 1) % 4])
    return np.where(count >= 3, np.abs(_shoelace(poly)), 0.0)


def rotated_iou(a: np.ndarray, b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Exact IoU of every oriented box in `a` [n, 5] with every one in `b` [m, 5] -> [n, m].

    The intersection polygon comes from clipping one rectangle by the other's four edges
    (Sutherland-Hodgman); areas by the shoelace formula. A box with w <= 0 or h <= 0 is
    degenerate: IoU 0 with everything, itself included.
    """
    a, b = _obb_stack(a), _obb_stack(b)
    out = np.zeros((len(a), len(b)))
    ok_a, ok_b = (a[:, 2] > 0) & (a[:, 3] > 0), (b[:, 2] > 0) & (b[:, 3] > 0)
    ca, cb = obb_corners(a), obb_corners(b)
    ea, eb = obb_to_xyxy(a), obb_to_xyxy(b)
    # only pairs whose enclosing boxes overlap can intersect
    touch = ((ea[:, None, 0] < eb[None, :, 2]) & (eb[None, :, 0] < ea[:, None, 2])
             & (ea[:, None, 1] < eb[None, :, 3]) & (eb[None, :, 1] < ea[:, None, 3])
             & ok_a[:, None] & ok_b[None, :])
    ii, jj = np.nonzero(touch)
    area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    for start in range(0, len(ii), chunk):
        i, j = ii[start:start + chunk], jj[start:start + chunk]
        inter = _intersection_areas(ca[i], cb[j])
        union = area_a[i] + area_b[j] - inter
        out[i, j] = np.clip(inter / union, 0.0, 1.0)
    return out


def _covariance(obb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(var x, var y, cov xy) of the uniform distribution over each box: diag(w^2, h^2) / 12
    turned by theta."""
    vw, vh = obb[:, 2] ** 2 / 12, obb[:, 3] ** 2 / 12
    c, s = np.cos(obb[:, 4]), np.sin(obb[:, 4])
    return vw * c * c + vh * s * s, vw * s * s + vh * c * c, (vw - vh) * c * s


def probiou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Probabilistic IoU (Llerena et al. 2021, "Gaussian Bounding Boxes and Probabilistic
    Intersection-over-Union") of every box in `a` [n, 5] with every one in `b` [m, 5] -> [n, m].

    Each box is a Gaussian with its centre as the mean and covariance R diag(w^2, h^2)/12 R^T.
    B is the Bhattacharyya distance of two such Gaussians, 1/8 dmu^T S^-1 dmu + 1/2 ln(det S /
    sqrt(det S1 det S2)) with S = (S1 + S2) / 2, and the result is 1 - the Hellinger distance
    sqrt(1 - exp(-B)). As in Ultralytics' rotated NMS, `eps` keeps the divisions finite, B is
    clamped to [eps, 100] and eps is added under the square root, so identical boxes score
    1 - sqrt(2 eps) (about 0.99955), not 1, and boxes far apart about -5e-8, not 0; eps=0
    gives the formula itself. (Checked here against Ultralytics' batch_probiou: equal to 1e-15
    in float64.)
    """
    a, b = _obb_stack(a), _obb_stack(b)
    ax, ay, axy = (v[:, None] for v in _covariance(a))
    bx, by, bxy = (v[None, :] for v in _covariance(b))
    dx = a[:, None, 0] - b[None, :, 0]
    dy = a[:, None, 1] - b[None, :, 1]
    sx, sy, sxy = ax + bx, ay + by, axy + bxy  # S1 + S2 = 2 S
    det_sum = sx * sy - sxy ** 2
    det_a = np.clip(ax * ay - axy ** 2, 0, None)
    det_b = np.clip(bx * by - bxy ** 2, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        # dmu^T S^-1 dmu / 8 with S = (S1 + S2) / 2 is dmu^T (S1 + S2)^-1 dmu / 4
        mahalanobis = (sy * dx ** 2 + sx * dy ** 2 - 2 * sxy * dx * dy) / (4 * (det_sum + eps))
        # det S = det(S1 + S2) / 4
        log_term = 0.5 * np.log(det_sum / (4 * np.sqrt(det_a * det_b) + eps) + eps)
        distance = mahalanobis + log_term
    distance = np.nan_to_num(distance, nan=100.0, posinf=100.0)
    distance = np.clip(distance, eps, 100.0) if eps > 0 else np.clip(distance, 0.0, None)
    return 1.0 - np.sqrt(np.clip(1.0 - np.exp(-distance) + eps, 0.0, None))
