"""Where an export run's model and bundle come from: a checkpoint or factory (loaded, and
made a detector when asked), a model file that starts a bundle (copied in, golden outputs from
its own runner), or the bundle already at --out."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit import formats, transaction
from toolkit.bundle import Bundle, GoldenSample, atomic_path
from toolkit.errors import UsageError
from toolkit.export.golden import GOLDEN_EXTRA_BATCHES
from toolkit.export.job import ExportOptions
from toolkit.export.records import record_artifact
from toolkit.source.options import SourceOptions
from toolkit.spec import TensorSpec, batch_range


def load_source(source: str, specs: list[TensorSpec], origin: SourceOptions,
                weights: str | None, static: bool, detection: Any) -> tuple[Any, list[str]]:
    """The model a checkpoint or factory gives, wrapped as the detection options ask, and
    what the run should tell the user about it."""
    from toolkit.source.detector_contract import as_detector
    from toolkit.source.load import load_model

    loaded = load_model(source, model_ref=origin.model, weights=weights,
                        inputs=specs or None, static=static,
                        trust_checkpoint=origin.trust_checkpoint,
                        model_args=origin.factory_args())
    if origin.trust_checkpoint:
        # recorded for the reader; never honoured when the bundle is used later
        loaded.source["trusted_at_export"] = True
    loaded = as_detector(loaded, detection)
    names = {o.name.rsplit(".", 1)[-1] for o in loaded.outputs}
    notes = list(loaded.hints)
    if not loaded.detection and detection.task == "auto" and {"boxes", "scores"} <= names:
        notes.append("the model returns boxes and scores: to export it as a detector "
                     "(NMS in the graph, the detection contract, IoU-matched parity) "
                     "add --nms iou=0.45,score=0.25")
    return loaded, notes


def open_or_create(out_dir: Path, loaded: Any, force: bool) -> Bundle:
    """The bundle a model is exported into: the one at out_dir when it holds the same model
    (its inputs, outputs and source), else a new one (with --force, in place of the old)."""
    outputs = loaded.outputs
    if Bundle.is_bundle(out_dir):
        bundle = Bundle.open(out_dir)
        same_io = ([i.to_json() for i in bundle.manifest.inputs]
                   == [s.to_dict() for s in loaded.inputs]
                   and [o.name for o in bundle.outputs] == [o.name for o in outputs])
        same_source = source_identity(bundle.manifest.source.to_json()) == source_identity(
            loaded.source)
        if same_io and same_source:
            return bundle
        if not force:
            what = "inputs/outputs" if not same_io else "source"
            raise UsageError(
                f"{out_dir} holds a bundle from a different {what}; choose another --out, or "
                "pass --force to start it over"
            )
        clear_bundle(bundle)
    bundle = Bundle.create(out_dir, inputs=loaded.inputs, outputs=outputs,
                           source=loaded.source, call={"style": loaded.call_style})
    if loaded.detection:
        bundle.manifest.task = "detection"
        bundle.manifest.detection = dict(loaded.detection)
    return bundle


def source_identity(source: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two sources the same model: the file's hash, or for a factory its path,
    arguments and the hash of the weights it produced."""
    return (source.get("kind"), source.get("sha256"),
            source.get("path") if source.get("kind") == "factory" else None,
            source.get("model_args") or None, source.get("state_sha256"))


def clear_bundle(bundle: Bundle) -> None:
    for record in bundle.all_artifacts:  # the engines built on devices too
        if record.path:
            for path in bundle.files_of(record):
                transaction.remove_file(path)
    transaction.remove_file(bundle.golden_path)


def bundle_from_file(path: Path, out_dir: Path, specs: list[TensorSpec],
                      opts: ExportOptions) -> Bundle:
    """A model file (a format's `source_file`) starts a bundle: copied in as that format's
    fp32 artifact, golden outputs from its own runner."""
    from toolkit.bundle import sha256_file
    from toolkit.runtime import load_artifact
    from toolkit.spec import random_inputs

    fmt = formats.source_file_format(path.suffix)
    assert fmt is not None  # source_kind() saw a file that starts a bundle
    if not path.is_file():
        raise UsageError(f"{fmt.title} file {path} not found")
    inputs, outputs = fmt.hook("source_file")(path, specs)
    source = {"kind": fmt.name, "path": str(path.resolve()), "sha256": sha256_file(path)}
    if Bundle.is_bundle(out_dir) and not opts.force:
        bundle = Bundle.open(out_dir)
        if bundle.manifest.source.sha256 != source["sha256"]:
            raise UsageError(f"{out_dir} holds a bundle from a different source; choose "
                             "another --out, or pass --force")
        return bundle
    bundle = Bundle.create(out_dir, inputs=inputs, outputs=outputs, source=source,
                           call={"style": "positional"})
    dest = bundle.root / fmt.filename()
    bundle.root.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, suffix=dest.suffix) as tmp:
        shutil.copyfile(path, tmp)
    record = record_artifact(bundle, fmt, "fp32", dest, {"exporter": "copied from source"})
    samples = []
    with load_artifact(bundle, record) as runner:
        rng = batch_range(inputs)
        for i, batch in enumerate((None, *GOLDEN_EXTRA_BATCHES)):
            if batch is not None and (rng is None or not rng[0] <= batch <= rng[2]):
                continue
            feed = random_inputs(inputs, batch=batch, seed=i)
            samples.append(GoldenSample(feed, runner.infer(feed)))
    bundle.save_golden(samples)
    assert bundle.manifest.golden is not None
    bundle.manifest.golden.reference = f"{runner.name}, the source file run as it is"
    bundle.save()
    return bundle
