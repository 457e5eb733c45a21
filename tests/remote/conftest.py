"""The SSH lab (tests/remote/lab.py) once per session."""

from __future__ import annotations

import pytest

from tests.remote.lab import Lab, Missing, ssh_lab

__all__ = ["Lab"]


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory):
    try:
        with ssh_lab(tmp_path_factory.mktemp("ssh-lab")) as started:
            yield started
    except Missing as missing:
        pytest.skip(str(missing))
