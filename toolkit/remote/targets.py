"""Which devices `--on` names: SSH destinations, as the user's own OpenSSH understands them,
optionally described in a targets file.

A target is a `Host` alias from ~/.ssh/config, `user@host`, or `ssh://user@host:port`; nothing
here resolves hosts, keys or ports: `ssh` does, with the user's configuration, agent and
known_hosts. The targets file adds what SSH doesn't know: the command that runs the toolkit
there, a working directory, environment (JetPack's library path), groups and a parallel limit:

    # ~/.config/toolkit/targets.toml (or --targets FILE, or $TOOLKIT_TARGETS)
    [ssh]
    config = "~/.ssh/config"                 # optional: ssh -F
    [fleet]
    parallel = 4                             # devices at once (default 8)
    [targets.orin-nano]
    ssh = "orin-nano"                        # the destination (default: the name)
    toolkit = ["python3", "-m", "toolkit.cli.app"]
    workdir = ".toolkit-remote"              # relative to the login directory
    env = { LD_LIBRARY_PATH = "/usr/lib/aarch64-linux-gnu" }
    [groups]
    jetsons = ["orin-nano", "orin-nx"]       # --on @jetsons
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError

ENV_FILE = "TOOLKIT_TARGETS"
DEFAULT_FILE = Path("~/.config/toolkit/targets.toml")
DEFAULT_WORKDIR = ".toolkit-remote"
DEFAULT_PARALLEL = 8
MAX_PARALLEL = 64

# A name becomes part of file names (model@NAME.plan) and manifest keys.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What ssh takes as a destination, without anything a shell or ssh's option parser would read
# another way: no leading '-', no spaces, quotes, ';', '$', '`', '|', '&', '<', '>', newlines.
_DESTINATION = re.compile(r"^(ssh://)?([A-Za-z0-9_.%+-]+@)?[A-Za-z0-9_.:\[\]-]+(:[0-9]{1,5})?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_NO_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Target:
    """One device: its name (manifest key), where ssh connects, and how the toolkit runs
    there."""

    name: str
    destination: str
    toolkit: tuple[str, ...] = ("toolkit",)
    workdir: str = DEFAULT_WORKDIR
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Fleet:
    targets: tuple[Target, ...]
    parallel: int = DEFAULT_PARALLEL
    ssh_config: str | None = None


@dataclass
class TargetsFile:
    path: Path | None
    targets: dict[str, Target] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    parallel: int = DEFAULT_PARALLEL
    ssh_config: str | None = None


def check_name(name: str, what: str = "target") -> str:
    if not _NAME.match(name):
        raise UsageError(f"{what} name {name!r}: use letters, digits, '.', '_' and '-' (at most "
                         "64, starting with a letter or digit)")
    return name


def check_destination(destination: str, name: str) -> str:
    if destination.startswith("-") or not _DESTINATION.match(destination):
        raise UsageError(f"target {name}: {destination!r} is not an SSH destination this "
                         "toolkit passes on (a Host alias, user@host or ssh://user@host:port; "
                         "no spaces, quotes or shell characters)")
    return destination


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or _NO_CONTROL.search(value):
        raise UsageError(f"{where}: give a non-empty string without control characters")
    return value


def _target(name: str, entry: Any, origin: str) -> Target:
    check_name(name)
    if not isinstance(entry, Mapping):
        raise UsageError(f"{origin}: [targets.{name}] is not a table")
    unknown = set(entry) - {"ssh", "toolkit", "workdir", "env"}
    if unknown:
        raise UsageError(f"{origin}: [targets.{name}]: unknown keys {sorted(unknown)} (known: "
                         "ssh, toolkit, workdir, env)")
    destination = check_destination(_text(entry.get("ssh", name), f"{origin}: {name}.ssh"),
                                     name)
    command = entry.get("toolkit", ["toolkit"])
    if isinstance(command, str):
        command = [command]
    if not isinstance(command, list) or not command:
        raise UsageError(f"{origin}: {name}.toolkit: a list of words, e.g. "
                         "[\"python3\", \"-m\", \"toolkit.cli.app\"]")
    words = tuple(_text(word, f"{origin}: {name}.toolkit") for word in command)
    workdir = _text(entry.get("workdir", DEFAULT_WORKDIR), f"{origin}: {name}.workdir")
    env = entry.get("env", {})
    if not isinstance(env, Mapping):
        raise UsageError(f"{origin}: {name}.env is not a table")
    pairs = []
    for key, value in env.items():
        if not _ENV_NAME.match(str(key)):
            raise UsageError(f"{origin}: {name}.env: {key!r} is not an environment name")
        pairs.append((key, _text(value, f"{origin}: {name}.env.{key}")
                      if value != "" else ""))
    return Target(name, destination, words, workdir, tuple(pairs))


def read_targets_file(path: str | os.PathLike[str] | None) -> TargetsFile:
    """The targets file named, or $TOOLKIT_TARGETS, or the default location if it exists."""
    explicit = path is not None or os.environ.get(ENV_FILE)
    chosen = Path(path or os.environ.get(ENV_FILE) or DEFAULT_FILE).expanduser()
    if not chosen.is_file():
        if explicit:
            raise UsageError(f"targets file {chosen} not found")
        return TargetsFile(None)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"targets file {chosen}: {err}") from None
    origin = str(chosen)
    unknown = set(data) - {"targets", "groups", "fleet", "ssh"}
    if unknown:
        raise UsageError(f"{origin}: unknown sections {sorted(unknown)} (known: targets, "
                         "groups, fleet, ssh)")
    parsed = TargetsFile(chosen)
    for name, entry in (data.get("targets") or {}).items():
        parsed.targets[name] = _target(name, entry, origin)
    for name, members in (data.get("groups") or {}).items():
        check_name(name, "group")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise UsageError(f"{origin}: groups.{name} is not a list of target names")
        parsed.groups[name] = tuple(members)
    parallel = (data.get("fleet") or {}).get("parallel", DEFAULT_PARALLEL)
    if not isinstance(parallel, int) or isinstance(parallel, bool) or \
            not 1 <= parallel <= MAX_PARALLEL:
        raise UsageError(f"{origin}: fleet.parallel: a whole number from 1 to {MAX_PARALLEL}")
    parsed.parallel = parallel
    config = (data.get("ssh") or {}).get("config")
    if config is not None:
        parsed.ssh_config = str(Path(_text(config, f"{origin}: ssh.config")).expanduser())
    return parsed


def resolve(on: Sequence[str], targets_file: str | os.PathLike[str] | None = None,
            parallel: int | None = None) -> Fleet:
    """`--on a,b,@group`: targets in the order given, each once. A name the file doesn't
    describe is an SSH destination with the defaults (`toolkit` on the PATH there)."""
    parsed = read_targets_file(targets_file)
    names: list[str] = []

    def expand(part: str, seen: tuple[str, ...]) -> None:
        if not part.startswith("@"):
            names.append(part)
            return
        group = part[1:]
        if group not in parsed.groups:
            known = ", ".join(f"@{g}" for g in parsed.groups) or "none"
            raise UsageError(f"--on {part}: no such group in "
                             f"{parsed.path or 'a targets file'} (groups: {known})")
        if group in seen:  # a group may name groups, never itself through them
            raise UsageError(f"group @{group} contains itself ({' -> '.join(seen)} -> "
                             f"{group})")
        for member in parsed.groups[group]:
            expand(member, (*seen, group))

    for word in on:
        for part in (p.strip() for p in word.split(",")):
            if part:
                expand(part, ())
    if not names:
        raise UsageError("--on: name at least one target")
    chosen: list[Target] = []
    for name in dict.fromkeys(names):
        if name in parsed.targets:
            chosen.append(parsed.targets[name])
            continue
        # a bare destination: its name must still make a file name and a manifest key
        check_destination(name, name)
        alias = re.sub(r"[^A-Za-z0-9_.-]", "-", name.removeprefix("ssh://"))
        chosen.append(Target(check_name(alias.strip("-.") or "target"), name))
    limit = parallel if parallel is not None else parsed.parallel
    if not 1 <= limit <= MAX_PARALLEL:
        raise UsageError(f"--parallel {limit}: give 1 to {MAX_PARALLEL}")
    return Fleet(tuple(chosen), limit, parsed.ssh_config)
