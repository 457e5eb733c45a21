"""Masks that look like masks: an integer input declared a mask (by the name attention_mask, or
`:mask` / `:mask-left`) is drawn as padded rows, never i.i.d. 0/1."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.errors import UsageError
from toolkit.spec import TensorSpec, padded_masks, parse_input, random_inputs

cli = CliRunner()


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_masks_are_runs_of_ones_of_several_lengths(side):
    masks = padded_masks((16, 9), side, np.random.default_rng(0))
    lengths = masks.sum(axis=1)
    assert lengths.min() >= 1 and lengths[0] == 9 and len(set(lengths.tolist())) >= 3
    for row, n in zip(masks, lengths):
        want = np.r_[np.ones(n), np.zeros(9 - n)]
        assert np.array_equal(row, want if side == "right" else want[::-1])


def test_a_mask_is_declared_by_name_or_by_value_form_and_kept_in_the_manifest():
    by_name = parse_input("attention_mask:1-4xseq=4-8:int64")
    assert by_name.mask == "right"
    assert parse_input("attention_mask:2x5:int64:0-2").mask == "right"  # the old spelling
    assert parse_input("attention_mask:2x5:int64:0-5").mask is None  # values that aren't 0/1
    left = parse_input("pad:2x5:int32:mask-left")
    assert left.mask == "left" and left.describe().endswith(":int32:mask-left")
    assert TensorSpec.from_dict(left.to_dict()) == left  # bench draws from the manifest's
    drawn = random_inputs([left], seed=3)["pad"]
    assert drawn.dtype == np.int32 and (drawn[:, -1] == 1).all() and drawn.sum(1).min() >= 1
    with pytest.raises(UsageError, match="a mask is an integer or bool"):
        parse_input("m:2x5:float32:mask")


def test_a_causal_lm_with_its_inputs_swapped_and_the_readme_mask_spelling_passes(tmp_path):
    """Tiny Llama: i.i.d. 0/1 masks failed parity (max abs 0.22: rows with no valid key), and
    the inputs given mask first fed the mask into input_ids. Masks drawn as a tokenizer pads,
    inputs bound by name: parity passes, and the ONNX fed by name matches eager."""
    pytest.importorskip("transformers")
    from tests.source.hf_models import tiny_llama
    from toolkit.source.load import FACTORY_SEED

    out = tmp_path / "llama"
    result = cli.invoke(app, ["export", "tests.source.hf_models:tiny_llama", "--input",
                              "attention_mask:1-2xseq=4-8:int64:mask", "--input",
                              "input_ids:1-2xseq:int64:0-1000", "--to", "onnx", "--out",
                              str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert manifest["artifacts"][0]["parity"]["passed"]
    golden = np.load(out / "golden.npz")
    masks = [golden[k] for k in golden.files if k.endswith("attention_mask")]
    assert masks and all((m[:, 0] == 1).all() for m in masks)  # never a row with no key
    assert any((m == 0).any() for m in masks)  # padding is judged
    rng = np.random.default_rng(5)
    feed = {"input_ids": rng.integers(0, 1000, (2, 6)).astype(np.int64),
            "attention_mask": np.array([[1] * 6, [1] * 4 + [0] * 2], dtype=np.int64)}
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)[0]
    with torch.random.fork_rng():
        torch.manual_seed(FACTORY_SEED)  # the weights the toolkit's call made
        model = tiny_llama()
    with torch.inference_mode():
        want = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_clip_in_the_readme_order_with_its_mask_exports_and_passes(tmp_path):
    """CLIP's forward takes (input_ids, pixel_values, attention_mask); given ids, mask, image
    it failed ("not enough values to unpack"), and i.i.d. masks failed its parity."""
    pytest.importorskip("transformers")
    out = tmp_path / "clip"
    result = cli.invoke(app, ["export", "tests.source.hf_models:tiny_clip", "--input",
                              "input_ids:1-2xseq=4-8:int64:0-1000", "--input",
                              "attention_mask:1-2xseq:int64:mask", "--input",
                              "pixel_values:1-2x3x32x32", "--to", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "pixel_values",
                                                       "attention_mask"]
    assert manifest["artifacts"][0]["parity"]["passed"]
