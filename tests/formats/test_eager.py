"""eager: the PyTorch model itself, rebuilt from the manifest's source. It is the reference,
and also a target verify and bench can name."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from toolkit.cli.app import app

cli = CliRunner()


def test_eager_is_rebuilt_from_the_manifest_source_and_verified_by_name(two_io_bundle,
                                                                         tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(two_io_bundle, bundle)
    result = cli.invoke(app, ["verify", str(bundle), "--format", "eager", "--no-record"],
                        env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "rebuilding the PyTorch model from the manifest's source" in result.output
    assert "tests.models" in result.output  # what is imported is said


def test_eager_needs_its_source_on_this_machine(two_io_bundle, tmp_path):
    import json

    bundle = tmp_path / "b"
    shutil.copytree(two_io_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["source"]["path"] = str(tmp_path / "gone.ckpt")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = cli.invoke(app, ["verify", str(bundle), "--format", "eager", "--no-record"])
    assert result.exit_code in (2, 3), result.output
    assert "not on this machine" in result.output and "Traceback" not in result.output
