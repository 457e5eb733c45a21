"""torch.compile in-process: not saved, verified and timed in the process that compiles it."""

from __future__ import annotations

from pathlib import Path

from toolkit.export.pipeline import export


def test_compile_target_is_verified_in_process(tmp_path):
    result = export("tests.models:plain_mlp", ["compile"], tmp_path / "c", inputs=["x:2x5"])
    assert result.exit_code == 0
    assert result.steps[0].parity["passed"]
    assert not any(Path(tmp_path / "c").glob("model.*"))
    assert not (tmp_path / "c").exists()  # nothing was written: no empty bundle is left
