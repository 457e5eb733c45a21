"""A BERT built from a config (random weights, nothing downloaded) with a named sequence
dimension shared by its two inputs and token ids over the whole vocabulary: ONNX, TorchScript
and pt2 (where torch.export needs the two lengths declared equal) all match eager."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers", reason="transformers (a test dependency, in the dev "
                    "extra) is not installed")

from tests.source.hf_models import VOCAB
from toolkit.bundle import Bundle
from toolkit.export.pipeline import export


def test_a_bert_with_a_shared_sequence_and_its_vocabulary_passes_every_format(tmp_path):
    out = tmp_path / "bert"
    result = export("tests.source.hf_models:tiny_bert", ["onnx", "torchscript", "pt2"], out,
                    inputs=[f"input_ids:1-4xseq=8-32:int64:0-{VOCAB}",
                            "attention_mask:1-4xseq:int64:0-2"])
    assert result.exit_code == 0, result.to_dict()
    assert [s.status.value for s in result.steps] == ["ok", "ok", "ok"]
    bundle = Bundle.open(out)
    ids = bundle.inputs[0]
    assert ids.dims == (None, "seq") and ids.values == (0, VOCAB)
    assert max(int(s.inputs["input_ids"].max()) for s in bundle.golden()) > VOCAB // 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][1]["dims"] == [None, "seq"]
    # the range's corners were judged: everything at its min, everything at its max
    shapes = [s["input_ids"] for s in manifest["golden"]["shapes"]]
    assert [1, 8] in shapes and [4, 32] in shapes, shapes
    for record in manifest["artifacts"]:  # each artifact's parity record says so too
        judged = [s["input_ids"] for s in record["parity"]["shapes"]]
        assert [1, 8] in judged and [4, 32] in judged, (record["format"], judged)
    assert not any("no value range" in note for note in result.notes)


def test_an_embedding_without_a_value_range_is_named_with_the_fix():
    """Ids drawn from {0, 1} would read 2 rows of a 1000-row table: the note says so, names
    the table, the inputs without a range and the spelling that gives one."""
    from toolkit.source.load import load_model
    from toolkit.spec import parse_inputs

    unranged = load_model("tests.source.hf_models:tiny_bert", inputs=parse_inputs(
        ["input_ids:1-4xseq=8-32:int64", "attention_mask:1-4xseq:int64"]), static=False)
    [note] = [h for h in unranged.hints if "no value range" in h]
    assert f"embedding of {VOCAB} rows (embeddings.word_embeddings)" in note, note
    # attention_mask is a mask by its name: drawn padded, it needs no range
    assert "input input_ids has no value range" in note, note
    assert f"--input input_ids:SHAPE:int64:0-{VOCAB}" in note, note
    ranged = load_model("tests.source.hf_models:tiny_bert", inputs=parse_inputs(
        [f"input_ids:1-4xseq=8-32:int64:0-{VOCAB}", "attention_mask:1-4xseq:int64:0-2"]),
        static=False)
    assert not any("no value range" in h for h in ranged.hints), ranged.hints
