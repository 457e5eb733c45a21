"""`--on TARGET,...` for export, verify, bench, select and inspect; `toolkit targets probe`;
and the device side's hidden `toolkit _device ...` (what the workstation runs over SSH).

The command run there is the one given here: the options given on the command line (as
parsed), the bundle's place taken by the device's copy, minus what names this machine
(`--on`, `--targets`, `--json`), and refused where an option names a local file the device
can't see.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from toolkit.cli.console import console, err_console, json_to_stdout, table_console, write_json

# options whose value is a path on this machine: meaningless on a device
LOCAL_PATHS = ("--markdown", "--plot", "--baseline", "--data", "--against", "--calib-data",
               "--eval-data", "--timing-cache", "--out")
DROPPED = ("--on", "--targets", "--parallel", "--json")



def forwarded_args(ctx: typer.Context) -> list[str]:
    """This command's options as given on the command line, for the device: '{bundle}' for
    the bundle, local-only options dropped, options naming local files refused (exit 2)."""
    from toolkit.errors import UsageError

    out: list[str] = []
    for param in ctx.command.params:
        if param.param_type_name == "argument":
            out.append("{bundle}")
            continue
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name != "COMMANDLINE":
            continue
        flag = param.opts[0]
        if flag in LOCAL_PATHS:
            raise UsageError(f"{flag} names a file on this machine; with --on it can't be used "
                             "yet (run the command on the device, or without --on)")
        if flag in DROPPED:
            continue
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            if param.secondary_opts:
                out.append(flag if value else param.secondary_opts[0])
            elif value:
                out.append(flag)
        elif getattr(param, "multiple", False):
            for item in value or ():
                out += [flag, str(item)]
        elif value is not None:
            out += [flag, str(value)]
    return out


def on_devices(ctx: typer.Context, bundle: Path, on: list[str], targets_file: str | None,
               parallel: int | None, json_path: Path | None, builds: tuple[str, ...] = ()
               ) -> int:
    """Run `command` on every device and bring the results home; the exit code is the worst
    device's."""
    from toolkit.bundle import Bundle, writable
    from toolkit.cli.console import check_writable_file
    from toolkit.errors import UsageError
    from toolkit.remote.session import Job
    from toolkit.remote.targets import resolve

    command = ctx.command.name or ""
    check_writable_file(json_path, "--json", [bundle])
    fleet = resolve(on, targets_file, parallel)
    args = forwarded_args(ctx)
    if "--allow-modified" in args:
        raise UsageError("--allow-modified can't travel with --on: files go to devices by the "
                         "sha256 the manifest records; re-export the changed artifact instead")
    Bundle.open(bundle)  # a bad bundle is one line here, before any connection
    _check_names(args)
    if command == "export" and not writable(bundle):
        raise UsageError(f"{bundle} is read-only: what the devices build could not be kept; "
                         "export into a writable copy")
    # a read (inspect) or --no-record keeps the manifest as it is
    record = command != "inspect" and "--no-record" not in args
    json_to_stdout(json_path)
    job = Job(command, tuple(args), builds)
    names = [t.name for t in fleet.targets]
    console.print(f"[bold]toolkit {command}[/] {escape(str(bundle))} on "
                  f"{escape(', '.join(names))} ({min(fleet.parallel, len(names))} at a time)",
                  highlight=False, soft_wrap=True)
    width = max(len(n) for n in names)

    result = _with_progress(bundle, fleet, job, names, width, record)
    _summary(result)
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    write_json(json_path, {"command": command, "bundle": str(bundle),
                           "wall_s": round(result.wall_s, 3), "recorded": result.recorded,
                           "targets": result.to_dict()})
    return result.exit_code


def _check_names(args: list[str]) -> None:
    """Format and precision names are checked here, once, not by every device after it
    connected (exit 2 naming the option)."""
    from toolkit import formats
    from toolkit.spec import canonical_precision

    for flag, value in zip(args, args[1:]):
        for part in filter(None, (p.strip() for p in value.split(","))):
            if flag in ("--format", "-f", "--to", "-t"):
                formats.canonical(part)
            elif flag in ("--precision", "-p"):
                canonical_precision(part)


def _with_progress(bundle: Path, fleet: Any, job: Any, names: list[str], width: int,
                   record: bool) -> Any:
    """Run the fleet with a live line per device (its phase and time, on a terminal) and the
    devices' own output streamed above them, each line led by the device's name."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from toolkit.remote.fleet import run_fleet

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        tasks = {n: progress.add_task(f"{escape(n):<{width}} waiting", total=None)
                 for n in names}

        def line(target: str, text: str) -> None:
            progress.console.print(f"[dim]{escape(target):<{width}} │[/] {_inert(text)}",
                                   highlight=False, soft_wrap=True)

        def phase(target: str, name: str) -> None:
            progress.update(tasks[target], description=f"{escape(target):<{width}} {name}")
            if not progress.console.is_terminal and name != "done":  # a log: say it once
                progress.console.print(f"[cyan]{escape(target):<{width}} ▸ {name}[/]",
                                       highlight=False)

        return run_fleet(bundle, fleet, job, on_line=line, on_phase=phase, record=record)


def _inert(text: str) -> str:
    """A device's words as plain text: no markup, no terminal control sequences."""
    from toolkit.spec import CONTROL_CHARS

    return escape(CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def _headline(result: Any) -> str:
    """What the device's own --json says, in a few words (the device's words: bounded)."""
    if not isinstance(result, dict):
        return ""
    parts: list[str] = []
    for report in result.get("reports") or []:  # verify
        if isinstance(report, dict):
            parts.append(f"{report.get('artifact')} {'✓' if report.get('passed') else '✗'}")
    for row in result.get("results") or []:  # bench
        if isinstance(row, dict) and isinstance(row.get("p50_ms"), (int, float)):
            parts.append(f"{row.get('format')}/{row.get('precision')} b{row.get('batch')} "
                         f"p50 {row['p50_ms']:.2f} ms")
    for step in result.get("steps") or []:  # export
        if isinstance(step, dict) and step.get("status") != "exists":
            parts.append(f"{step.get('target')}/{step.get('precision')} {step.get('status')}")
    return ", ".join(str(p) for p in parts)[:160]


def _summary(result: Any) -> None:
    from rich.table import Table

    from toolkit.cli.console import human_size

    table = Table("target", "exit", "device", "sent", "result", title="devices",
                  title_justify="left")
    for o in result.outcomes:
        device = o.device
        what = ", ".join(filter(None, [device.gpu, device.cpu])) if device else "—"
        verdict = {0: "[green]ok[/]", 1: "[red]check failed[/]", 2: "[red]bad input[/]",
                   3: "[yellow]backend missing[/]", 130: "[red]interrupted[/]"}[o.code]
        pulled = "built " + ", ".join(p.record.path or "" for p in o.pulled) \
            if o.pulled else ""
        table.add_row(escape(o.target.name), f"{o.code} {verdict}", _inert(what[:48]),
                      f"{o.sent_files} files, {human_size(o.sent_bytes)}",
                      _inert("; ".join(filter(None, [_headline(o.result), o.message, pulled]))
                             [:200]) or "—")
    table_console().print(table)
    console.print(f"{len(result.outcomes)} devices in {result.wall_s:.1f} s", highlight=False)


# -- toolkit targets ------------------------------------------------------------------------------
def probe_command(
    on: Annotated[list[str], typer.Argument(metavar="TARGET...",
                                            help="Targets, @groups or SSH destinations.")],
    targets_file: Annotated[str | None, typer.Option(
        "--targets", help="The targets file (default $TOOLKIT_TARGETS or "
        "~/.config/toolkit/targets.toml).")] = None,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write one record per target as JSON ('-' for standard output).")
    ] = None,
) -> int:
    """What each device has: Python, the toolkit, backends and their runtimes' versions, GPU,
    JetPack, CPU, disk."""
    import concurrent.futures
    import json

    from toolkit.cli.console import check_writable_file
    from toolkit.errors import ToolkitError
    from toolkit.manifest import SCHEMA_VERSION
    from toolkit.remote import ssh
    from toolkit.remote.session import device_record
    from toolkit.remote.targets import resolve

    check_writable_file(json_path, "--json")
    fleet = resolve(on, targets_file)
    json_to_stdout(json_path)

    def one(target: Any, control: str) -> dict[str, Any]:
        connection = ssh.Connection(target, fleet.ssh_config, control)
        try:
            reply = connection.run(["_device", "probe", "--workdir", target.workdir],
                                   stdin=b"{}", max_stdout=1 << 20, timeout_s=120)
            info = json.loads(reply.stdout) if reply.code == 0 else None
            if not isinstance(info, dict):
                last = (reply.stderr.strip().splitlines() or ["no answer"])[-1]
                code = reply.code if reply.code in (2, 3) else 2
                return {"target": target.name, "exit": code,
                        "message": f"the toolkit doesn't run there: {last[:200]}"}
            record = device_record(info).to_json()
            problem = None
            if not isinstance(info.get("schema"), int) or info["schema"] < SCHEMA_VERSION:
                problem = (f"its toolkit {info.get('toolkit_version')} reads manifest schema "
                           f"{info.get('schema')}; bundles here are {SCHEMA_VERSION}: upgrade "
                           "it there")
            return {"target": target.name, "exit": 2 if problem else 0, "message": problem,
                    "device": record, "free_bytes": info.get("free_bytes")}
        except (ToolkitError, ValueError) as err:
            return {"target": target.name, "exit": getattr(err, "exit_code", 2),
                    "message": str(err)}
        finally:
            connection.close()

    with ssh.control_directory() as control, \
            concurrent.futures.ThreadPoolExecutor(fleet.parallel) as pool:
        rows = list(pool.map(lambda t: one(t, control), fleet.targets))
    _probe_table(rows)
    write_json(json_path, rows)
    return max(r["exit"] for r in rows)


def _probe_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from toolkit.cli.console import human_size

    table = Table("target", "toolkit", "python", "backends", "GPU (cc, driver)", "runtimes",
                  "L4T", "CPU", "free", title="devices", title_justify="left")
    for row in rows:
        d = row.get("device")
        if not d:
            table.add_row(escape(row["target"]), f"[red]{_inert(row['message'] or '')}[/]",
                          *[""] * 7)
            continue
        gpu = f"{d.get('gpu')} ({d.get('compute_capability')}, {d.get('driver')})" \
            if d.get("gpu") else "—"
        flags = " ".join(d.get("cpu_flags") or [])
        table.add_row(escape(row["target"]), _inert(str(d.get("toolkit_version"))),
                      _inert(str(d.get("python"))), _inert(", ".join(d.get("backends") or [])),
                      _inert(gpu), _inert(runtime_versions(d) or "—"),
                      _inert(str(d.get("l4t") or "—")),
                      _inert(f"{d.get('cpu')} [{flags}]"[:60]),
                      human_size(row.get("free_bytes")))
        if row.get("message"):
            err_console.print(f"[red]{escape(row['target'])}:[/] {_inert(row['message'])}",
                              highlight=False, soft_wrap=True)
    table_console().print(table)


# -- toolkit _device (the far end) --------------------------------------------------------------
Workdir = Annotated[str, typer.Option("--workdir")]
BundleId = Annotated[str, typer.Option("--bundle")]


def device_probe(workdir: Workdir) -> int:
    import json

    from toolkit.remote.device import probe

    raw = sys.stdin.buffer.read(16 << 20)
    try:
        want = json.loads(raw or b"{}").get("want") or []
    except (ValueError, AttributeError):
        want = []
    sys.stdout.write(json.dumps(probe(workdir, [str(w) for w in want][:100_000])))
    return 0


def device_put(workdir: Workdir) -> int:
    import json

    from toolkit.remote.device import put

    sys.stdout.write(json.dumps(put(workdir, sys.stdin.buffer)))
    return 0


def device_get(workdir: Workdir, bundle: BundleId,
               names: Annotated[list[str], typer.Argument()]) -> int:
    from toolkit.remote.device import get

    return get(workdir, bundle, names, sys.stdout.buffer)


def runtime_versions(device: dict[str, Any]) -> str:
    """'<title> <version>': each format runtime's version a device reported, by its title."""
    from toolkit import formats

    return ", ".join(f"{formats.get(name).title} {version}"
                     for name, version in (device.get("runtimes") or {}).items()
                     if name in formats.TABLE)
