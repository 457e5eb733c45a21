"""Golden samples: the inputs every artifact is checked on, with the PyTorch model's outputs for
them."""

from __future__ import annotations

from typing import Any

from toolkit import tasks
from toolkit.bundle import Bundle, GoldenSample
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


#: a detector's golden images are chosen from up to this many batches of each data set given
POOL_BATCHES = 16
#: ... and from at most this many images (each is run once through the PyTorch model)
POOL_IMAGES = 128


def detecting_example(loaded: Any, real: dict[str, Any] | None,
                      data: Any = None) -> dict[str, Any] | None:
    """The example golden samples start from, for a detector: one on which the model detects
    something, since a sample without a detection proves nothing about boxes and scores.

    Real images (--eval-data and --calib-data, `data`: all of them up to POOL_IMAGES, not
    only the first batch) where the reference detects something clear of every cut, spread
    over the data, as many as the largest judged batch holds within the size budget; else
    `real` when the detector finds something in it; else the model's own example (an
    example_input_array is often noise, on which a detector's weak, near-threshold scores
    make a healthy reduced precision look broken); none: a UsageError that says what to pass.
    """
    from toolkit.detection.match import match_detections
    from toolkit.errors import UsageError

    threshold = float((loaded.detection or {}).get("score_threshold") or 0.0)
    pool = _real_pool(loaded, data) if data is not None else None
    if pool is not None:
        chosen = _detecting_images(loaded, pool, threshold)
        if chosen is not None:
            return chosen
    candidates = []
    if real is not None:
        candidates.append(("the --eval-data / --calib-data images", dict(real)))
    candidates.append(("the model's example", loaded.example_feed(batch=None)))
    reasons = []
    for _, feed in candidates:
        outputs = _checked_run(loaded, feed)
        # the same test verify applies: some detection clear of every cut (not vacuous)
        parity = match_detections(outputs, outputs, score_threshold=threshold)
        if not parity.vacuous:
            return feed
        reasons.append(parity.vacuity_reason())
    tried = " and ".join(name for name, _ in candidates)
    if pool is not None:
        tried = f"any of the {len(next(iter(pool.values())))} images given, nor {tried}"
    raise UsageError(
        f"the detector finds nothing distinct in {tried}: on them it {reasons[-1]}; so parity "
        "could not be proven. Real images help most: --eval-data FILE.npz (x, boxes, labels) "
        "or --calib-data")


def _checked_run(loaded: Any, feed: dict[str, Any]) -> dict[str, Any]:
    """The PyTorch model's detections, refused when their boxes are plainly not input pixels."""
    import numpy as np

    from toolkit.detection.match import check_pixel_boxes

    outputs = loaded.run(feed)
    image = np.asarray(next(iter(feed.values())))
    if image.ndim == 4:  # boxes in [0, 1] on a large image: a convention read wrong
        check_pixel_boxes(outputs, (int(image.shape[-2]), int(image.shape[-1])),
                          "the detector's boxes")
    return outputs


def _real_pool(loaded: Any, data: Any) -> dict[str, Any] | None:
    """The images of --eval-data and --calib-data, as one batch (those of the first one's
    shape), up to POOL_IMAGES."""
    import numpy as np

    from toolkit import tasks
    from toolkit.source.data import load_feeds, split_labels

    feeds: list[dict[str, Any]] = []
    if getattr(data, "eval_data", None):
        feeds += tasks.of(loaded.detection).hook("eval_inputs")(
            data.eval_data, loaded.inputs, max_batches=POOL_BATCHES, section=loaded.detection)
    if getattr(data, "calib_data", None):
        feeds += [split_labels(f)[0] for f in load_feeds(
            data.calib_data, loaded.inputs, max_batches=POOL_BATCHES, split="val",
            where="--calib-data")]
    if not feeds:
        return None
    names = [s.name for s in loaded.inputs]
    first = feeds[0]
    alike = [f for f in feeds if all(f[n].shape[1:] == first[n].shape[1:] for n in names)]
    return {n: np.concatenate([f[n] for f in alike])[:POOL_IMAGES] for n in names}


def _detecting_images(loaded: Any, pool: dict[str, Any], threshold: float
                      ) -> dict[str, Any] | None:
    """The pool's images with a confident detection, evenly spread over the pool, as many as
    the golden samples' largest batch holds (a static batch: exactly its size)."""
    import numpy as np

    from toolkit.detection.match import match_detections

    count = len(next(iter(pool.values())))
    chunk = 8
    rng = batch_range(loaded.inputs)
    if rng is not None:
        chunk = max(rng[0], min(chunk, rng[2]))
    static = rng is None
    if static:
        chunk = next((s.opt[0] for s in loaded.inputs if s.rank), 1)
    confident = np.zeros(count, dtype=np.int64)
    for start in range(0, count - chunk + 1 if static else count, chunk):
        feed = {k: v[start:start + chunk] for k, v in pool.items()}
        outputs = _checked_run(loaded, feed)
        parity = match_detections(outputs, outputs, score_threshold=threshold)
        confident[start:start + chunk] = [im.confident for im in parity.images]
    found = np.flatnonzero(confident > 0)
    if found.size == 0:
        return None
    want = chunk if static else min(largest_judged_batch(loaded.inputs, rng), found.size)
    picks = found[np.unique(np.linspace(0, found.size - 1, want).round().astype(int))]
    if static:  # a fixed batch: tile the detecting images out to it
        picks = np.resize(picks, want)
    return {k: v[picks] for k, v in pool.items()}


def save_golden_samples(bundle: Bundle, loaded: Any, options: Any) -> None:
    """Golden samples once per bundle; samples drawn from real data are added when a run
    brings reduced precisions and real data, and judge those precisions (`options`: the
    run's ExportOptions)."""
    golden = bundle.manifest.golden
    reduced = any(p != "fp32" for p in options.precisions)
    data = options.precision_options
    if golden is not None and (golden.real or not reduced
                               or not (data.eval_data or data.calib_data)):
        return
    from toolkit.export.precision.data import judging_feeds

    samples = bundle.golden() if golden is not None else golden_samples(loaded)
    feeds, where = judging_feeds(loaded.inputs, data, tasks.of(loaded.detection)) if reduced \
        else ([], None)
    real = [GoldenSample(feed, loaded.run(feed)) for feed in feeds]
    bundle.save_golden(samples + real, real=range(len(samples), len(samples) + len(real)),
                       real_source=where)
