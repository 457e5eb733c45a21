"""Each format of the table has its own test file here, found from its table entry."""

from __future__ import annotations

from pathlib import Path

from toolkit import formats

HERE = Path(__file__).resolve().parent


def test_every_format_in_the_table_has_tests_of_its_own():
    """tests/formats/test_<name>.py, or for a format in a backend package its folder
    tests/backends/<name>/ with a test file in it."""
    backends = HERE.parent / "backends"
    missing = [f.name for f in formats.all_formats()
               if not (HERE / f"test_{f.name}.py").is_file()
               and not any((backends / f.name).glob("test_*.py"))]
    assert not missing, ("add tests/formats/test_<name>.py or tests/backends/<name>/ for: "
                         f"{', '.join(missing)}")
