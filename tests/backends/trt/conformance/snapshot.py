"""Regenerate a TensorRT API snapshot from NVIDIA's real Python bindings wheel.

    python -m tests.backends.trt.conformance.snapshot 10.3.0 10.13.3.9 11.4.0.106

For each version it downloads `tensorrt-cu12-bindings==VERSION` for this machine's Python
(the wheel is ~1.3 MB; TensorRT's libraries are not needed and can't be downloaded here), links
the module against empty stand-ins for `libnvinfer`, `libnvinfer_plugin` and `libnvonnxparser`
(the bindings only call five factory functions, never at import), imports it, and writes every
registered name with its pybind11 signatures to `api/trt-MAJOR.MINOR.json`: module functions,
classes, their methods (each overload's signature line), properties (type, writable), enum
members and class-level values. Nothing of NVIDIA's is stored but names and signatures.

Run it when a TensorRT release lands, then add the version to `SNAPSHOTS` in `fake_trt.py`.
Needs network access (pip) and a C compiler (cc).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
API_DIR = HERE / "api"

#: every symbol the bindings import from TensorRT's libraries (nm -D --undefined-only)
_STUB_C = """
void* createInferBuilder_INTERNAL(void* a, int v){return 0;}
void* createInferRefitter_INTERNAL(void* a, void* b, int v){return 0;}
void* createInferRuntime_INTERNAL(void* a, int v){return 0;}
void* createNvOnnxParserRefitter_INTERNAL(void* a, void* b, int v){return 0;}
void* createNvOnnxParser_INTERNAL(void* a, void* b, int v){return 0;}
void* getBuilderPluginRegistry(int a){return 0;}
int getNvOnnxParserVersion(void){return 0;}
void* getPluginRegistry(void){return 0;}
int initLibNvInferPlugins(void* l, const char* n){return 0;}
int getInferLibVersion(void){return 0;}
"""

#: run inside the child process that imports the real bindings
_DUMP = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import tensorrt_bindings as trt

def first_lines(doc, name):
    """pybind11 puts one `name(params) -> ret` line per overload at the top of __doc__."""
    sigs = []
    for line in (doc or "").splitlines():
        line = line.strip()
        for prefix in ("", "1. ", "2. ", "3. ", "4. ", "5. ", "6. ", "7. ", "8. ", "9. "):
            if line.startswith(prefix + name + "(") and "->" in line:
                sigs.append(line[len(prefix):])
    return sigs

def prop_type(prop):
    sig = (prop.fget.__doc__ or "").strip().splitlines()
    text = sig[0] if sig else ""
    return text.split("->", 1)[1].strip() if "->" in text else "object"

def describe(cls, qual, out):
    entry = {"methods": {}, "properties": {}, "members": {}, "values": {}, "bases": []}
    entry["bases"] = [b.__name__ for b in cls.__mro__[1:] if b.__module__.startswith("tensorrt")]
    members = getattr(cls, "__members__", None)
    if isinstance(members, dict):
        entry["members"] = {k: int(v) for k, v in members.items()}
    for name, value in vars(cls).items():
        if name.startswith("__") and name not in ("__init__", "__len__", "__getitem__",
                                                  "__setitem__", "__iter__", "__enter__",
                                                  "__exit__", "__buffer__"):
            continue
        if name == "_pybind11_conduit_v1_" or name in entry["members"]:
            continue
        if isinstance(value, type):
            describe(value, f"{qual}.{name}", out)
        elif isinstance(value, property):
            entry["properties"][name] = {"type": prop_type(value),
                                         "writable": value.fset is not None}
        elif callable(value) or type(value).__name__ in ("instancemethod", "staticmethod"):
            fn = getattr(cls, name)
            doc = getattr(fn, "__doc__", "") or ""
            entry["methods"][name] = (first_lines(doc, name)
                                      or [f"{name}(*args, **kwargs) -> object"])
        elif type(value).__module__.startswith("tensorrt"):
            entry["values"][name] = f"{type(value).__qualname__}.{value.name}"
    out[qual] = entry

classes, functions, values = {}, {}, {}
for name, value in vars(trt.tensorrt).items():
    if name.startswith("_"):
        continue
    if isinstance(value, type):
        describe(value, name, classes)
    elif callable(value):
        functions[name] = first_lines(value.__doc__, name)
    elif type(value).__module__.startswith("tensorrt"):
        values[name] = f"{type(value).__qualname__}.{value.name}"
json.dump({"tensorrt": trt.__version__, "classes": classes, "functions": functions,
           "values": values}, sys.stdout, indent=1, sort_keys=True)
'''


def snapshot(version: str, work: Path) -> dict:
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "-d", str(wheels), f"tensorrt-cu12-bindings=={version}"],
        check=True,
    )
    wheel = next(wheels.glob(f"tensorrt_cu12_bindings-{version}*.whl"))
    unpacked = work / f"bindings-{version}"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    libs = work / f"libs-{version}"
    libs.mkdir()
    (libs / "stub.c").write_text(_STUB_C)
    major = version.split(".")[0]
    for lib in ("nvinfer", "nvinfer_plugin", "nvonnxparser"):
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(libs / f"lib{lib}.so.{major}"),
                        str(libs / "stub.c")], check=True)
    dumped = subprocess.run(
        [sys.executable, "-c", _DUMP, str(unpacked)], check=True, capture_output=True, text=True,
        env={"LD_LIBRARY_PATH": str(libs), "PATH": "/usr/bin:/bin"},
    )
    data = json.loads(dumped.stdout)
    data["source"] = (f"tensorrt-cu12-bindings {version} ({wheel.name}): names and pybind11 "
                      "signatures registered by the compiled module")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", help="tensorrt-cu12-bindings versions")
    args = parser.parse_args(argv)
    API_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for version in args.versions:
            data = snapshot(version, Path(tmp))
            line = ".".join(version.split(".")[:2])
            dest = API_DIR / f"trt-{line}.json"
            dest.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            print(f"{dest}: {len(data['classes'])} classes, {len(data['functions'])} functions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
