"""How to build an engine: workspace, optimization level, timing cache, compatibility
flags, DLA, profiles, parsed and checked. Pure; no tensorrt import."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.backends.trt.profiles import (
    Profile,
    check_profile_syntax,
    parse_profile,
    profile_from_json,
    profile_to_json,
)
from toolkit.errors import UsageError
from toolkit.groups import flag, flags_of

INSTALL_HINT = ("pip install 'toolkit[trt]' on the target GPU machine (CUDA 12 driver; "
                "'toolkit[trt-cu13]' for a CUDA 13 driver); on a Jetson, use the TensorRT "
                "JetPack ships (JetPack 6: 10.3, apt's python3-libnvinfer), never pip's")
MIN_MAJOR = 10  # strongly typed networks and the name-based tensor API
SAME_CC_SINCE = (10, 9)  # HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY appeared in 10.9
AMPERE = (8, 0)
DLA_PRECISIONS = ("fp16", "int8")  # DLA has no fp32 or bf16 layers

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

if TYPE_CHECKING:  # pragma: no cover
    from toolkit.spec import TensorSpec

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 2**20, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


# -- build options -------------------------------------------------------------------------
def parse_size(text: str, option: str = "--workspace") -> int:
    """Bytes from `4G`, `512M`, `1.5GiB`, `64MB`, `1024B` (binary units); a bare number is MiB,
    as in trtexec's --memPoolSize."""
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(f"{option} {text!r} is not a size; write e.g. 4G, 512M or 1024B")
    number, unit, tail = match.groups()
    unit = unit.lower()
    # "1024B" is plain bytes; any other unit is binary (K = 1024)
    scale = 1 if not unit and tail.lower() == "b" else _UNITS[unit]
    size = int(float(number) * scale)
    if size <= 0:
        raise UsageError(f"{option} {text!r} must be larger than zero")
    if size > 2**40:
        raise UsageError(f"{option} {text!r} is over 1 TiB; write the size with a unit, e.g. 4G")
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
            f"--hardware-compat {text!r} is unknown; use none, ampere+ or same-compute-capability"
        )
    return HARDWARE_LEVELS[key]


@dataclass(frozen=True)
class BuildOptions:
    """How to build one engine: the TensorRT option group (`--workspace`, `--opt-level`, ...).
    Precision is not here: it lives in the ONNX graph (fp16 casts, Q/DQ nodes) and the network
    is always strongly typed (TensorRT 11 has no other mode). Sizes and compatibility levels
    may be given as the command line spells them; they are read into canonical values."""

    title: ClassVar[str] = "TensorRT"

    #: bytes for MemoryPoolType.WORKSPACE (or a size text, 4G); None = TensorRT's default
    workspace: int | None = flag(None, "--workspace", "TensorRT workspace pool limit, e.g. 4G.",
                                 cli_type=str | None)
    #: builder_optimization_level 0-5; TensorRT's default is 3
    optimization_level: int = flag(3, "--opt-level", "TensorRT builder optimization level 0-5.")
    #: path; loaded when present, written back after the build
    timing_cache: str | None = flag(
        None, "--timing-cache", "TensorRT timing cache file, reused across builds.",
        cli_type=Path | None)
    #: BuilderFlag.VERSION_COMPATIBLE (embeds a lean runtime)
    version_compatible: bool = flag(False, "--version-compatible",
                                    "TensorRT: build a version-compatible engine.")
    hardware_compatibility: str = flag(  # none | ampere+ | same-compute-capability
        "none", "--hardware-compat",
        "TensorRT hardware compatibility: none, ampere+, same-compute-capability.")
    #: run on this DLA core, GPU fallback for unsupported layers
    dla_core: int | None = flag(None, "--dla-core",
                                "TensorRT: run on this DLA core, GPU fallback on.")
    gpu_fallback: bool = True  # BuilderFlag.GPU_FALLBACK with DLA
    #: extra optimization profiles: parsed, or --profile texts resolved against the inputs
    #: at build time (the CLI may not know the inputs yet); see `resolve_profiles`
    extra_profiles: tuple[Profile | str, ...] = flag(
        (), "--profile", "Extra TensorRT optimization profile, --input syntax. Repeatable.",
        cli_type=list[str] | None, cli_default=None)
    #: how the engine is made: TensorRT's ONNX parser, or Torch-TensorRT from the model
    via: str = flag("onnx", "--via", "TensorRT route: onnx (parser), torch-compile or "
                    "torchscript (Torch-TensorRT).")
    strongly_typed: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.workspace, str):
            object.__setattr__(self, "workspace", parse_size(self.workspace))
        object.__setattr__(self, "hardware_compatibility",
                           parse_hardware_compatibility(self.hardware_compatibility))
        object.__setattr__(self, "via", check_route(self.via))
        object.__setattr__(self, "extra_profiles", tuple(self.extra_profiles or ()))
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", str(self.timing_cache) or None)
        if self.workspace is not None and self.workspace <= 0:
            raise UsageError(f"--workspace must be positive, got {self.workspace} bytes")
        if not 0 <= self.optimization_level <= 5:
            raise UsageError(f"--opt-level must be 0-5, got {self.optimization_level}")
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
            "via": self.via,
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
            via=str(data.get("via", "onnx")),
            extra_profiles=tuple(
                p if isinstance(p, str) else profile_from_json(p)
                for p in data.get("extra_profiles", ())
            ),
        )


def build_options(inputs: Sequence[TensorSpec] | None = None, **fields: Any) -> BuildOptions:
    """BuildOptions whose --profile texts are checked against `inputs` now (without inputs,
    only their syntax is, and `resolve_profiles` checks them when the bundle's are known)."""
    options = BuildOptions(**fields)
    if inputs is None:
        return options
    return replace(options, extra_profiles=tuple(
        parse_profile(p, inputs) if isinstance(p, str) else p for p in options.extra_profiles))


def cli_flag(field_name: str) -> str:
    """The command-line flag of a BuildOptions field (the rebuild command a note prints)."""
    return next(how.name for f, how in flags_of(BuildOptions) if f.name == field_name)


#: how an engine is made: TensorRT's ONNX parser, or Torch-TensorRT from the PyTorch model
ROUTES = ("onnx", "torch-compile", "torchscript")


def check_route(via: str) -> str:
    """The --via value, canonical; UsageError naming the routes."""
    key = via.strip().lower().replace("_", "-")
    aliases = {"torch.compile": "torch-compile", "dynamo": "torch-compile", "ts": "torchscript"}
    key = aliases.get(key, key)
    if key not in ROUTES:
        raise UsageError(f"--via {via}: use one of {', '.join(ROUTES)}")
    return key
