"""Targets, the targets file, and the remote command line: pure logic, no SSH."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.errors import UsageError
from toolkit.remote.fleet import local_name
from toolkit.remote.ssh import Connection
from toolkit.remote.targets import Target, resolve


def write(tmp_path, text: str):
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return path


def test_a_targets_file_names_devices_groups_and_their_settings(tmp_path):
    path = write(tmp_path, """
[fleet]
parallel = 3
[targets.orin]
ssh = "nvidia@10.0.0.7"
toolkit = ["/opt/tk/bin/python", "-m", "toolkit.cli.app"]
env = { LD_LIBRARY_PATH = "/usr/lib/aarch64-linux-gnu" }
[targets.nx]
[groups]
jetsons = ["orin", "nx"]
""")
    fleet = resolve(["@jetsons,bare-host", "orin"], path)
    assert [t.name for t in fleet.targets] == ["orin", "nx", "bare-host"]  # each once
    orin = fleet.targets[0]
    assert orin.destination == "nvidia@10.0.0.7" and orin.toolkit[0] == "/opt/tk/bin/python"
    assert fleet.targets[1].destination == "nx" and fleet.targets[2].toolkit == ("toolkit",)
    assert fleet.parallel == 3 and resolve(["orin"], path, parallel=1).parallel == 1


@pytest.mark.parametrize("text, fragment", [
    ("[targets.a]\nssh = \"-oProxyCommand=sh\"\n", "not an SSH destination"),
    ("[targets.a]\nssh = \"a; reboot\"\n", "not an SSH destination"),
    ("[targets.a]\nsh = \"x\"\n", "unknown keys"),
    ("[targets.\"a b\"]\n", "target name"),
    ("[targets.a]\nenv = { \"A B\" = \"1\" }\n", "not an environment name"),
    ("[fleet]\nparallel = 0\n", "fleet.parallel"),
    ("[targets.a\n", "targets file"),
])
def test_a_bad_targets_file_is_one_line(tmp_path, text, fragment):
    with pytest.raises(UsageError, match=fragment):
        resolve(["a"], write(tmp_path, text))


def test_unknown_groups_and_bad_destinations_are_refused(tmp_path):
    path = write(tmp_path, "[groups]\njetsons = []\n")
    with pytest.raises(UsageError, match="no such group"):
        resolve(["@tx2"], path)
    for bad in ("$(reboot)", "a\nb", "-oProxyCommand=x", "a b", "`id`", "a|b"):
        with pytest.raises(UsageError):
            resolve([bad], path)


@given(st.text(min_size=1, max_size=40))
def test_the_remote_line_is_quoted_words_whatever_the_value(value):
    target = Target("dev", "dev", ("toolkit",), ".w", (("X", "1"),))
    connection = Connection(target, None, "/tmp")
    if any(c in value for c in "\x00\n\r"):
        with pytest.raises(UsageError):
            connection.remote_line(["verify", value])
        return
    line = connection.remote_line(["verify", value])
    assert shlex.split(line) == ["env", "X=1", "toolkit", "verify", value]


def test_device_files_get_the_device_name_and_never_collide():
    assert local_name("model.engine", "orin", ".engine") == "model@orin.engine"
    assert local_name("model.fp16.engine", "orin", ".engine") == "model.fp16@orin.engine"
    # a bf16 IR built on 'ovx' and an fp32 one built on 'ovx.bf16' stay apart
    assert local_name("model.bf16.xml", "ovx", ".xml") != local_name("model.xml", "ovx.bf16",
                                                                     ".xml")


def test_groups_may_name_groups_but_not_themselves(tmp_path):
    path = write(tmp_path, '[groups]\njetsons = ["orin", "nx"]\nfleet = ["@jetsons", "t4"]\n'
                 'loop = ["a", "@loop"]\n')
    assert [t.name for t in resolve(["@fleet"], path).targets] == ["orin", "nx", "t4"]
    with pytest.raises(UsageError, match="contains itself"):
        resolve(["@loop"], path)
