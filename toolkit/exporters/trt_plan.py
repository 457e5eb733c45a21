"""Every TensorRT decision, as pure functions: build options, optimization profiles, which API
calls a TensorRT version needs, the record kept per engine, and whether an engine may load here.

Imports no backend (no tensorrt, no torch), so all of it is tested on a CPU-only machine;
`toolkit.exporters.tensorrt` and `toolkit.runtime.tensorrt` only carry these plans out.
Facts come from the TensorRT 10.x/11.x Python API docs and the 10.x -> 11.x migration guide
(see docs/tensorrt.md).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import BackendUnavailable, UsageError
from toolkit.spec import TensorSpec, parse_input

Shape = tuple[int, ...]
#: one optimization profile: input name -> (min, opt, max) shapes
Profile = dict[str, tuple[Shape, Shape, Shape]]

INSTALL_HINT = "pip install 'toolkit[trt]' on the target GPU machine"
MIN_MAJOR = 10  # strongly typed networks and the name-based tensor API
SAME_CC_SINCE = (10, 9)  # HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY appeared in 10.9
AMPERE = (8, 0)

#: user spelling -> canonical level; canonical level -> tensorrt.HardwareCompatibilityLevel member
HARDWARE_LEVELS: dict[str, str] = {
    "none": "none", "off": "none",
    "ampere+": "ampere+", "ampere_plus": "ampere+", "ampere-plus": "ampere+",
    "same-compute-capability": "same-compute-capability",
    "same_compute_capability": "same-compute-capability", "same-cc": "same-compute-capability",
}
HARDWARE_ENUM = {
    "none": "NONE", "ampere+": "AMPERE_PLUS", "same-compute-capability": "SAME_COMPUTE_CAPABILITY",
}

#: CLI flags the rebuild command uses (the CLI must accept the same names)
CLI_FLAGS = {
    "workspace": "--workspace", "optimization_level": "--opt-level",
    "version_compatible": "--version-compatible", "hardware_compatibility": "--hardware-compat",
    "dla_core": "--dla-core", "profile": "--profile",
}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 2**20, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


# -- build options -------------------------------------------------------------------------
def parse_size(text: str, option: str = "--workspace") -> int:
    """Bytes from `4G`, `512M`, `1.5GiB`, `64MB`, `1024B` (binary units); a bare number is MiB,
    as in trtexec's --memPoolSize."""
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(f"{option} '{text}' is not a size; write e.g. 4G, 512M or 1024B")
    number, unit, tail = match.groups()
    unit = unit.lower()
    # "1024B" is plain bytes; any other unit is binary (K = 1024)
    scale = 1 if not unit and tail.lower() == "b" else _UNITS[unit]
    size = int(float(number) * scale)
    if size <= 0:
        raise UsageError(f"{option} '{text}' must be larger than zero")
    if size > 2**40:
        raise UsageError(f"{option} '{text}' is over 1 TiB; write the size with a unit, e.g. 4G")
    return size


def format_size(size: int) -> str:
    """The shortest exact spelling parse_size reads back: 4G, 512M, 1536K, 100B."""
    for unit, scale in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def parse_hardware_compatibility(text: str) -> str:
    key = str(text).strip().lower()
    if key not in HARDWARE_LEVELS:
        raise UsageError(
            f"--hardware-compat '{text}' is unknown; use none, ampere+ or same-compute-capability"
        )
    return HARDWARE_LEVELS[key]


def parse_profile(text: str, inputs: Sequence[TensorSpec]) -> Profile:
    """One extra optimization profile, written with the --input syntax, inputs separated by
    commas: `x:1-2-4x3x224x224,mask:1-2-4x224`. Inputs left out keep the bundle's range."""
    by_name = {spec.name: spec for spec in inputs}
    profile: Profile = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            spec = parse_input(part)
        except UsageError as err:
            raise UsageError(f"--profile '{text}': {err}") from None
        base = by_name.get(spec.name)
        if base is None:
            known = ", ".join(by_name) or "none"
            raise UsageError(f"--profile '{text}': no input named '{spec.name}' (inputs: {known})")
        problem = _profile_problem(base, spec)
        if problem:
            raise UsageError(f"--profile '{text}': {problem}")
        profile[spec.name] = (spec.min, spec.opt, spec.max)
    if not profile:
        raise UsageError(f"--profile '{text}' names no input; write e.g. x:1-2-4x3x224x224")
    for spec in inputs:
        profile.setdefault(spec.name, (spec.min, spec.opt, spec.max))
    return {spec.name: profile[spec.name] for spec in inputs}


def _profile_problem(base: TensorSpec, spec: TensorSpec) -> str | None:
    """Why a profile for `base` can't be used, or None. Profiles must stay inside the bundle's
    range: the runner checks feeds against the bundle's inputs, and static dims can't move."""
    if spec.rank != base.rank:
        return f"input '{base.name}' has rank {base.rank}, the profile gives {spec.rank} dims"
    ranges = zip(spec.min, spec.max, base.min, base.max, strict=True)
    for dim, (lo, hi, blo, bhi) in enumerate(ranges):
        if blo == bhi and (lo, hi) != (blo, bhi):
            return f"input '{base.name}' dimension {dim} is static ({blo}) in the model"
        if lo < blo or hi > bhi:
            return (
                f"input '{base.name}' dimension {dim} range {lo}-{hi} is outside the bundle's "
                f"{blo}-{bhi}; re-export with a wider --input"
            )
    return None


@dataclass(frozen=True)
class BuildOptions:
    """How to build one engine. Precision is not here: it lives in the ONNX graph (fp16 casts,
    Q/DQ nodes) and the network is always strongly typed (TensorRT 11 has no other mode)."""

    workspace: int | None = None  # bytes for MemoryPoolType.WORKSPACE; None = TensorRT default
    optimization_level: int = 3  # builder_optimization_level 0-5; TensorRT's default is 3
    timing_cache: str | None = None  # path; loaded when present, written back after the build
    version_compatible: bool = False  # BuilderFlag.VERSION_COMPATIBLE (embeds a lean runtime)
    hardware_compatibility: str = "none"  # none | ampere+ | same-compute-capability
    dla_core: int | None = None  # run on this DLA core, GPU fallback for unsupported layers
    gpu_fallback: bool = True  # BuilderFlag.GPU_FALLBACK with DLA
    #: extra optimization profiles: parsed, or --profile texts resolved against the inputs
    #: at build time (the CLI may not know the inputs yet); see `resolve_profiles`
    extra_profiles: tuple[Profile | str, ...] = ()
    strongly_typed: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if self.workspace is not None and self.workspace <= 0:
            raise UsageError(f"--workspace must be positive, got {self.workspace} bytes")
        if not 0 <= self.optimization_level <= 5:
            raise UsageError(f"--opt-level must be 0-5, got {self.optimization_level}")
        if self.hardware_compatibility not in HARDWARE_ENUM:
            raise UsageError(
                f"--hardware-compat '{self.hardware_compatibility}' is unknown; "
                "use none, ampere+ or same-compute-capability"
            )
        for profile in self.extra_profiles:
            if isinstance(profile, str):
                check_profile_syntax(profile)
        if self.dla_core is not None:
            if self.dla_core < 0:
                raise UsageError(f"--dla-core must be 0 or more, got {self.dla_core}")
            if self.hardware_compatibility != "none":
                # Hardware compatibility isn't supported on JetPack/DRIVE, the only DLA hosts.
                raise UsageError("--dla-core can't be combined with --hardware-compat")

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "optimization_level": self.optimization_level,
            "timing_cache": self.timing_cache,
            "version_compatible": self.version_compatible,
            "hardware_compatibility": self.hardware_compatibility,
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback,
            "extra_profiles": [
                p if isinstance(p, str) else profile_to_json(p) for p in self.extra_profiles
            ],
            "strongly_typed": True,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildOptions:
        return cls(
            workspace=data.get("workspace"),
            optimization_level=int(data.get("optimization_level", 3)),
            timing_cache=data.get("timing_cache"),
            version_compatible=bool(data.get("version_compatible", False)),
            hardware_compatibility=str(data.get("hardware_compatibility", "none")),
            dla_core=data.get("dla_core"),
            gpu_fallback=bool(data.get("gpu_fallback", True)),
            extra_profiles=tuple(
                p if isinstance(p, str) else profile_from_json(p)
                for p in data.get("extra_profiles", ())
            ),
        )


def build_options(
    inputs: Sequence[TensorSpec] | None = None,
    *,
    workspace: str | None = None,
    optimization_level: int | None = None,
    timing_cache: str | None = None,
    version_compatible: bool = False,
    hardware_compatibility: str | None = "none",
    dla_core: int | None = None,
    profiles: Sequence[str] = (),
) -> BuildOptions:
    """BuildOptions from CLI strings (`--workspace 4G --profile x:1-2-4x3x8x8 ...`).

    With `inputs`, profiles are checked against them now; without, only their syntax is, and
    `resolve_profiles` checks them when the bundle's inputs are known.
    """
    return BuildOptions(
        workspace=parse_size(workspace) if workspace else None,
        optimization_level=3 if optimization_level is None else int(optimization_level),
        timing_cache=str(timing_cache) if timing_cache else None,
        version_compatible=version_compatible,
        hardware_compatibility=parse_hardware_compatibility(hardware_compatibility or "none"),
        dla_core=dla_core,
        extra_profiles=tuple(
            parse_profile(text, inputs) if inputs is not None else text for text in profiles
        ),
    )


# -- profiles ------------------------------------------------------------------------------
def check_profile_syntax(text: str) -> None:
    """Raise UsageError when a --profile text isn't NAME:SHAPE[,NAME:SHAPE...]."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError(f"--profile '{text}' names no input; write e.g. x:1-2-4x3x224x224")
    for part in parts:
        try:
            parse_input(part)
        except UsageError as err:
            raise UsageError(f"--profile '{text}': {err}") from None


def resolve_profiles(inputs: Sequence[TensorSpec], options: BuildOptions) -> list[Profile]:
    """All optimization profiles for a build: the bundle's range, then the extra ones."""
    extra = [
        parse_profile(p, inputs) if isinstance(p, str) else p for p in options.extra_profiles
    ]
    return profiles_from_specs(inputs, extra)


def profiles_from_specs(
    inputs: Sequence[TensorSpec], extra: Sequence[Profile] = ()
) -> list[Profile]:
    """Optimization profiles: the bundle's min/opt/max first, then distinct extra ones.

    Profile 0 always covers the whole declared range, so any feed the bundle accepts runs.
    """
    if extra and not any(spec.dynamic_dims for spec in inputs):
        raise UsageError("--profile applies to dynamic inputs; every input of this model is static")
    names = [spec.name for spec in inputs]
    profiles: list[Profile] = [{s.name: (s.min, s.opt, s.max) for s in inputs}]
    for profile in extra:
        missing = [n for n in names if n not in profile]
        unknown = [n for n in profile if n not in names]
        if missing or unknown:
            raise UsageError(
                f"profile {profile_to_json(profile)} must give exactly the inputs {names}"
            )
        ordered = {n: tuple(tuple(int(d) for d in s) for s in profile[n]) for n in names}
        if ordered not in profiles:
            profiles.append(ordered)  # type: ignore[arg-type]
    return profiles


def needs_profiles(
    profiles: Sequence[Profile], network: Mapping[str, Sequence[int]] | None = None
) -> bool:
    """Whether the builder gets optimization profiles: a profile range is dynamic, or the
    parsed network has a dynamic (-1) dimension, even if the bundle pins it to one size."""
    if network and any(int(d) < 0 for dims in network.values() for d in dims):
        return True
    return any(lo != hi for p in profiles for lo, _, hi in p.values())


def profile_to_json(profile: Profile) -> dict[str, dict[str, list[int]]]:
    return {
        name: {"min": list(lo), "opt": list(mid), "max": list(hi)}
        for name, (lo, mid, hi) in profile.items()
    }


def profile_from_json(data: Mapping[str, Mapping[str, Sequence[int]]]) -> Profile:
    return {
        name: (tuple(d["min"]), tuple(d["opt"]), tuple(d["max"])) for name, d in data.items()
    }


def select_profile(profiles: Sequence[Profile], shapes: Mapping[str, Sequence[int]]) -> int:
    """Index of the profile to run these input shapes with.

    Profile 0 spans the whole declared range, so the narrowest profile that holds every shape
    wins: TensorRT tuned its kernels for that smaller range (ties go to the lower index).
    """
    fitting = [
        i for i, profile in enumerate(profiles)
        if all(_fits(shapes.get(name), rng) for name, rng in profile.items())
    ]
    if not fitting:
        wanted = {n: list(s) for n, s in shapes.items()}
        raise UsageError(f"no optimization profile of the engine accepts shapes {wanted}")
    return min(fitting, key=lambda i: (_volume_span(profiles[i]), i))


def _fits(shape: Sequence[int] | None, rng: tuple[Shape, Shape, Shape]) -> bool:
    lo, _, hi = rng
    return shape is not None and len(shape) == len(lo) and all(
        a <= d <= b for d, a, b in zip(shape, lo, hi, strict=True)
    )


def _volume_span(profile: Profile) -> int:
    span = 0
    for lo, _, hi in profile.values():
        for a, b in zip(lo, hi, strict=True):
            span += b - a
    return span


def check_network_inputs(
    network: Mapping[str, Sequence[int]], inputs: Sequence[TensorSpec]
) -> list[str]:
    """Problems between the parsed network's inputs (-1 = dynamic dim) and the bundle's specs."""
    problems: list[str] = []
    expected = [s.name for s in inputs]
    if sorted(network) != sorted(expected):
        return [f"the ONNX inputs {sorted(network)} don't match the bundle's {sorted(expected)}"]
    for spec in inputs:
        dims = list(network[spec.name])
        if len(dims) != spec.rank:
            problems.append(f"input '{spec.name}' has rank {len(dims)} in the ONNX, {spec.rank} "
                            "in the bundle")
            continue
        for i, (dim, lo, hi) in enumerate(zip(dims, spec.min, spec.max, strict=True)):
            if dim >= 0 and not lo == hi == dim:
                problems.append(
                    f"input '{spec.name}' dimension {i} is fixed to {dim} in the ONNX but "
                    f"{lo}-{hi} in the bundle"
                )
    return problems


# -- TensorRT versions and the API each one needs -----------------------------------------
def parse_version(text: str | None) -> tuple[int, ...]:
    """`10.3.0.30` -> (10, 3, 0, 30); `11.0.0b1` -> (11, 0, 0); leading digits of each part."""
    parts: list[int] = []
    for piece in str(text or "").strip().split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    if not parts:
        raise UsageError(f"'{text}' is not a TensorRT version")
    return tuple(parts)


@dataclass(frozen=True)
class ApiPlan:
    """Which TensorRT Python calls to make for one installed version."""

    version: tuple[int, ...]
    #: NetworkDefinitionCreationFlag members OR-ed into create_network()
    network_flags: tuple[str, ...]
    #: whether HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY exists
    same_compute_capability: bool
    #: weak typing (BuilderFlag.FP16/INT8, calibrators) still exists; never used by toolkit
    weak_typing_available: bool

    @property
    def major(self) -> int:
        return self.version[0]


def api_plan(trt_version: str) -> ApiPlan:
    """The calls for this TensorRT version; below 10 is refused (BackendUnavailable, exit 3).

    10.x: strong typing is opt-in, so create_network(1 << STRONGLY_TYPED); EXPLICIT_BATCH is
    ignored (networks are always explicit batch) and never passed.
    11.x: strong typing is the only mode; STRONGLY_TYPED is deprecated and ignored and
    EXPLICIT_BATCH is gone, so create_network(0).
    """
    version = parse_version(trt_version)
    if version[0] < MIN_MAJOR:
        raise BackendUnavailable(
            f"TensorRT {trt_version} is installed; toolkit needs TensorRT 10 or newer "
            "(JetPack 6.1+ ships 10.3): upgrade TensorRT"
        )
    strong = ("STRONGLY_TYPED",) if version[0] == 10 else ()
    return ApiPlan(
        version=version,
        network_flags=strong,
        same_compute_capability=version[:2] >= SAME_CC_SINCE,
        weak_typing_available=version[0] < 11,
    )


def check_options_supported(options: BuildOptions, plan: ApiPlan) -> None:
    if options.hardware_compatibility == "same-compute-capability" and not (
        plan.same_compute_capability
    ):
        have = ".".join(map(str, plan.version))
        raise UsageError(
            f"--hardware-compat same-compute-capability needs TensorRT 10.9 or newer; this "
            f"machine has {have}: use ampere+ or none"
        )


# -- parser errors -------------------------------------------------------------------------
def format_parser_errors(
    onnx_path: str, errors: Sequence[Mapping[str, Any]], limit: int = 3
) -> str:
    """One line naming the failing ONNX nodes: `node 'conv1' (Conv): <desc>; ...`."""
    if not errors:
        return f"TensorRT could not parse {onnx_path} (the parser gave no reason)"
    parts = []
    for err in errors[:limit]:
        name, op = err.get("node_name") or "", err.get("node_operator") or ""
        where = f"node '{name}'" if name else (f"node #{err['node']}" if err.get("node", -1) >= 0
                                               else "graph")
        if op:
            where += f" ({op})"
        desc = " ".join(str(err.get("desc", "")).split())
        parts.append(f"{where}: {desc}")
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return f"TensorRT could not parse {onnx_path}: " + "; ".join(parts) + more


def last_errors(messages: Sequence[tuple[str, str]], limit: int = 2) -> str:
    """The last error lines a TensorRT logger caught ((severity, text) pairs), joined."""
    wanted = ("ERROR", "INTERNAL_ERROR")
    errors = [" ".join(text.split()) for sev, text in messages if sev in wanted]
    return "; ".join(errors[-limit:])


# -- the engine record and the pre-load check ----------------------------------------------
def engine_record(
    *,
    trt_version: str,
    gpu: Mapping[str, Any] | None,
    platform: str,
    options: BuildOptions,
    profiles: Sequence[Profile],
    build_seconds: float,
    size_bytes: int,
    network_layers: int | None,
    engine_layers: int | None,
    timing_cache: str | None,
    built_at: str,
) -> dict[str, Any]:
    """Manifest fields recorded per engine: what it needs to load and how it was built."""
    return {
        "tensorrt": trt_version,
        "gpu": dict(gpu) if gpu else None,
        "platform": platform,
        "compatibility": {
            "version_compatible": options.version_compatible,
            "hardware": options.hardware_compatibility,
        },
        "dla_core": options.dla_core,
        "strongly_typed": True,
        "profiles": [profile_to_json(p) for p in profiles],
        "build": {
            "options": options.to_dict(),
            "seconds": round(build_seconds, 3),
            "timing_cache": timing_cache,
            "built_at": built_at,
        },
        "layers": {"network": network_layers, "engine": engine_layers},
        "size_bytes": size_bytes,
    }


def machine(
    trt_version: str | None,
    gpu: Mapping[str, Any] | None,
    platform: str,
    dla_cores: int | None = None,
) -> dict[str, Any]:
    """Describe this machine for `preflight` (the runtime gathers the facts)."""
    return {"tensorrt": trt_version, "gpu": dict(gpu) if gpu else None,
            "platform": platform, "dla_cores": dla_cores}


def rebuild_command(bundle: str, options: BuildOptions | None = None) -> str:
    """The command that builds the engine again on this machine, with the recorded options
    (the timing cache path is left out: it belongs to the machine that wrote it)."""
    args = ["toolkit", "export", shlex.quote(str(bundle)), "--to", "trt"]
    if options is not None:
        if options.workspace:
            args += [CLI_FLAGS["workspace"], format_size(options.workspace)]
        if options.optimization_level != 3:
            args += [CLI_FLAGS["optimization_level"], str(options.optimization_level)]
        if options.version_compatible:
            args.append(CLI_FLAGS["version_compatible"])
        if options.hardware_compatibility != "none":
            args += [CLI_FLAGS["hardware_compatibility"], options.hardware_compatibility]
        if options.dla_core is not None:
            args += [CLI_FLAGS["dla_core"], str(options.dla_core)]
        for profile in options.extra_profiles:
            text = profile if isinstance(profile, str) else describe_profile(profile)
            args += [CLI_FLAGS["profile"], shlex.quote(text)]
    return " ".join(args)


def describe_profile(profile: Profile) -> str:
    """A profile in the --profile syntax (what parse_profile reads)."""
    parts = []
    for name, (lo, mid, hi) in profile.items():
        dims = [str(a) if a == c else f"{a}-{b}-{c}" for a, b, c in zip(lo, mid, hi, strict=True)]
        parts.append(f"{name}:{'x'.join(dims) or 'scalar'}")
    return ",".join(parts)


@dataclass(frozen=True)
class Decision:
    """Whether a recorded engine may load on this machine, and what to do when it may not."""

    ok: bool
    reason: str
    rebuild: str
    warnings: tuple[str, ...] = ()

    def raise_if_blocked(self) -> None:
        if not self.ok:
            raise BackendUnavailable(f"{self.reason}; rebuild it here: {self.rebuild}")


def preflight(
    record: Mapping[str, Any], here: Mapping[str, Any], bundle: str = "BUNDLE"
) -> Decision:
    """Check a recorded engine against this machine before deserializing it.

    Engines are tied to the TensorRT version (unless built version-compatible: then any newer
    runtime), to the GPU's compute capability (unless built hardware-compatible) and to the
    platform; TensorRT only says so with an opaque deserialization error.
    """
    options = BuildOptions.from_dict((record.get("build") or {}).get("options") or {})
    command = rebuild_command(bundle, options)

    def block(reason: str) -> Decision:
        return Decision(False, reason, command)

    here_trt = here.get("tensorrt")
    if not here_trt:
        return Decision(False, f"TensorRT is not installed here ({INSTALL_HINT})", command)
    here_gpu = here.get("gpu")
    if not here_gpu:
        return block("no CUDA GPU is visible here; TensorRT engines run on NVIDIA GPUs")

    built_platform, here_platform = record.get("platform"), here.get("platform")
    if built_platform and here_platform and built_platform != here_platform:
        return block(f"the engine was built on {built_platform}, this machine is {here_platform}")

    version_problem = _version_problem(record, str(here_trt))
    if version_problem:
        return block(version_problem)

    built_gpu = record.get("gpu") or {}
    gpu_problem, warnings = _gpu_problem(built_gpu, here_gpu, record)
    if gpu_problem:
        return block(gpu_problem)

    dla = record.get("dla_core")
    cores = here.get("dla_cores")
    if dla is not None and cores is not None and dla >= cores:
        return block(f"the engine runs on DLA core {dla}, this machine has {cores} DLA core(s)")
    return Decision(True, "engine matches this machine", command, tuple(warnings))


def _version_problem(record: Mapping[str, Any], here_trt: str) -> str | None:
    built_trt = record.get("tensorrt")
    if not built_trt:
        return "the engine record lacks its TensorRT version"
    built, here = parse_version(str(built_trt)), parse_version(here_trt)
    if (record.get("compatibility") or {}).get("version_compatible"):
        if here < built:
            return (f"the engine was built version-compatible with TensorRT {built_trt}, which "
                    f"runs only on that version or newer; this machine has {here_trt}")
        return None
    if built != here:
        return f"the engine was built with TensorRT {built_trt}, this machine has {here_trt}"
    return None


def _gpu_problem(
    built: Mapping[str, Any], here: Mapping[str, Any], record: Mapping[str, Any]
) -> tuple[str | None, list[str]]:
    level = (record.get("compatibility") or {}).get("hardware", "none")
    b_cc, h_cc = _cc(built.get("compute_capability")), _cc(here.get("compute_capability"))
    b_name, h_name = built.get("name", "?"), here.get("name", "?")
    if b_cc is None or h_cc is None:
        return "the GPU compute capability of the engine or of this machine is unknown", []
    integrated = built.get("integrated"), here.get("integrated")
    if None not in integrated and integrated[0] != integrated[1]:
        kinds = ["integrated (Jetson)" if i else "discrete" for i in integrated]
        return f"the engine was built for a {kinds[0]} GPU, this GPU is {kinds[1]}", []
    where = f"{b_name} (sm {_cc_text(b_cc)})"
    if level == "ampere+":
        if h_cc < AMPERE:
            return (f"the engine is hardware-compatible from Ampere (sm 8.0) up; this GPU is "
                    f"{h_name} (sm {_cc_text(h_cc)})"), []
        return None, []
    if b_cc != h_cc:
        hint = "" if level != "none" else " (build with --hardware-compat ampere+ to share one)"
        return (f"the engine was built for {where}, this GPU is {h_name} "
                f"(sm {_cc_text(h_cc)}){hint}"), []
    if level == "none" and b_name != h_name:
        return None, [f"the engine was tuned on {b_name}, this GPU is {h_name} with the same "
                      "compute capability: it loads, but rebuild here for best speed"]
    return None, []


def _cc(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    match = re.match(r"^\s*(\d+)\.(\d+)\s*$", str(value))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


# -- runtime bindings ----------------------------------------------------------------------
#: tensorrt.DataType member name -> numpy-style dtype name of the buffer toolkit allocates
TRT_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
    "UINT8": "uint8", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
}


def buffer_dtype(tensor: str, trt_dtype: str) -> str:
    """The dtype name of an IO buffer for a TensorRT DataType name (FLOAT -> float32)."""
    if trt_dtype not in TRT_DTYPES:
        raise UsageError(
            f"engine tensor '{tensor}' has type {trt_dtype}, which toolkit can't bind; keep the "
            "model's inputs and outputs in fp32/fp16/bf16/int types (quantize inside the graph)"
        )
    return TRT_DTYPES[trt_dtype]


def io_problems(
    engine_inputs: Sequence[str],
    engine_outputs: Sequence[str],
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> list[str]:
    """How the engine's IO tensors differ from the bundle's: inputs must match exactly, every
    bundle output must exist (extra engine outputs are computed but not returned)."""
    problems = []
    if sorted(engine_inputs) != sorted(inputs):
        problems.append(f"engine inputs {sorted(engine_inputs)} != bundle inputs {sorted(inputs)}")
    missing = [name for name in outputs if name not in engine_outputs]
    if missing:
        problems.append(f"bundle outputs {missing} are not outputs of the engine "
                        f"({sorted(engine_outputs)})")
    return problems


def unresolved_dims(shape: Sequence[int]) -> bool:
    """An output shape TensorRT can't know before running (data-dependent: -1 dims)."""
    return any(int(d) < 0 for d in shape)
