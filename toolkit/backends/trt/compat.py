"""Which API calls a TensorRT version needs, the record kept per engine, and whether an
engine may load on this machine (preflight). Pure; facts from the TensorRT 10.x/11.x docs."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.backends.trt.options import (
    AMPERE,
    INSTALL_HINT,
    MIN_MAJOR,
    SAME_CC_SINCE,
    BuildOptions,
    cli_flag,
    format_size,
)
from toolkit.backends.trt.profiles import Profile, profile_to_json
from toolkit.errors import BackendUnavailable, UsageError


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
            args += [cli_flag("workspace"), format_size(options.workspace)]
        if options.optimization_level != 3:
            args += [cli_flag("optimization_level"), str(options.optimization_level)]
        if options.version_compatible:
            args.append(cli_flag("version_compatible"))
        if options.hardware_compatibility != "none":
            args += [cli_flag("hardware_compatibility"), options.hardware_compatibility]
        if options.dla_core is not None:
            args += [cli_flag("dla_core"), str(options.dla_core)]
        for profile in options.extra_profiles:
            text = profile if isinstance(profile, str) else describe_profile(profile)
            args += [cli_flag("extra_profiles"), shlex.quote(text)]
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
    engine: Mapping[str, Any], here: Mapping[str, Any], bundle: str = "BUNDLE"
) -> Decision:
    """Check a recorded engine against this machine before deserializing it.

    Engines are tied to the TensorRT version (unless built version-compatible: then any newer
    runtime), to the GPU's compute capability (unless built hardware-compatible) and to the
    platform; TensorRT only says so with an opaque deserialization error.
    """
    options = BuildOptions.from_dict((engine.get("build") or {}).get("options") or {})
    command = rebuild_command(bundle, options)

    def block(reason: str) -> Decision:
        return Decision(False, reason, command)

    here_trt = here.get("tensorrt")
    if not here_trt:
        return Decision(False, f"TensorRT is not installed here ({INSTALL_HINT})", command)
    here_gpu = here.get("gpu")
    if not here_gpu:
        return block("no CUDA GPU is visible here; TensorRT engines run on NVIDIA GPUs")

    built_platform, here_platform = engine.get("platform"), here.get("platform")
    if built_platform and here_platform and built_platform != here_platform:
        return block(f"the engine was built on {built_platform}, this machine is {here_platform}")

    version_problem = _version_problem(engine, str(here_trt))
    if version_problem:
        return block(version_problem)

    built_gpu = engine.get("gpu") or {}
    gpu_problem, warnings = _gpu_problem(built_gpu, here_gpu, engine)
    if gpu_problem:
        return block(gpu_problem)

    dla = engine.get("dla_core")
    cores = here.get("dla_cores")
    if dla is not None and cores is not None and dla >= cores:
        return block(f"the engine runs on DLA core {dla}, this machine has {cores} DLA core(s)")
    return Decision(True, "engine matches this machine", command, tuple(warnings))


def _version_problem(engine: Mapping[str, Any], here_trt: str) -> str | None:
    built_trt = engine.get("tensorrt")
    if not built_trt:
        return "the engine engine lacks its TensorRT version"
    built, here = parse_version(str(built_trt)), parse_version(here_trt)
    if (engine.get("compatibility") or {}).get("version_compatible"):
        if here < built:
            return (f"the engine was built version-compatible with TensorRT {built_trt}, which "
                    f"runs only on that version or newer; this machine has {here_trt}")
        if here[0] > built[0] + 1:
            # version compatibility spans later releases of the same and the next major only
            return (f"the engine was built version-compatible with TensorRT {built_trt}, which "
                    f"runs up to TensorRT {built[0] + 1}.x; this machine has {here_trt}")
        return None
    if built != here:
        return f"the engine was built with TensorRT {built_trt}, this machine has {here_trt}"
    return None


def _gpu_problem(
    built: Mapping[str, Any], here: Mapping[str, Any], engine: Mapping[str, Any]
) -> tuple[str | None, list[str]]:
    level = (engine.get("compatibility") or {}).get("hardware", "none")
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
