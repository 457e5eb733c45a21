"""A bundle is input nobody here wrote: each row of the adversarial trial (issue 13) through
the CLI. Hostile manifests, tampered files, interrupts, concurrent writers, read-only copies."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.errors import UsageError

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_clean_line(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones included) and its content hash; a file over
    64 MiB (the sparse 8 GB journal) by its size and modification time, not read."""
    def fingerprint(p: Path) -> str:
        stat = p.stat()
        if stat.st_size > 64 << 20:
            return f"{stat.st_size}@{stat.st_mtime_ns}"
        return hashlib.sha256(p.read_bytes()).hexdigest()

    return {str(p.relative_to(root)): fingerprint(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def cnn(cnn_onnx_bundle: Path) -> Path:
    return cnn_onnx_bundle  # read only: tests that change a bundle use `copy`


@pytest.fixture
def copy(cnn, tmp_path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(cnn, dest)
    return dest


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


# -- 1, 1b: paths outside the bundle ------------------------------------------------------
@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_a_path_out_of_the_bundle_is_never_touched(copy, tmp_path, where):
    outside = tmp_path / "precious.onnx"
    shutil.copyfile(copy / "model.onnx", outside)  # a valid model: loading it would "pass"
    if where == "symlink":
        (copy / "model.onnx").unlink()
        (copy / "model.onnx").symlink_to(outside)
    else:
        target = str(outside) if where == "absolute" else "../precious.onnx"
        edit_manifest(copy, lambda m: m["artifacts"][0].update(path=target))
    content = outside.read_bytes()
    for args in (("verify", copy), ("bench", copy, "--budget", "0.05", "--batch", "1")):
        result = run(*args)
        one_clean_line(result, 2, "bundle")  # never loaded: no PASS, no timing
        assert "PASS" not in result.output
    result = run("export", "tests.models:small_cnn", "--to", "onnx", "--out", copy, "--force")
    if where == "symlink":  # the link is replaced by a file of the bundle's own
        assert result.exit_code == 0, result.output
        assert not (copy / "model.onnx").is_symlink()
    else:
        one_clean_line(result, 2, "manifest.json", "plain file name")
    assert outside.read_bytes() == content  # never deleted nor written


# -- 3: interrupts ------------------------------------------------------------------------
@pytest.mark.parametrize(("at", "signal_name"), [
    (3, "SIGINT"),   # while taking golden samples
    (6, "SIGINT"),   # inside torch.export (the ONNX exporter wraps the KeyboardInterrupt)
    (7, "SIGTERM"),  # after the ONNX is written: checking the TorchScript trace
])
def test_an_interrupt_exits_130_and_leaves_the_bundle_as_it_was(tmp_path, at, signal_name):
    bundle = tmp_path / "b"
    first = run("export", "tests.models:interrupting_cnn", "--to", "onnx", "--out", bundle)
    assert first.exit_code == 0, first.output
    before = snapshot(bundle)
    # other model arguments are another source: --force clears the bundle before exporting,
    # and that must be undone too
    result = run("export", "tests.models:interrupting_cnn", "--to", "onnx,torchscript",
                 "--model-arg", f"at={at}", "--model-arg", f"signal_name='{signal_name}'",
                 "--out", bundle, "--force")
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "Traceback" not in result.output
    assert "was rolled back" in result.output
    assert snapshot(bundle) == before


def test_an_interrupted_new_bundle_leaves_nothing(tmp_path):
    result = run("export", "tests.models:interrupting_cnn", "--to", "onnx",
                 "--model-arg", "at=6", "--out", tmp_path / "new")
    assert result.exit_code == 130, result.output
    assert not (tmp_path / "new").exists()


# -- 4: concurrent writers ----------------------------------------------------------------
def test_concurrent_exports_never_lose_an_artifact(tmp_path):
    from toolkit.export.pipeline import export

    out = tmp_path / "shared"
    outcomes: dict[str, object] = {}

    def export_one(fmt: str) -> None:
        try:
            outcomes[fmt] = export("tests.models:small_cnn", [fmt], out).exit_code
        except UsageError as err:
            outcomes[fmt] = err

    threads = [threading.Thread(target=export_one, args=(f,)) for f in ("onnx", "torchscript")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    busy = [v for v in outcomes.values() if isinstance(v, UsageError)]
    assert (out / "manifest.json").is_file(), outcomes
    assert all("another toolkit command is using" in str(e) for e in busy), outcomes
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {a["path"] for a in manifest["artifacts"]}
    on_disk = {p.name for p in out.iterdir() if p.name.startswith("model.")}
    assert listed == on_disk and len(listed) == 2 - len(busy), (listed, on_disk, outcomes)


def test_an_export_waits_for_one_that_has_just_made_the_directory(tmp_path, cnn_onnx_bundle):
    """The race the test above hit once in a fresh clone: the other export had made --out and
    published a first file, its manifest not yet written; this one must wait for its lock,
    not call the directory foreign."""
    import shutil
    import time

    from toolkit import transaction
    from toolkit.export.pipeline import export

    out = tmp_path / "shared"
    out.mkdir()
    outcome: list[object] = []

    def second() -> None:
        try:
            outcome.append(export("tests.models:small_cnn", ["torchscript"], out).exit_code)
        except UsageError as err:
            outcome.append(err)

    with transaction.locked(out):  # the first export, mid-way
        shutil.copy(cnn_onnx_bundle / "model.onnx", out)
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(transaction.WRITER_PREFIX) for p in out.iterdir()):
            assert thread.is_alive(), outcome  # it must wait, not give up
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for name in ("golden.npz", "manifest.json"):  # the first export commits
            shutil.copy(cnn_onnx_bundle / name, out)
    thread.join(timeout=300)
    assert outcome == [0], outcome
    assert {"model.onnx", "model.ts"} <= {p.name for p in out.iterdir()}


# -- 5: another factory into the same bundle ---------------------------------------------
def test_another_factory_with_the_same_shapes_is_refused(copy):
    result = run("export", "tests.models:interrupting_cnn", "--to", "torchscript",
                 "--out", copy)
    one_clean_line(result, 2, "different source", "--force")
    assert not (copy / "model.ts").exists()


def test_the_same_factory_reexports_into_its_bundle(copy):
    result = run("export", "tests.models:small_cnn", "--to", "torchscript", "--out", copy)
    assert result.exit_code == 0, result.output
    assert (copy / "model.ts").is_file()


# -- 6: malformed manifests and files -------------------------------------------------------
@pytest.mark.parametrize(("change", "needle"), [
    (lambda m: m.update(inputs="x"), "inputs"),
    (lambda m: m["inputs"][0].update(min=["1", 3, 16, 16]), "inputs.0.min"),
    (lambda m: m["artifacts"][0].pop("path"), "artifacts.0"),
    (lambda m: m["artifacts"][0].update(format="onnx2"), "unknown format"),
    (lambda m: m["artifacts"][0].update(sha256=7), "artifacts.0.sha256"),
    (lambda m: m.update(schema=99, toolkit_version="9.0"), "upgrade to toolkit 9.0"),
    (lambda m: m.update(schema="1"), "schema"),
    (lambda m: m["outputs"].append(dict(m["outputs"][0])), "repeat"),
    # an in-process "artifact" would make plain verify rebuild (import) the source
    (lambda m: m["artifacts"].append({"format": "compile", "precision": "fp32",
                                      "path": "x"}), "in-process"),
    (lambda m: m["artifacts"][0].update(path="é" * 200), "plain file name"),
    (lambda m: m["source"].update(deep=json.loads("[" * 40 + "]" * 40)), "nested"),
    (lambda m: m["inputs"][0].update(name="\ud800"), "not valid text"),
])
def test_a_malformed_manifest_is_one_line_naming_the_field(copy, change, needle):
    edit_manifest(copy, change)
    for command in ("inspect", "verify", "bench"):
        one_clean_line(run(command, copy), 2, "manifest.json", needle)


def test_an_integer_too_long_to_parse_is_bad_input(copy):
    text = (copy / "manifest.json").read_text()
    from toolkit.manifest import SCHEMA_VERSION

    current = f'"schema": {SCHEMA_VERSION}'
    assert current in text
    (copy / "manifest.json").write_text(text.replace(current, '"schema": ' + "9" * 5000))
    one_clean_line(run("inspect", copy), 2, "not valid JSON")


def test_markup_in_a_manifest_is_shown_as_text(copy):
    edit_manifest(copy, lambda m: m["source"].update(path="[/x] [bold]evil"))
    result = run("inspect", copy)
    assert result.exit_code == 0 and "[/x] [bold]evil" in result.output, result.output


def test_a_manifest_that_disagrees_with_its_file_is_bad_input_for_bench(copy):
    edit_manifest(copy, lambda m: m["inputs"][0].update(dtype="int64"))
    one_clean_line(run("bench", copy, "--budget", "0.05", "--batch", "1"), 2,
                   "did not run on the inputs the manifest describes")


def test_a_planted_undo_link_is_not_followed(copy, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    for pid in range(os.getpid() - 5, os.getpid() + 50):
        (copy / f".toolkit-undo-{pid}").symlink_to(victim)
    result = run("export", "tests.models:small_cnn", "--to", "onnx", "--out", copy, "--force")
    assert result.exit_code == 0, result.output
    assert not any(victim.iterdir())


def test_export_refuses_a_modified_or_read_only_bundle(copy, tmp_path):
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    refused = run("export", copy, "--to", "onnx")
    one_clean_line(refused, 2, "changed since it was exported", "--allow-modified")
    assert run("export", copy, "--to", "onnx", "--allow-modified").exit_code == 0
    ro = tmp_path / "ro"
    shutil.copytree(copy, ro)
    _read_only(ro)
    try:
        one_clean_line(run("export", "tests.models:small_cnn", "--to", "onnx",
                           "--precision", "fp32,fp16", "--out", ro), 2, "read-only")
    finally:
        for path in [ro, *ro.iterdir()]:
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)


def test_a_dangling_out_link_is_bad_input(tmp_path):
    (tmp_path / "o").symlink_to(tmp_path / "nowhere")
    one_clean_line(run("export", "tests.models:small_cnn", "--out", tmp_path / "o"), 2,
                   "link to nothing")


def test_verify_waits_for_a_running_export(copy):
    """A writer holds the bundle (as an export does): verify waits, then reads it whole."""
    import time

    from toolkit.transaction import locked

    released = []

    def writer() -> None:
        with locked(copy):
            time.sleep(1.5)
            released.append(time.monotonic())

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.3)
    result = run("verify", copy, "--no-record")
    finished = time.monotonic()
    thread.join()
    assert result.exit_code == 0, result.output
    assert released and finished >= released[0]


def test_a_pt2_with_an_entry_outside_the_package_is_refused(tmp_path):
    import zipfile

    from toolkit.backends.pt2.runner import check_package

    package = tmp_path / "model.pt2"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("model/data/ok.bin", b"0")
        archive.writestr("model/../../../escape.cpp", b"int x;")
    with pytest.raises(UsageError, match="points outside the package"):
        check_package(package)
    assert not (tmp_path.parent / "escape.cpp").exists()


def test_an_opset_the_bundle_can_not_keep_is_refused(copy):
    one_clean_line(run("export", copy, "--to", "onnx", "--precision", "fp32,fp16",
                       "--opset", "17"), 2, "--opset 17", "opset 20")
    assert not (copy / "model.fp16.onnx").exists()


def test_a_golden_file_that_unpacks_too_large_is_bad_input(copy, monkeypatch):
    """A zip bomb: 64 MiB of zeros in a few KiB, against a limit lowered to 32 MiB (the real
    one is a quarter of this machine's memory)."""
    import zipfile

    import toolkit.spec

    monkeypatch.setattr(toolkit.spec, "max_tensor_bytes", lambda: 32 * 2**20)
    golden = copy / "golden.npz"
    with zipfile.ZipFile(golden, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("0/in/x.npy", b"\0" * 2**10)
        archive.writestr("0/out/output.npy", bytes(64 * 2**20))
    digest = hashlib.sha256(golden.read_bytes()).hexdigest()
    edit_manifest(copy, lambda m: m["golden"].update(sha256=digest))
    one_clean_line(run("verify", copy, "--no-record"), 2, "golden", "GiB")


@pytest.mark.parametrize("args", [
    ["bench", "{b}", "--batch", "9" * 40],
    ["bench", "{b}", "--json", "{t}"],
    ["select", "{b}", "--device", "cuda[/x]"],
    ["inspect", "{b}", "--json", "{t}"],
])
def test_odd_options_are_bad_input(copy, tmp_path, args):
    result = run(*[a.format(b=copy, t=tmp_path) for a in args])
    one_clean_line(result, 2)


def test_garbage_and_missing_files(copy):
    golden = copy / "golden.npz"
    golden.write_bytes(b"not a zip")
    # the manifest's hash no longer matches: the reference was changed, verify fails
    one_clean_line(run("verify", copy, "--no-record"), 1, "golden.npz", "changed")
    # a hostile copy that also rewrote the hash: unreadable golden samples are bad input
    digest = hashlib.sha256(golden.read_bytes()).hexdigest()
    edit_manifest(copy, lambda m: m["golden"].update(sha256=digest))
    one_clean_line(run("verify", copy, "--no-record"), 2, "golden")
    (copy / "model.onnx").unlink()
    one_clean_line(run("bench", copy, "--budget", "0.05"), 2, "missing")


@pytest.mark.parametrize("spec", ["x:99999999999x3", "x:1-4x3:int64:extra", "x:0x3",
                                  "x:4-2x3", "x:100000x100000x100000"])
def test_absurd_inputs_are_bad_input(tmp_path, spec):
    result = run("export", "tests.models:small_cnn", "--input", spec, "--out", tmp_path / "o")
    one_clean_line(result, 2, "--input" if spec.count(":") > 2 else "input")
    assert not (tmp_path / "o").exists()


# -- 7: read-only bundles -------------------------------------------------------------------
def _read_only(root: Path) -> None:
    for path in [*root.iterdir(), root]:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)


def test_a_read_only_bundle_is_verified_and_timed(copy, tmp_path):
    before = snapshot(copy)
    _read_only(copy)
    try:
        report = tmp_path / "verify.json"
        verified = run("verify", copy, "--json", report)
        one_clean_line(verified, 0, "read-only", "not recorded")
        assert json.loads(report.read_text())["passed"]
        timed = run("bench", copy, "--budget", "0.05", "--batch", "1", "--json",
                    tmp_path / "bench.json")
        one_clean_line(timed, 0, "read-only")
        assert json.loads((tmp_path / "bench.json").read_text())["results"]
        assert snapshot(copy) == before
    finally:
        for path in [copy, *copy.iterdir()]:
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)


# -- 8, 9: options checked up front ---------------------------------------------------------
def test_duplicate_input_names_are_refused(tmp_path):
    result = run("export", "tests.models:TwoInTwoOut", "--input", "x:1-4x3",
                 "--input", "x:1-4x3", "--out", tmp_path / "o")
    one_clean_line(result, 2, "more than once")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("opset", ["999", "-5", "0"])
def test_an_opset_out_of_range_is_refused(tmp_path, opset):
    result = run("export", "tests.models:small_cnn", "--opset", opset, "--out", tmp_path / "o")
    one_clean_line(result, 2, "--opset")
    assert not (tmp_path / "o").exists()


def test_an_opset_is_honoured_or_refused(tmp_path):
    import onnx

    honoured = run("export", "tests.models:small_cnn", "--opset", "17", "--out", tmp_path / "a")
    assert honoured.exit_code == 0, honoured.output
    model = onnx.load(str(tmp_path / "a" / "model.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    refused = run("export", "tests.models:small_cnn", "--opset", "9", "--out", tmp_path / "b")
    one_clean_line(refused, 2, "--opset 9")
    assert not (tmp_path / "b").exists()


def test_the_manifest_round_trips_through_its_schema(cnn):
    from toolkit.bundle import Bundle

    bundle = Bundle.open(cnn)
    from toolkit.manifest import SCHEMA_VERSION

    assert bundle.manifest["schema"] == SCHEMA_VERSION and bundle.artifacts[0]["sha256"]
    assert np.load(cnn / "golden.npz").files
    assert os.access(cnn / "manifest.json", os.R_OK)


def test_a_closed_output_pipe_does_not_undo_the_export(tmp_path):
    """`toolkit export ... | head -1`: the reader leaves early, the export still lands."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli.app", "export", "tests.models:small_cnn",
         "--to", "torchscript", "--out", str(tmp_path / "b")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root)
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()  # as `head -1` does
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()
    assert (tmp_path / "b" / "model.ts").is_file() and b"Traceback" not in stderr


# -- round 3 (issue 29) ---------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["bench", "{b}", "--budget", "0.05", "--batch", "1", "--json", "{b}/manifest.json"],
    ["bench", "{b}", "--budget", "0.05", "--batch", "1", "--markdown", "{b}/notes.md"],
    ["bench", "{b}", "--budget", "0.05", "--batch", "1", "--plot", "{b}/golden.npz"],
    ["bench", "{b}/model.onnx", "--budget", "0.05", "--batch", "1", "--json",
     "{b}/model.onnx"],
    ["verify", "{b}", "--markdown", "{b}/model.onnx"],
    ["verify", "{b}", "--json", "{b}/golden.npz"],
    ["verify", "{b}", "--json", "{b}/../bundle/sub.json"],
    ["select", "{b}", "--json", "{b}/manifest.json"],
    ["inspect", "{b}", "--json", "{b}/x.json"],
    ["export", "tests.models:small_cnn", "--out", "{b}", "--force", "--json",
     "{b}/manifest.json"],
])
def test_an_output_path_inside_the_bundle_is_refused(copy, args):
    before = snapshot(copy)
    result = run(*[a.format(b=copy) for a in args])
    one_clean_line(result, 2, "reads")
    assert snapshot(copy) == before


def test_an_output_link_into_the_bundle_is_refused(copy, tmp_path):
    (tmp_path / "report.json").symlink_to(copy / "manifest.json")
    before = snapshot(copy)
    one_clean_line(run("verify", copy, "--json", tmp_path / "report.json"), 2, "reads")
    assert snapshot(copy) == before


def test_a_report_outside_the_bundle_replaces_the_file_named(copy, tmp_path):
    """The rule the README states: a report file the user names is replaced."""
    report = tmp_path / "verify.json"
    report.write_text("old")
    assert run("verify", copy, "--no-record", "--json", report).exit_code == 0
    assert json.loads(report.read_text())["passed"]


@pytest.mark.parametrize("where", ["inside", "equal", "holds"])
def test_deploy_into_or_over_the_bundle_is_refused(copy, tmp_path, where):
    before = snapshot(copy)
    if where == "inside":
        args = ["--triton", copy, "--name", "golden.npz"]
    elif where == "equal":
        args = ["--triton", copy.parent, "--name", copy.name]
    else:
        args = ["--triton", copy.parent.parent, "--name", copy.parent.name]
    result = run("deploy", copy, *args, "--format", "onnx", "--force")
    one_clean_line(result, 2, "bundle")
    assert snapshot(copy) == before and (copy / "golden.npz").is_file()


def test_a_killed_deploys_stage_is_cleaned_by_the_next_deploy(copy, tmp_path):
    repo = tmp_path / "repo"
    stage = repo / ".toolkit-stage-m.k1ll3d00"  # killed while building REPO/m
    (stage / "1").mkdir(parents=True)
    moved = repo / ".toolkit-old-kept.k1ll3d00" / "kept"  # killed while replacing REPO/kept
    moved.mkdir(parents=True)
    (moved / "config.pbtxt").write_text("name: 'kept'")
    result = run("deploy", copy, "--triton", repo, "--format", "onnx", "--name", "m")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in repo.iterdir()) == ["kept", "m"]
    assert (repo / "kept" / "config.pbtxt").read_text() == "name: 'kept'"


def test_an_interrupted_reader_says_nothing_was_being_changed(copy, monkeypatch):
    import toolkit.bundle

    def interrupted(path):
        raise KeyboardInterrupt("SIGTERM")

    monkeypatch.setattr(toolkit.bundle, "load_golden", interrupted)
    result = run("verify", copy)
    assert result.exit_code == 130, result.output
    assert "nothing was being changed" in result.output and "rolled back" not in result.output


def test_a_deploy_interrupted_after_its_final_rename_says_it_was_kept(copy, tmp_path,
                                                                      monkeypatch):
    from toolkit.deploy import triton

    repo = tmp_path / "repo"
    assert run("deploy", copy, "--triton", repo, "--format", "onnx", "--name", "m").exit_code == 0
    (repo / "m" / "old").write_text("the entry being replaced")
    real = triton.shutil.rmtree

    def interrupted_after_rename(path, *args, **kwargs):
        if Path(path).name.startswith(triton.OLD_PREFIX):  # the new entry is in place
            raise KeyboardInterrupt("SIGTERM")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(triton.shutil, "rmtree", interrupted_after_rename)
    result = run("deploy", copy, "--triton", repo, "--format", "onnx", "--name", "m", "--force")
    assert result.exit_code == 130, result.output
    assert "completed and was kept" in result.output, result.output
    assert not (repo / "m" / "old").exists() and (repo / "m" / "config.pbtxt").is_file()


# -- the journal is bundle input: hostile intent.json ----------------------------------------
def _plant_intent(bundle: Path, kind: str, tmp_path: Path) -> None:
    from toolkit.transaction import INTENT, JOURNAL

    journal = bundle / JOURNAL
    journal.mkdir()
    intent = journal / INTENT
    if kind == "symlink":  # an outside list that would delete model.onnx
        outside = tmp_path / "outside.json"
        outside.write_text('{"version": 1, "state": "open", "created_root": false, '
                           '"created": ["model.onnx"], "saved": []}')
        intent.symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(intent)
    elif kind == "dev-zero":
        intent.symlink_to("/dev/zero")
    elif kind == "huge":
        with open(intent, "wb") as handle:
            handle.truncate(8 << 30)  # sparse: 8 GB that take no disk
    elif kind == "nested":
        intent.write_text("[" * 100_000)
    elif kind == "directory":
        (bundle / "sub").mkdir()
        intent.write_text('{"version": 1, "state": "open", "created_root": false, '
                          '"created": ["sub"], "saved": []}')
    elif kind == "types":
        intent.write_text('{"version": 1, "state": ["open"], "created_root": "yes", '
                          '"created": [], "saved": []}')


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dev-zero", "huge", "nested", "directory",
                                  "types"])
def test_a_hostile_journal_is_exit_2_naming_it_and_never_obeyed(copy, tmp_path, kind):
    import time

    _plant_intent(copy, kind, tmp_path)
    before = snapshot(copy)
    for args in (("inspect", copy), ("verify", copy, "--no-record"),
                 ("export", "tests.models:small_cnn", "--out", copy, "--force")):
        started = time.monotonic()
        result = run(*args)
        one_clean_line(result, 2, "intent.json", "not a journal")
        assert time.monotonic() - started < 60  # never blocked on it
    assert snapshot(copy) == before and (copy / "model.onnx").is_file()


@pytest.mark.parametrize("args", [
    ["bench", "{b}", "--threads", "100000", "--budget", "0.05", "--batch", "1"],
    ["verify", "{b}", "--tol", "output:cos=1.5"],
    ["verify", "{b}", "--tol", "output:atol=1,atol=2"],
    ["verify", "{b}", "--tol", "cos=0.9,cosine=0.8"],
    ["verify", "{b}", "--tol", "frac=2"],
    ["verify", "{b}", "--min-cosine", "1.5"],
])
def test_options_that_exhaust_the_machine_or_can_not_pass_are_bad_input(copy, args):
    before = snapshot(copy)
    result = run(*[a.format(b=copy) for a in args])
    one_clean_line(result, 2, next(a for a in args if a in ("--threads", "--tol",
                                                             "--min-cosine")))
    assert "PASS" not in result.output and snapshot(copy) == before


@pytest.mark.parametrize(("inputs", "needle"), [
    (["x:1-4x5"], None),  # the control: accepted
    (["ids:1-4xseq=8-2147483647:int64:0-100", "mask:1-4xseq:int64:0-2"], "GiB"),
    (["ids:1-4xbatch=8-16:int64:0-100", "mask:1-4xbatch:int64:0-2"], "'batch'"),
    (["ids:1-4x8:int64:0-100", "mask:2-6x8:int64:0-2"], "same batch range"),
])
def test_input_shapes_that_lie_or_exhaust_memory_are_refused(inputs, needle):
    from toolkit.spec import parse_inputs

    if needle is None:
        assert parse_inputs(inputs)[0].max == (4, 5)
        return
    with pytest.raises(UsageError, match=needle):
        parse_inputs(inputs)


def test_a_range_too_large_for_memory_is_refused_before_exporting(tmp_path):
    result = run("export", "tests.models:TwoInTwoOut", "--input", "image:1-2147483647x6",
                 "--input", "meta:1-2147483647x3", "--out", tmp_path / "o")
    one_clean_line(result, 2, "--input", "GiB")
    assert not (tmp_path / "o").exists()


def test_select_on_a_read_only_bundle_selects_from_what_it_measured(copy, tmp_path):
    before = snapshot(copy)
    _read_only(copy)
    try:
        result = run("select", copy, "--json", tmp_path / "s.json")
        one_clean_line(result, 0, "timing it now", "read-only", "not recorded")
        doc = json.loads((tmp_path / "s.json").read_text())
        assert doc["selected"]["artifact"] == "onnx/fp32" and doc["recorded"] is False
        assert snapshot(copy) == before
    finally:
        for path in [copy, *copy.iterdir()]:
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)


def test_nms_layout_rows_on_a_boxes_and_scores_model_is_refused(tmp_path):
    """As layout=yolo is: the layout names what the model returns, and this one doesn't."""
    result = run("export", "toolkit.demo.detector:ShapesDetector", "--nms",
                 "iou=0.5,score=0.0,layout=rows", "--to", "onnx", "--out", tmp_path / "o")
    one_clean_line(result, 2, "layout=rows", "[4, 64, 4]")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("batch", ["", "1,,2", "1,"])
def test_an_empty_batch_size_is_bad_input(copy, batch):
    result = run("bench", copy, "--batch", batch, "--budget", "0.05")
    one_clean_line(result, 2, "--batch")


def test_a_sample_never_pairs_two_batches():
    """Specs of a bundle written elsewhere (--input refuses them): inputs made together take
    one batch, inside every input's range."""
    from toolkit.spec import TensorSpec, random_inputs

    ids = TensorSpec("ids", "int64", (1, 8), (1, 8), (4, 8))
    mask = TensorSpec("mask", "int64", (2, 8), (2, 8), (6, 8))
    for at in ("min", "opt", "max"):
        feed = random_inputs([ids, mask], at=at)
        assert feed["ids"].shape[0] == feed["mask"].shape[0] == 2


def test_deploy_json_into_the_entry_it_writes_is_refused(copy, tmp_path):
    repo = tmp_path / "repo"
    args = ["deploy", copy, "--triton", repo, "--name", "m", "--format", "onnx"]
    assert run(*args).exit_code == 0
    config = (repo / "m" / "config.pbtxt").read_text()
    one_clean_line(run(*args, "--force", "--json", repo / "m" / "config.pbtxt"), 2, "reads")
    assert (repo / "m" / "config.pbtxt").read_text() == config
