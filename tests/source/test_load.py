"""Loading sources: Lightning checkpoints of both namespaces, LightningCLI's recorded class,
state_dict weights, and the --input syntax."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import requires
from toolkit.errors import UsageError
from toolkit.source.load import load_model, source_kind
from toolkit.spec import parse_input


def test_lightningcli_class_path_needs_no_model_option(tmp_path, two_io_checkpoint):
    ckpt = torch.load(two_io_checkpoint, weights_only=True)
    # what LightningCLI writes beside the hyperparameters
    ckpt["hyper_parameters"]["_class_path"] = "tests.models.TwoInTwoOut"
    path = tmp_path / "cli.ckpt"
    torch.save(ckpt, path)
    model = load_model(str(path))
    assert type(model.module).__name__ == "TwoInTwoOut"
    assert model.module.hparams.scale == 2.5
    assert not model.module.training


@requires(module="lightning")
def test_unified_lightning_namespace(tmp_path):
    from tests.models import UnifiedNet

    path = tmp_path / "unified.ckpt"
    module = UnifiedNet(width=6)
    import lightning.pytorch as L

    trainer = L.Trainer(max_epochs=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(str(path))
    model = load_model(str(path), model_ref="tests.models:UnifiedNet")
    assert model.outputs[0].name == "output"
    assert model.run(model.example_feed(batch=None))["output"].shape == (2, 6)


def test_factory_weights_with_lightning_prefix(tmp_path):
    from tests.models import plain_mlp

    net = plain_mlp()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, path)
    model = load_model("tests.models:plain_mlp", weights=str(path), inputs=[parse_input("x:2x5")])
    loaded = dict(model.module.named_parameters())
    for name, value in net.named_parameters():
        assert torch.equal(loaded[name], value)


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"other.weight": torch.zeros(1)}, path)
    with pytest.raises(UsageError, match="doesn't fit"):
        load_model("tests.models:plain_mlp", weights=str(path), inputs=[parse_input("x:2x5")])


def test_factory_without_example_needs_input():
    with pytest.raises(UsageError, match="--input"):
        load_model("tests.models:plain_mlp")


def test_example_batch_becomes_dynamic_unless_static():
    dynamic = load_model("tests.models:small_cnn")
    static = load_model("tests.models:small_cnn", static=True)
    assert dynamic.inputs[0].min[0] == 1 and dynamic.inputs[0].max[0] == 64
    assert dynamic.inputs[0].opt[0] == 2
    assert static.inputs[0].dynamic_dims == []


def test_forward_signature_names_positional_inputs():
    model = load_model("tests.models:TwoInTwoOut")
    assert [s.name for s in model.inputs] == ["image", "meta"]


@pytest.mark.parametrize(("text", "expected"), [
    ("x:1x3x224x224", ((1, 3, 224, 224), (1, 3, 224, 224), (1, 3, 224, 224), "float32")),
    ("x:1-16x3x8x8", ((1, 3, 8, 8), (1, 3, 8, 8), (16, 3, 8, 8), "float32")),
    ("ids:1-4-16x128:int64", ((1, 128), (4, 128), (16, 128), "int64")),
    ("m:2x1-7-32:bool", ((2, 1), (2, 7), (2, 32), "bool")),
])
def test_parse_input(text, expected):
    spec = parse_input(text)
    assert (spec.min, spec.opt, spec.max, spec.dtype) == expected


@pytest.mark.parametrize("text", ["x", "x:", ":3x4", "x:3xbanana", "x:4-2x3", "x:3x4:complex",
                                  "x:0x3"])
def test_parse_input_rejects(text):
    with pytest.raises(UsageError):
        parse_input(text)


def test_source_kinds(tmp_path):
    assert source_kind("torchvision.models:resnet18") == "factory"
    assert source_kind(str(tmp_path)) == "bundle"
    assert source_kind("model.onnx") == "file"
    with pytest.raises(UsageError, match="not found"):
        source_kind(str(tmp_path / "missing.bin"))


def test_argparse_and_path_hyperparameters_load_without_trust(tmp_path, two_io_checkpoint):
    """Pickled but data-only hyperparameters (argparse.Namespace, paths) are common in real
    checkpoints; they load with the weights-only unpickler, no --trust-checkpoint needed."""
    import argparse
    from pathlib import PosixPath

    ckpt = torch.load(two_io_checkpoint, weights_only=True)
    ckpt["hyper_parameters"]["args"] = argparse.Namespace(lr=0.1, data=PosixPath("/data"))
    path = tmp_path / "namespace.ckpt"
    torch.save(ckpt, path)
    model = load_model(str(path), model_ref="tests.models:TwoInTwoOut")
    assert model.module.hparams.scale == 2.5


def test_refusal_names_the_globals_it_would_need(tmp_path, two_io_checkpoint):
    ckpt = torch.load(two_io_checkpoint, weights_only=True)
    ckpt["hyper_parameters"]["loss"] = torch.nn.MSELoss()
    path = tmp_path / "module-in-hparams.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(UsageError, match="MSELoss.*--trust-checkpoint"):
        load_model(str(path), model_ref="tests.models:TwoInTwoOut")
    model = load_model(str(path), model_ref="tests.models:TwoInTwoOut", trust_checkpoint=True)
    assert model.module.hparams.scale == 2.5


def test_the_same_factory_command_builds_the_same_model(tmp_path):
    """A factory's random weights are seeded: exporting another format into the bundle the
    same command made joins it instead of being refused as another model (issue: the models
    people deploy, smaller things a new user hit)."""
    import torch
    from typer.testing import CliRunner

    from toolkit.bundle import Bundle
    from toolkit.cli.app import app

    out = tmp_path / "b"
    base = ["export", "tests.models:unseeded_mlp", "--input", "x:1-4x5", "--out", str(out)]
    before = torch.random.get_rng_state()
    first = CliRunner().invoke(app, [*base, "--to", "onnx"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, [*base, "--to", "torchscript"])
    assert second.exit_code == 0, second.output
    bundle = Bundle.open(out)
    assert {r.format for r in bundle.artifacts} == {"onnx", "torchscript"}
    assert bundle.manifest["source"]["seed"] == 0
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG untouched
