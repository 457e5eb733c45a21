"""Each format of the table has its own test file here, found from its table entry."""

from __future__ import annotations

from pathlib import Path

from toolkit import formats

HERE = Path(__file__).resolve().parent


def test_every_format_in_the_table_has_a_test_file_of_its_own():
    missing = [f.name for f in formats.all_formats() if not (HERE / f"test_{f.name}.py").is_file()]
    assert not missing, f"add tests/formats/test_<name>.py for: {', '.join(missing)}"
