"""Golden samples: the inputs every artifact is checked on, with the eager outputs for them."""

from __future__ import annotations

from typing import Any

from toolkit.bundle import GoldenSample
from toolkit.spec import batch_range, feed_bytes, random_inputs

GOLDEN_EXTRA_BATCHES = (1, 3)  # besides the example's own batch, when the batch is dynamic
#: the declared maximum batch is judged when its inputs take at most this much (a 1-64 default
#: range on 224x224 images would be 37 MiB of golden samples); else the largest batch that fits
MAX_BATCH_SAMPLE_BYTES = 16 * 2**20


def golden_samples(loaded: Any) -> list[GoldenSample]:
    """The example, then batches 1, 3 and the declared maximum when the batch is dynamic, then
    the range's min and max corners when another dimension is dynamic.

    Extra batches are cut from (or tiled out of) the module's own example when it has one,
    since reduced precisions are calibrated for real data and random noise would fail them;
    they are seeded random inputs otherwise.
    """
    first = loaded.example_feed(batch=None)
    samples = [GoldenSample(first, loaded.run(first))]
    rng = batch_range(loaded.inputs)
    if rng is not None:
        seen = {samples[0].batch}
        extra = (*GOLDEN_EXTRA_BATCHES, largest_judged_batch(loaded.inputs, rng))
        for i, batch in enumerate(extra, start=1):
            if rng[0] <= batch <= rng[2] and batch not in seen:
                seen.add(batch)
                feed = loaded.example_feed(batch=batch, seed=i)
                samples.append(GoldenSample(feed, loaded.run(feed)))
    if any(axis > 0 for s in loaded.inputs for axis in s.dynamic_dims):
        # The range's corners: every dimension (sequence length, image size, batch) at its
        # min, then every one at its max (the batch as large as MAX_BATCH_SAMPLE_BYTES lets
        # it be there): an artifact that baked the example's size in, or that overflows only
        # where the largest sizes meet, fails here, not on the device.
        for i, at in enumerate(("min", "max"), start=len(samples)):
            batch = None
            if rng:
                batch = rng[0] if at == "min" else largest_judged_batch(loaded.inputs, rng, at)
            feed = random_inputs(loaded.inputs, batch=batch, seed=i,
                                 int_high=loaded.int_high(), at=at)
            samples.append(GoldenSample(feed, loaded.run(feed)))
    return samples


def largest_judged_batch(specs: Any, rng: tuple[int, int, int], at: str = "opt") -> int:
    """The declared maximum batch, or the largest below it whose inputs fit
    MAX_BATCH_SAMPLE_BYTES (every other dimension at its `at` size: 'opt' or 'max')."""
    def one_item(spec: Any) -> tuple[int, ...]:
        shape = tuple(getattr(spec, at))
        return (1, *shape[1:]) if spec.has_dynamic_batch else shape

    per_item = sum(feed_bytes(s, one_item(s)) for s in specs)
    fits = max(rng[0], MAX_BATCH_SAMPLE_BYTES // max(per_item, 1))
    return min(rng[2], fits)


def detecting_example(loaded: Any, real: dict[str, Any] | None) -> dict[str, Any] | None:
    """The example golden samples start from, for a detector: one on which the model detects
    something, since a sample without a detection proves nothing about boxes and scores.

    Real images (--eval-data or --calib-data) when given and the detector finds something
    distinct in them: an example_input_array is often noise, on which a detector's weak,
    near-threshold scores make a healthy reduced precision look broken. Else the model's own
    example; neither: a UsageError that says what to pass.
    """
    import numpy as np

    from toolkit.detection.match import check_pixel_boxes, match_detections
    from toolkit.errors import UsageError

    candidates = []
    if real is not None:
        candidates.append(("the --eval-data / --calib-data images", dict(real)))
    candidates.append(("the model's example", loaded.example_feed(batch=None)))
    threshold = float((loaded.detection or {}).get("score_threshold") or 0.0)
    reasons = []
    for _, feed in candidates:
        outputs = loaded.run(feed)
        image = np.asarray(next(iter(feed.values())))
        if image.ndim == 4:  # boxes in [0, 1] on a large image: a convention read wrong
            check_pixel_boxes(outputs, (int(image.shape[-2]), int(image.shape[-1])),
                              "the detector's boxes")
        # the same test verify applies: some detection clear of every cut (not vacuous)
        parity = match_detections(outputs, outputs, score_threshold=threshold)
        if not parity.vacuous:
            return feed
        reasons.append(parity.vacuity_reason())
    tried = " and ".join(name for name, _ in candidates)
    raise UsageError(
        f"the detector finds nothing distinct in {tried}: on them it {reasons[-1]}; so parity "
        "could not be proven. Real images help most: --eval-data FILE.npz (x, boxes, labels) "
        "or --calib-data")
