"""Real data for calibration and accuracy: `.npz` files, directories of them, LightningDataModules.

Every source becomes a list of feeds — `{input_name: array, ..., "labels": array}` — checked
against the model's TensorSpecs, so a wrong name, shape or dtype fails here with one line
instead of deep inside a calibrator.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import UsageError
from toolkit.spec import TensorSpec, numpy_dtype, validate_feed

LABELS = "labels"
SPLITS = ("val", "test", "train")

Feed = dict[str, np.ndarray]


def split_labels(feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(model inputs, labels or None) from a feed."""
    inputs = {k: v for k, v in feed.items() if k != LABELS}
    return inputs, feed.get(LABELS)


def load_feeds(
    source: str,
    inputs: Sequence[TensorSpec],
    *,
    max_batches: int | None = None,
    batch_size: int | None = None,
    split: str = "val",
    where: str = "--data",
) -> list[Feed]:
    """Load up to `max_batches` validated feeds from an npz, a directory of npz or a DataModule.

    Large npz arrays are cut into batches of `batch_size` (default: the first input's opt batch).
    """
    if max_batches is not None and max_batches < 1:
        raise UsageError(f"{where}: the number of batches must be >= 1, got {max_batches}")
    if split not in SPLITS:
        raise UsageError(f"{where}: split '{split}' is not one of {', '.join(SPLITS)}")
    path = Path(source)
    if path.is_dir():
        batches = _from_npz_dir(path, inputs, batch_size, where)
    elif path.suffix == ".npz":
        if not path.is_file():
            raise UsageError(f"{where} {source}: file not found")
        batches = _from_npz(path, inputs, batch_size, where)
    elif ":" in source and not path.exists():
        batches = _from_datamodule(source, inputs, split, where)
    else:
        raise UsageError(
            f"{where} {source}: expected a .npz file, a directory of .npz files or a "
            "LightningDataModule as pkg.module:Class"
        )
    feeds: list[Feed] = []
    for feed in batches:
        if max_batches is not None and len(feeds) >= max_batches:
            break
        validate_feed(inputs, feed, f"{where} {source} batch {len(feeds)}")
        _check_finite(feed, inputs, f"{where} {source} batch {len(feeds)}")
        feeds.append(_cast(feed, inputs))
    if not feeds:
        raise UsageError(f"{where} {source}: no batches found")
    return feeds


def _check_finite(feed: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec],
                  where: str) -> None:
    """NaN or infinity in an input would be compared, calibrated on and scored as if real."""
    for spec in inputs:
        array = np.asarray(feed[spec.name])
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise UsageError(f"{where}: array '{spec.name}' holds {array[index]} at index "
                             f"{list(index)}; give finite values")


def _cast(feed: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec]) -> Feed:
    """Float arrays take the spec's float dtype (fp64 data feeding an fp32 model, say)."""
    out: Feed = {}
    for spec in inputs:
        arr = np.asarray(feed[spec.name])
        out[spec.name] = np.ascontiguousarray(arr.astype(numpy_dtype(spec.dtype), copy=False))
    if LABELS in feed:
        out[LABELS] = np.asarray(feed[LABELS])
    return out


def _default_batch(inputs: Sequence[TensorSpec]) -> int:
    return inputs[0].opt[0] if inputs and inputs[0].rank else 1


def _from_npz(
    path: Path, inputs: Sequence[TensorSpec], batch_size: int | None, where: str
) -> Iterator[Feed]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"{where} {path}: not a readable .npz ({err})") from None
    names = [s.name for s in inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise UsageError(
            f"{where} {path}: no array named {', '.join(repr(m) for m in missing)} "
            f"(found {found}); name arrays after the model inputs"
        )
    yield from _split(arrays, inputs, batch_size or _default_batch(inputs), where, path)


def _split(
    arrays: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec], batch: int, where: str,
    path: Path,
) -> Iterator[Feed]:
    """Cut arrays along dimension 0 into batches the model accepts; with a static batch the
    tail that doesn't fill one is dropped."""
    keys = [s.name for s in inputs] + ([LABELS] if LABELS in arrays else [])
    first = inputs[0] if inputs else None
    if first is None or first.rank == 0:
        yield {k: arrays[k] for k in keys}
        return
    lengths = {k: int(np.shape(arrays[k])[0]) if np.ndim(arrays[k]) else 1 for k in keys}
    if len(set(lengths.values())) > 1:
        raise UsageError(f"{where} {path}: arrays differ in length along dimension 0: {lengths}")
    if first.has_dynamic_batch:
        if not first.min[0] <= batch <= first.max[0]:
            raise UsageError(
                f"{where}: batch size {batch} is outside input '{first.name}' range "
                f"{first.min[0]}-{first.max[0]}"
            )
        step, static = batch, False
    else:
        step, static = first.opt[0], True
    total = lengths[first.name]
    for start in range(0, total, step):
        stop = start + step
        if static and stop > total:
            if start == 0:  # too few samples for one batch: let validation name the shape
                yield {k: arrays[k] for k in keys}
            break
        yield {k: arrays[k][start:stop] for k in keys}


def _from_npz_dir(
    path: Path, inputs: Sequence[TensorSpec], batch_size: int | None, where: str
) -> Iterator[Feed]:
    files = sorted(path.glob("*.npz"))
    if not files:
        raise UsageError(f"{where} {path}: directory holds no .npz files")
    for file in files:
        yield from _from_npz(file, inputs, batch_size, where)


def _from_datamodule(
    target: str, inputs: Sequence[TensorSpec], split: str, where: str
) -> Iterator[Feed]:
    from toolkit.source.imports import import_object

    factory = import_object(target, where)
    try:
        dm = factory()
    except TypeError as err:
        raise UsageError(
            f"{where} {target}: could not build the DataModule without arguments ({err})"
        ) from None
    stage = {"val": "validate", "test": "test", "train": "fit"}[split]
    if hasattr(dm, "prepare_data"):
        dm.prepare_data()
    if hasattr(dm, "setup"):
        dm.setup(stage)
    method = f"{'val' if split == 'val' else split}_dataloader"
    if not callable(getattr(dm, method, None)):
        raise UsageError(f"{where} {target}: the DataModule has no {method}()")
    loader = getattr(dm, method)()
    if isinstance(loader, (list, tuple)) and loader and hasattr(loader[0], "dataset"):
        loader = loader[0]  # several DataLoaders: take the first
    for batch in loader:
        yield _batch_to_feed(batch, inputs, where, target)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; avoid importing torch here
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _batch_to_feed(batch: Any, inputs: Sequence[TensorSpec], where: str, target: str) -> Feed:
    """Tensor -> the single input; tuple/list -> inputs in order, then a label; dict -> by name
    (a 'label'/'labels'/'target'/'y' key becomes labels)."""
    names = [s.name for s in inputs]
    if isinstance(batch, Mapping):
        feed = {k: _to_numpy(v) for k, v in batch.items() if k in names}
        for key in ("labels", "label", "target", "targets", "y"):
            if key in batch and key not in names:
                feed[LABELS] = _to_numpy(batch[key])
                break
        return feed
    items: Iterable[Any] = batch if isinstance(batch, (list, tuple)) else [batch]
    arrays = [_to_numpy(v) for v in items]
    if len(arrays) < len(names):
        raise UsageError(
            f"{where} {target}: a batch holds {len(arrays)} tensors, the model takes "
            f"{len(names)} inputs ({', '.join(names)})"
        )
    feed = dict(zip(names, arrays))
    if len(arrays) > len(names):
        feed[LABELS] = arrays[len(names)]
    return feed


def load_detection_data(ref: str, inputs: Sequence[TensorSpec], where: str = "--eval-data"
                        ) -> Any:
    """Detection evaluation data: an .npz (x, boxes [n,M,4], labels [n,M] padded with -1), or
    a LightningDataModule whose test (else val) batches are (images, boxes, labels) or dicts
    with those keys, boxes and labels padded with -1 to one M per batch."""
    from toolkit.detection.eval_data import (
        DetectionEvalData,
        ground_truth_from_arrays,
        load_detection_eval_data,
    )

    if Path(ref).suffix == ".npz" or Path(ref).exists() or ":" not in ref:
        return load_detection_eval_data(ref, [s.name for s in inputs])
    images, boxes, labels = [], [], []
    for batch in _detection_batches(ref, where):
        x, b, lab = batch
        images.append(_to_numpy(x))
        boxes.append(_to_numpy(b))
        labels.append(_to_numpy(lab))
    if not images:
        raise UsageError(f"{where} {ref}: the DataModule yielded no batches")
    width = max(b.shape[1] for b in boxes)
    pad = [(np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0))),
            np.pad(lab, ((0, 0), (0, width - lab.shape[1])), constant_values=-1))
           for b, lab in zip(boxes, labels)]
    ground_truth = ground_truth_from_arrays(np.concatenate([b for b, _ in pad]),
                                            np.concatenate([lab for _, lab in pad]),
                                            where=f"{where} {ref}")
    return DetectionEvalData(path=ref, inputs={inputs[0].name: np.concatenate(images)},
                             ground_truth=ground_truth)


def _detection_batches(ref: str, where: str) -> Iterator[tuple[Any, Any, Any]]:
    from toolkit.source.imports import import_object

    dm = import_object(ref, where)()
    if hasattr(dm, "setup"):
        dm.setup("test")
    method = next((m for m in ("test_dataloader", "val_dataloader")
                   if callable(getattr(dm, m, None))), None)
    if method is None:
        raise UsageError(f"{where} {ref}: the DataModule has no test_dataloader or "
                         "val_dataloader")
    for batch in getattr(dm, method)():
        if isinstance(batch, dict) and {"boxes", "labels"} <= set(batch):
            image_key = next(k for k in batch if k not in ("boxes", "labels"))
            yield batch[image_key], batch["boxes"], batch["labels"]
        elif isinstance(batch, (list, tuple)) and len(batch) == 3:
            yield batch[0], batch[1], batch[2]
        else:
            raise UsageError(f"{where} {ref}: detection batches must be (images, boxes, "
                             "labels) or a dict with 'boxes' and 'labels' (boxes [B,M,4] "
                             "xyxy, labels [B,M] padded with -1)")
