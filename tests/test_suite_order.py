"""The suite's scheduling table names files that exist (a renamed file would silently lose its
place at the front)."""

from __future__ import annotations

from tests.conftest import LONGEST_FIRST, ROOT


def test_the_longest_files_listed_first_exist():
    missing = [name for name in LONGEST_FIRST if not (ROOT / "tests" / name).is_file()]
    assert not missing, missing
