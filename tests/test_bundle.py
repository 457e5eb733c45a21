"""toolkit/bundle.py on its own: records, files, hashes and golden samples of a bundle."""

from __future__ import annotations

import os

import numpy as np
import pytest

from toolkit.bundle import ArtifactModified, Bundle, GoldenSample, atomic_path, sha256_file
from toolkit.errors import UsageError
from toolkit.spec import OutputSpec, TensorSpec


def _bundle(root) -> Bundle:
    bundle = Bundle.create(root, inputs=[TensorSpec("x", "float32", (1, 2), (1, 2), (4, 2))],
                           outputs=[OutputSpec("y", "float32")],
                           source={"kind": "factory", "path": "pkg:make"})
    bundle.save()
    return bundle


def _add(bundle: Bundle, name: str = "model.onnx", data: bytes = b"onnx") -> None:
    (bundle.root / name).write_bytes(data)
    bundle.record_artifact({"format": "onnx", "path": name,
                            "sha256": sha256_file(bundle.root / name)})
    bundle.save()


def test_a_saved_bundle_opens_with_the_same_records(tmp_path):
    bundle = _bundle(tmp_path / "b")
    _add(bundle)
    opened = Bundle.open(tmp_path / "b")
    assert [a.path for a in opened.artifacts] == ["model.onnx"]
    assert opened.inputs[0].max == (4, 2) and opened.outputs[0].name == "y"
    assert opened.artifact("onnx").format == "onnx" and opened.artifact("onnx", "fp16") is None


def test_recording_the_same_artifact_again_replaces_it(tmp_path):
    bundle = _bundle(tmp_path / "b")
    _add(bundle, data=b"one")
    _add(bundle, data=b"two")
    assert len(bundle.artifacts) == 1
    assert bundle.artifacts[0].sha256 == sha256_file(tmp_path / "b" / "model.onnx")


def test_a_changed_or_missing_file_is_refused_unless_allowed(tmp_path):
    bundle = _bundle(tmp_path / "b")
    _add(bundle)
    record = bundle.artifact("onnx")
    (tmp_path / "b" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ArtifactModified, match="changed since it was exported"):
        bundle.checked_path(record)
    bundle.allow_modified = True
    assert bundle.checked_path(record).name == "model.onnx"
    (tmp_path / "b" / "model.onnx").unlink()
    with pytest.raises(ArtifactModified, match="missing"):
        bundle.checked_path(record)


def test_a_link_out_of_the_bundle_is_refused(tmp_path):
    bundle = _bundle(tmp_path / "b")
    _add(bundle)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"onnx")
    os.unlink(tmp_path / "b" / "model.onnx")
    os.symlink(outside, tmp_path / "b" / "model.onnx")
    with pytest.raises(UsageError, match="symbolic link out of the bundle"):
        bundle.path_of(bundle.artifact("onnx"))


def test_golden_samples_round_trip_and_are_hash_checked(tmp_path):
    bundle = _bundle(tmp_path / "b")
    samples = [GoldenSample({"x": np.ones((b, 2), np.float32)},
                            {"y": np.full((b, 1), b, np.float32)}) for b in (1, 3)]
    bundle.save_golden(samples, real=[1], real_source="--calib-data c.npz")
    bundle.save()
    opened = Bundle.open(tmp_path / "b")
    got = opened.golden()
    assert [s.batch for s in got] == [1, 3] and (got[1].outputs["y"] == 3).all()
    assert opened.manifest["golden"]["real"] == [1]
    with open(opened.golden_path, "ab") as golden:
        golden.write(b"x")
    with pytest.raises(ArtifactModified):
        Bundle.open(tmp_path / "b").golden()


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    dest = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), atomic_path(dest, suffix=".onnx") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(dest, suffix=".onnx") as tmp:
        tmp.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole"


def test_a_directory_without_a_manifest_or_with_junk_is_not_a_bundle(tmp_path):
    with pytest.raises(UsageError, match="not a bundle"):
        Bundle.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        Bundle.open(tmp_path)
