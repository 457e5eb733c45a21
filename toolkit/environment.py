"""What machine and library versions produced a result: recorded in manifests and benchmarks."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from functools import lru_cache
from typing import Any

#: recorded for every run; each format adds its own (`Format.libraries`)
BASE_LIBRARIES = ("torch", "torchvision", "pytorch-lightning", "numpy")


def libraries() -> tuple[str, ...]:
    """The distributions whose versions a run records: the base ones and every format's."""
    from toolkit import formats

    named = [lib for fmt in formats.all_formats() for lib in fmt.libraries]
    return tuple(dict.fromkeys((*BASE_LIBRARIES, *named)))


def library_version(dist: str) -> str | None:
    """Installed version of a distribution, read from metadata (imports nothing)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features that decide which kernels run (VNNI for INT8, AVX-512)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "f16c",
                              "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16")
                    return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def gpu_info() -> dict[str, Any] | None:
    """Name and compute capability of CUDA device 0, when torch is loaded and sees one."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
    }


def describe() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "gpu": gpu_info(),
        "libraries": {name: v for name in libraries() if (v := library_version(name))},
    }


# The pip extra that brings each optional module (pyproject.toml's optional-dependencies);
# each format's runtime module brings its own (the format table's `extra`).
EXTRAS = {"torch": "export", "torchvision": "export", "lightning": "export",
          "pytorch_lightning": "export", "onnxscript": "export", "matplotlib": "plot"}


def extra_of(module: str) -> str | None:
    """The pip extra that brings `module`: a format's runtime module names its format's."""
    from toolkit import formats

    by_format = {f.runtime_module: f.extra for f in formats.all_formats()
                 if f.runtime_module not in EXTRAS}
    return EXTRAS.get(module) or by_format.get(module)


def torch_enum_notice(record: Any) -> bool:
    """A logging filter: False for torch's notice, one line per enum, that an Enum registered
    as a pytree constant is now natively supported (torchao registers a dozen when it is
    imported, by an edge runtime or by transformers); everything else passes."""
    return "is an Enum subclass" not in str(getattr(record, "msg", ""))


#: the logger that notice comes from
TORCH_PYTREE_LOGGER = "torch.utils._pytree"


def require_module(module: str, purpose: str, extra: str | None = None) -> Any:
    """Import an optional dependency, or BackendUnavailable (exit 3) naming the extra (a
    format passes its own `Format.extra`)."""
    import importlib

    from toolkit.errors import BackendUnavailable

    try:
        return importlib.import_module(module)
    except ImportError as err:
        root = module.split(".")[0]
        extra = extra or extra_of(root)
        how = f"pip install 'toolkit[{extra}]'" if extra else f"pip install {root}"
        raise BackendUnavailable(f"{purpose} needs {root}, which isn't installed here "
                                 f"({err.name or root} missing); {how}") from None
