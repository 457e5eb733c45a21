"""`toolkit deploy --triton REPO`: one verified artifact as a Triton Inference Server model.

Writes REPO/NAME/config.pbtxt, REPO/NAME/1/<model file>, a warm-up request made of a golden
sample (REPO/NAME/warmup/), and a client example that sends the golden samples to the served
model and judges the replies by the bundle's parity preset (REPO/NAME/client_example.py with
the bundle's manifest and golden samples beside it). The configuration is parsed with
Triton's own protobuf schema (`model_config_pb2` from tritonclient) before anything is
written; the repository appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import formats as format_table
from toolkit import interrupts
from toolkit.bundle import GOLDEN, MANIFEST, Bundle, artifact_label, write_json_atomic
from toolkit.errors import BackendUnavailable, UsageError
from toolkit.manifest import ArtifactRecord
from toolkit.spec import batch_range, numpy_dtype

TRITON_DTYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
    "int16": "TYPE_INT16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}
# What Triton accepts as a model (directory) name, kept to what every filesystem and URL take
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VERSION = "1"
CLIENT = "client_example.py"
CLIENT_BUNDLE = "client_bundle"


@dataclass
class TritonModel:
    """One model entry of a repository, before it is written."""

    name: str
    record: ArtifactRecord
    config: str  # config.pbtxt text, already parsed by Triton's schema
    inputs: dict[str, str]  # bundle name -> Triton name
    outputs: dict[str, str]
    max_batch_size: int
    warmup: dict[str, bytes] = field(default_factory=dict)  # file name -> raw tensor bytes
    notes: list[str] = field(default_factory=list)
    batch_one: bool = False  # requests carry one sample (torch_aoti)

    def client_spec(self) -> dict[str, Any]:
        return {"model": self.name, "version": VERSION, "inputs": self.inputs,
                "outputs": self.outputs, "max_batch_size": self.max_batch_size,
                "batch_one": self.batch_one, "artifact": artifact_label(self.record)}


def model_name(bundle: Bundle, name: str | None) -> str:
    name = name if name is not None else re.sub(r"[^A-Za-z0-9_.-]", "_", bundle.name)
    if not MODEL_NAME.fullmatch(name):  # match() would let a final newline through
        raise UsageError(f"--name '{name}': Triton model names here are 1-128 letters, digits, "
                         "'_', '.' or '-', starting with a letter or digit")
    return name


def deployable(bundle: Bundle, fmt: str | None, precision: str | None,
               force: bool, target: str | None = None) -> ArtifactRecord:
    """The record to serve: the bundle's `selected` one, or --format/--precision; one that
    failed or never ran parity only with --force. With `target`, for that device: its
    selection, its own artifacts first, judged on its own findings."""
    if target is not None:
        record = _for_target(bundle, target, fmt, precision)
    elif fmt is None:
        selected = bundle.manifest.selected
        if not selected:
            raise UsageError(f"{bundle.root}: nothing selected yet; run toolkit select "
                             f"{bundle.root}, or pass --format (and --precision)")
        record = bundle.artifact(selected["format"], selected["precision"],
                                 selected.get("layout"))
        if record is None or record.sha256 != selected.get("sha256"):
            raise UsageError(f"{bundle.root}: the selected {selected['artifact']} changed since "
                             "it was selected; run toolkit select again")
    else:
        name = _served(format_table.canonical(fmt))
        record = bundle.artifact(name, precision or "fp32")
        if record is None:
            raise UsageError(f"{bundle.root} has no {name} ({precision or 'fp32'}) artifact "
                             f"(it has: {bundle.listing()})")
    _served(record.format)
    parity = record.parity
    if not (parity and parity.passed) and not force:
        if target is not None:
            verdict = "failed parity" if parity else "was never verified"
            raise UsageError(f"{artifact_label(record)} {verdict} on {target}; deploy it "
                             "anyway with --force")
        verdict = "failed parity" if parity else "was never verified"
        raise UsageError(f"{artifact_label(record)} {verdict}; deploy it anyway with --force")
    return record


def _for_target(bundle: Bundle, target: str, fmt: str | None,
                precision: str | None) -> ArtifactRecord:
    from toolkit.deploy.select import on_target, stale_basis

    device = bundle.targets.get(target)
    if device is None:
        raise UsageError(f"--target {target}: no device of that name has worked on "
                         f"{bundle.root}; run toolkit verify {bundle.root} --on {target} first")
    records = [*bundle.target_artifacts(target), *bundle.artifacts]
    if fmt is None:
        selected = device.get("selected")
        if not selected:
            raise UsageError(f"--target {target}: nothing selected for it yet; run toolkit "
                             f"select {bundle.root} --target {target}, or pass --format")
        found = [r for r in records if r.sha256 == selected.get("sha256")
                 and r.format == selected.get("format")]
        if not found:
            raise UsageError(f"{bundle.root}: the artifact selected for {target} changed since "
                             "it was selected; run toolkit select --target again")
    else:
        name = _served(format_table.canonical(fmt))
        found = [r for r in records if r.format == name and r.precision == (precision or
                                                                              "fp32")]
        if not found:
            raise UsageError(f"{bundle.root} has no {name} ({precision or 'fp32'}) artifact for "
                             f"{target}")
    stale = stale_basis(bundle, found[0])
    if stale is not None:
        raise UsageError(f"{artifact_label(found[0])} was {stale}")
    return on_target(found[0], target)


def _served(fmt: str) -> str:
    if format_table.get(fmt).triton is None:
        served = [f.name for f in format_table.all_formats() if f.triton]
        raise UsageError(f"Triton can't serve {fmt}; it serves {', '.join(served)}")
    return fmt


def build(bundle: Bundle, record: ArtifactRecord, name: str, *,
          device: str | None = None) -> TritonModel:
    """The model entry: configuration text (validated), tensor names, warm-up data."""
    spec = format_table.get(record.format).triton
    assert spec is not None
    inputs = {s.name: (f"INPUT__{i}" if spec.indexed_names else s.name)
              for i, s in enumerate(bundle.inputs)}
    outputs = {o.name: (f"OUTPUT__{i}" if spec.indexed_names else o.name)
               for i, o in enumerate(bundle.outputs)}
    golden = bundle.golden()
    rng = batch_range(bundle.inputs)
    batched_outputs = all((o.shape or [0])[0] is None for o in bundle.manifest.outputs)
    max_batch = 0
    notes = ([spec.note] if spec.note else []) + (spec.caveats(record) if spec.caveats
                                                   else [])
    if rng is not None and batched_outputs:
        max_batch = rng[2] if spec.max_batch is None else min(rng[2], spec.max_batch)
    if spec.max_batch == 1:
        max_batch = 0  # one request, one sample: the batch dimension is part of the dims
    kind = (f"backend: {_quoted(spec.backend)}" if spec.backend
            else f"platform: {_quoted(spec.platform)}")
    lines = [f"name: {_quoted(name)}", kind, f"max_batch_size: {max_batch}"]
    parameters = spec.parameters(record) if spec.parameters else {}
    batch_fixed = 1 if spec.max_batch == 1 else None
    lines.append("input [")
    lines.append(",\n".join(_tensor(inputs[s.name], s.dtype, _input_dims(s, max_batch,
                                                                         batch_fixed))
                            for s in bundle.inputs))
    lines.append("]")
    lines.append("output [")
    lines.append(",\n".join(
        _tensor(outputs[o.name], o.dtype, _output_dims(o, golden, max_batch, batch_fixed))
        for o in bundle.manifest.outputs))
    lines.append("]")
    if max_batch:
        rows = record.bench.rows if record.bench else []
        preferred = sorted({r.batch for r in rows if 1 < r.batch <= max_batch})
        lines.append("dynamic_batching {" + (
            f" preferred_batch_size: [ {', '.join(map(str, preferred))} ]" if preferred else "")
            + " }")
    gpu = spec.gpu or str(device or record.device or "cpu").startswith("cuda")
    lines.append(f"instance_group [ {{ count: 1 kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }} ]")
    warmup, warm_lines = _warmup(bundle, golden[0], inputs, max_batch, batch_fixed)
    lines += warm_lines
    lines += [f"parameters {{ key: {_quoted(k)} value {{ string_value: {_quoted(v)} }} }}"
              for k, v in parameters.items()]
    config = "\n".join(lines) + "\n"
    parsed = validate(config, name)
    # what Triton will read is what we meant: the names, and no field a name smuggled in
    if ([t.name for t in parsed.input] != list(inputs.values())
            or [t.name for t in parsed.output] != list(outputs.values())
            or parsed.name != name or parsed.backend != spec.backend
            or {k: v.string_value for k, v in parsed.parameters.items()} != parameters):
        raise UsageError(f"the configuration for '{name}' does not say what the bundle does; "
                         "nothing was written")
    return TritonModel(name, record, config, inputs, outputs, max_batch, warmup, notes,
                       batch_one=spec.max_batch == 1)


def _tensor(name: str, dtype: str, dims: list[int]) -> str:
    if dtype not in TRITON_DTYPES:
        raise UsageError(f"tensor '{name}': Triton has no type for {dtype}")
    # Triton refuses empty dims; a per-sample scalar (a detector's num_detections [B]) is
    # written as [ 1 ] reshaped to [ ], Triton's own idiom for it
    shown = dims or [1]
    reshape = " reshape: { shape: [ ] }" if not dims else ""
    return (f"  {{ name: {_quoted(name)} data_type: {TRITON_DTYPES[dtype]} "
            f"dims: [ {', '.join(map(str, shown))} ]{reshape} }}")


def _quoted(text: str) -> str:
    """A protobuf text-format string literal: a name can't end the string early and add
    fields of its own to the configuration."""
    from google.protobuf import text_encoding

    return '"' + text_encoding.CEscape(text, as_utf8=True) + '"'



def _input_dims(spec: Any, max_batch: int, batch_fixed: int | None) -> list[int]:
    dims = [lo if lo == hi else -1 for lo, hi in zip(spec.min, spec.max)]
    if max_batch:
        return dims[1:]
    if batch_fixed is not None and dims and dims[0] == -1:
        dims[0] = batch_fixed
    return dims


def _output_dims(output: Any, golden: list[Any], max_batch: int,
                 batch_fixed: int | None) -> list[int]:
    shape = output.shape
    if shape is None:  # ranks differ between samples: every dimension varies
        shape = [None] * golden[0].outputs[output.name].ndim
    dims = [-1 if d is None else int(d) for d in shape]
    if max_batch:
        return dims[1:]
    if batch_fixed is not None and dims and dims[0] == -1:
        dims[0] = batch_fixed
    return dims


def _warmup(bundle: Bundle, sample: Any, names: dict[str, str], max_batch: int,
            batch_fixed: int | None) -> tuple[dict[str, bytes], list[str]]:
    """A warm-up request made of the first golden sample's first item: Triton runs it when
    it loads the model, so the first client request doesn't pay for initialisation."""
    files: dict[str, bytes] = {}
    entries = []
    for index, spec in enumerate(bundle.inputs):
        if spec.name not in sample.inputs:
            raise UsageError(f"{bundle.golden_path}: golden sample 0 has no input "
                             f"'{spec.name}', which the manifest lists; re-export the bundle")
        value = np.ascontiguousarray(sample.inputs[spec.name])
        if not spec.accepts(value.shape) or value.dtype != numpy_dtype(spec.dtype):
            # Triton would refuse to load a model whose warm-up doesn't fit its inputs
            raise UsageError(f"{bundle.golden_path}: golden sample 0's '{spec.name}' is "
                             f"{value.dtype} {list(value.shape)}, the manifest says "
                             f"{spec.describe()}; re-export the bundle")
        if (max_batch or batch_fixed) and value.ndim:
            value = value[:1]
        dims = list(value.shape[1:]) if max_batch else list(value.shape)
        file = f"input_{index}"  # our name, never the tensor's: it becomes a path
        files[file] = value.astype(value.dtype.newbyteorder("<")).tobytes()
        entries.append(f"    inputs {{ key: {_quoted(names[spec.name])} value {{ data_type: "
                       f"{TRITON_DTYPES[spec.dtype]} dims: [ {', '.join(map(str, dims))} ] "
                       f"input_data_file: {_quoted(file)} }} }}")
    head = ["model_warmup [ {", '    name: "golden_sample_0"']
    if max_batch:
        head.append("    batch_size: 1")
    return files, [*head, *entries, "} ]"]


def validate(config: str, name: str) -> Any:
    """Parse the configuration with Triton's own protobuf schema; exit 3 without it."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise BackendUnavailable("validating a Triton configuration needs Triton's schema: "
                                 "pip install 'toolkit[triton]' (tritonclient[grpc])") from None
    parsed = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(config, parsed)
    except text_format.ParseError as err:  # our bug, never the user's: nothing is written
        raise UsageError(f"the generated config.pbtxt for '{name}' does not parse with "
                         f"Triton's schema ({err}); nothing was written") from None
    return parsed


def write(bundle: Bundle, model: TritonModel, repo: Path, *, force: bool = False) -> Path:
    """REPO/NAME, whole: built in a temporary directory beside it, then renamed into place,
    under an exclusive lock on REPO (the --force decision and the write are one step, so
    concurrent deploys can't overwrite each other). On any failure nothing is left: not the
    stage, not a REPO this call created; a full disk or a read-only REPO is exit 2."""
    from toolkit import transaction

    if repo.is_symlink() and not repo.exists():
        raise UsageError(f"--triton {repo} is a link to nothing; choose another repository")
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"--triton {repo} is a file, not a model repository directory")
    _check_apart(bundle.root, repo, model.name)
    created: list[Path] = []
    try:
        created = _make_dirs(repo)
        with transaction.locked(repo, wait_s=60, what="deploy"):
            return _write_locked(bundle, model, repo, force)
    except OSError as err:
        _remove_if_empty(created)
        raise UsageError(f"--triton {repo}: {err.strerror or err} while writing "
                         f"{model.name}; nothing was written") from None
    except BaseException:
        _remove_if_empty(created)
        raise


def _check_apart(bundle_root: Path, repo: Path, name: str) -> None:
    """REPO may not be the bundle or inside it (an entry would replace a bundle file), and
    REPO/NAME may not be the bundle or hold it (--force would remove the bundle)."""
    root = bundle_root.resolve()
    resolved = repo.resolve()
    if resolved == root or root in resolved.parents:
        raise UsageError(f"--triton {repo} is inside the bundle {bundle_root}; choose a "
                         "repository outside it")
    target = (repo / name).resolve()
    if target == root or target in root.parents:
        raise UsageError(f"--triton {repo} --name {name}: {repo / name} holds the bundle "
                         f"{bundle_root}; choose another name or repository")


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p, returning the directories this call itself created (outermost first): one
    that a concurrent deploy made in the meantime is not ours to remove."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing.append(candidate)
    made = []
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        made.append(directory)
    return made


def _remove_if_empty(created: list[Path]) -> None:
    """Take back the directories this call created, innermost first, only while empty:
    another deploy may have written into them since (it waited for our lock)."""
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            return


STAGE_PREFIX = ".toolkit-stage-"  # REPO/NAME being built; a killed deploy's is removed
OLD_PREFIX = ".toolkit-old-"  # REPO/NAME being replaced; a killed deploy's is put back


def _clean_stages(repo: Path) -> None:
    """What a killed deploy left in REPO (we hold REPO's lock, so no deploy is running): its
    stage goes, an entry it had moved aside comes back if nothing replaced it."""
    for entry in list(os.scandir(repo)):
        path = Path(entry.path)
        if not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith(OLD_PREFIX):
            for moved in list(path.iterdir()):
                if not (repo / moved.name).exists() and not (repo / moved.name).is_symlink():
                    moved.rename(repo / moved.name)
            shutil.rmtree(path, ignore_errors=True)
        elif entry.name.startswith(STAGE_PREFIX):
            shutil.rmtree(path, ignore_errors=True)


def _write_locked(bundle: Bundle, model: TritonModel, repo: Path, force: bool) -> Path:
    _clean_stages(repo)
    target = repo / model.name
    if (target.exists() or target.is_symlink()) and not force:
        raise UsageError(f"{target} exists; pass --force to replace it")
    spec = format_table.get(model.record.format).triton
    assert spec is not None
    source = bundle.checked_path(model.record)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{model.name}.", dir=repo))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the model from the server's user
    trash: Path | None = None
    try:
        (staging / "config.pbtxt").write_text(model.config)
        (staging / VERSION).mkdir()
        shutil.copyfile(source, staging / VERSION / spec.filename)
        fmt = format_table.get(model.record.format)
        for companion, served in zip(bundle.companion_paths(model.record),
                                     fmt.companions(spec.filename)):
            # companions pair by stem (model.xml + model.bin), or the main file names them
            name = companion.name if fmt.companions_named_inside else served
            shutil.copyfile(companion, staging / VERSION / name)
        (staging / "warmup").mkdir()
        for file, data in model.warmup.items():
            (staging / "warmup" / file).write_bytes(data)
        _write_client(bundle, model, staging)
        if target.is_symlink():
            target.unlink()  # --force replaces the link itself, never what it points at
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f"{OLD_PREFIX}{model.name}.", dir=repo))
            target.rename(trash / model.name)
            staging.rename(target)
            interrupts.record_change("completed")
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(target)
            interrupts.record_change("completed")
    except BaseException:
        if staging.exists():  # not placed: nothing of this deploy stays, the old entry back
            shutil.rmtree(staging, ignore_errors=True)
            if trash is not None and (trash / model.name).exists() and not target.exists():
                (trash / model.name).rename(target)
                shutil.rmtree(trash, ignore_errors=True)
            interrupts.record_change("rolled back")
        raise
    return target


def _write_client(bundle: Bundle, model: TritonModel, staging: Path) -> None:
    """The client example and what it compares against: the bundle's manifest (with only the
    served artifact) and golden samples."""
    from importlib import resources

    client_bundle = staging / CLIENT_BUNDLE
    client_bundle.mkdir()
    shutil.copyfile(bundle.golden_path, client_bundle / GOLDEN)
    manifest = bundle.manifest.model_copy(update={"artifacts": [model.record]}).to_json()
    manifest.pop("selected", None)
    write_json_atomic(client_bundle / MANIFEST, manifest)
    (staging / "client.json").write_text(json.dumps(model.client_spec(), indent=2) + "\n")
    template = resources.files("toolkit.deploy").joinpath("client_template.py").read_text()
    (staging / CLIENT).write_text(template)
