"""Strict objects generated from a TensorRT API snapshot (conformance, never "run").

A snapshot (`api/trt-*.json`, written by `snapshot.py` from NVIDIA's bindings wheel) lists what
one TensorRT version registers: classes, methods with their pybind11 signatures, properties,
enums. `StrictModule(snapshot, behaviours)` turns it into a module that behaves like the
bindings at the boundary:

- a name outside the snapshot raises AttributeError naming the version;
- every call is checked against the overloads: arity, keyword names, and the primitive types
  pybind11 enforces (int, float, str, buffer, enums and classes of the module, Dims);
- writable and read-only properties as registered; other attributes can't be set, except on
  Python subclasses (pybind11 gives those a __dict__);
- a registered method without a behaviour raises NotImplementedError naming it, so a test
  never passes through something the fake can't model;
- every call is recorded (`module._state.calls`), so tests can assert ordering rules.
"""

from __future__ import annotations

import importlib.machinery
import json
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

API_DIR = Path(__file__).resolve().parent / "api"
PREFIXES = ("tensorrt_bindings.tensorrt.", "tensorrt.")


@cache
def load_snapshot(line: str) -> dict[str, Any]:
    return json.loads((API_DIR / f"trt-{line}.json").read_text())


# -- signatures ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    type: str
    has_default: bool
    kind: str = "plain"  # plain | args | kwargs


@dataclass(frozen=True)
class Overload:
    text: str
    params: tuple[Param, ...]


def _split_top(text: str) -> list[str]:
    parts, depth, current, quote = [], 0, [], ""
    for ch in text:
        if quote:
            current.append(ch)
            quote = "" if ch == quote else quote
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[(<{":
            depth += 1
        elif ch in "])>}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def short_type(text: str) -> str:
    for prefix in PREFIXES:
        text = text.replace(prefix, "")
    return text.strip()


@cache
def parse_overload(text: str) -> Overload:
    head = text.rsplit("->", 1)[0].strip()
    inner = head[head.index("(") + 1: head.rindex(")")]
    params = []
    for index, part in enumerate(_split_top(inner)):
        if part.startswith("**"):
            params.append(Param(part[2:], "object", True, "kwargs"))
            continue
        if part.startswith("*"):
            params.append(Param(part[1:] or "args", "object", True, "args"))
            continue
        name, _, rest = part.partition(":")
        type_text, eq, _default = rest.partition("=")
        name = name.strip()
        if index == 0 and name in ("self", "arg0"):
            continue
        params.append(Param(name, short_type(type_text) or "object", bool(eq)))
    return Overload(text, tuple(params))


# -- type checks (what pybind11's casters accept) ------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) or (
        hasattr(value, "__index__") and not isinstance(value, (float, str, bytes))
    )


def accepts(module: StrictModule, type_text: str, value: Any) -> bool:
    t = short_type(type_text)
    if " | " in t:
        return any(accepts(module, part, value) for part in t.split(" | "))
    if t.startswith("typing.Optional["):
        return value is None or accepts(module, t[len("typing.Optional["):-1], value)
    if t in ("int", "typing.SupportsInt", "SupportsInt"):
        return _is_int(value)
    if t in ("float", "typing.SupportsFloat", "SupportsFloat"):
        return _is_int(value) or isinstance(value, (float, np.floating))
    if t == "str":
        return isinstance(value, (str, bytes))
    if t in ("buffer", "typing_extensions.Buffer", "collections.abc.Buffer", "Buffer"):
        try:
            memoryview(value)
        except TypeError:
            return False
        return True
    if t == "Dims" or t.startswith("Dims") and t[4:] in ("", "2", "3", "4", "HW"):
        cls = module._classes.get("Dims")
        if cls is not None and isinstance(value, cls):
            return True
        return isinstance(value, (list, tuple)) and all(_is_int(v) for v in value)
    if re.match(r"^(collections\.abc\.|typing\.)?(Sequence|List|list)\b", t):
        return isinstance(value, (list, tuple))
    cls = module._classes.get(t)
    if cls is not None and isinstance(cls, _EnumMeta):
        return isinstance(value, EnumMember) and value._enum is cls
    if cls is not None:
        # pybind11 turns None into nullptr for a class pointer
        return value is None or isinstance(value, cls)
    return True  # object, capsules, callbacks: not checked


# -- enums ---------------------------------------------------------------------------------
class EnumMember:
    def __init__(self, enum: type, name: str, value: int) -> None:
        self._enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnumMember) and other._enum is self._enum and (
            other.value == self.value)

    def __hash__(self) -> int:
        return hash((self._enum.__name__, self.value))

    def __repr__(self) -> str:
        return f"<{self._enum.__name__}.{self.name}: {self.value}>"


class _EnumMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"TensorRT {cls._version}: type object '{cls.__qualname__}' has "
                             f"no attribute '{name}'")


# -- classes -------------------------------------------------------------------------------
class _StrictMeta(type):
    def __getattribute__(cls, name: str) -> Any:
        if name.startswith("_"):
            return type.__getattribute__(cls, name)
        api = type.__getattribute__(cls, "_api")
        fake_cls = type.__getattribute__(cls, "_fake_class")
        if cls is fake_cls and api is not None and not _known(api, name):
            raise AttributeError(f"TensorRT {cls._version}: type object '{cls._qual}' has no "
                                 f"attribute '{name}'")
        return type.__getattribute__(cls, name)


def _known(api: Mapping[str, Any], name: str) -> bool:
    return any(name in api.get(key, {}) for key in ("methods", "properties", "values",
                                                     "members")) or name in api.get("nested", ())


class Strict(metaclass=_StrictMeta):
    """Base of every generated class; behaviours subclass it and are wrapped per snapshot."""

    _api: dict[str, Any] | None = None
    _fake_class: type | None = None
    _module: StrictModule | None = None
    _qual = ""
    _version = ""

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        cls = type(self)
        fake_cls = cls._fake_class
        api = fake_cls._api if fake_cls is not None else None
        if api is None:
            return object.__getattribute__(self, name)
        if name in api["methods"]:
            impl = _impl_of(cls, name)
            return _checked(cls._module, f"{fake_cls._qual}.{name}", api["methods"][name],
                            impl, self)
        if name in api["properties"]:
            getter = _property_impl(cls, name)
            cls._module._state.record(f"{fake_cls._qual}.{name}", ())
            return getter(self)
        if name in api["values"]:
            return getattr(fake_cls, name)
        if cls is not fake_cls:  # a Python subclass (a user's ILogger) has its own attributes
            return object.__getattribute__(self, name)
        raise AttributeError(f"TensorRT {fake_cls._version}: '{fake_cls._qual}' object has no "
                             f"attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        fake_cls = cls._fake_class
        api = fake_cls._api if fake_cls is not None else None
        if name.startswith("_") or api is None:
            object.__setattr__(self, name, value)
            return
        prop = api["properties"].get(name)
        if prop is None:
            if cls is not fake_cls:
                object.__setattr__(self, name, value)
                return
            raise AttributeError(f"TensorRT {fake_cls._version}: '{fake_cls._qual}' object has "
                                 f"no attribute '{name}'")
        if not prop["writable"]:
            raise AttributeError(f"TensorRT {fake_cls._version}: property '{name}' of "
                                 f"'{fake_cls._qual}' has no setter")
        if not accepts(cls._module, prop["type"], value):
            raise TypeError(f"TensorRT {fake_cls._version}: {fake_cls._qual}.{name} takes "
                            f"{short_type(prop['type'])}, got {type(value).__name__}")
        cls._module._state.record(f"{fake_cls._qual}.{name}=", (value,))
        setter = getattr(cls, f"_set_{name}", None)
        if setter is not None:
            setter(self, value)
        else:
            self.__dict__.setdefault("_props", {})[name] = value


def _impl_of(cls: type, name: str) -> Callable[..., Any]:
    for klass in cls.__mro__:
        if name in vars(klass) and klass is not Strict:
            return vars(klass)[name]
    def missing(*_: Any, **__: Any) -> Any:
        raise NotImplementedError(f"the fake TensorRT has no behaviour for "
                                  f"{cls._fake_class._qual}.{name}(); add it to fake_trt.py")
    return missing


def _property_impl(cls: type, name: str) -> Callable[[Any], Any]:
    for klass in cls.__mro__:
        attr = vars(klass).get(name)
        if isinstance(attr, property):
            return attr.fget  # type: ignore[return-value]
    def stored(self: Any) -> Any:
        props = self.__dict__.get("_props", {})
        if name in props:
            return props[name]
        raise NotImplementedError(f"the fake TensorRT has no value for "
                                  f"{cls._fake_class._qual}.{name}; set it or add a property")
    return stored


def _checked(module: StrictModule, qual: str, sigs: list[str], impl: Callable[..., Any],
             self: Any) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        check_call(module, qual, sigs, args, kwargs)
        module._state.record(qual, args, kwargs)
        return impl(self, *args, **kwargs) if self is not None else impl(*args, **kwargs)
    call.__name__ = qual.rsplit(".", 1)[-1]
    return call


def check_call(module: StrictModule, qual: str, sigs: list[str], args: tuple,
               kwargs: dict[str, Any]) -> None:
    """Raise TypeError as pybind11 does when no overload accepts these arguments."""
    for text in sigs:
        if _binds(module, parse_overload(text), args, kwargs):
            return
    given = ", ".join([type(a).__name__ for a in args]
                      + [f"{k}={type(v).__name__}" for k, v in kwargs.items()])
    supported = "; ".join(short_type(s) for s in sigs)
    raise TypeError(f"TensorRT {module._version}: {qual}(): incompatible function arguments "
                    f"({given}); supported: {supported}")


def _binds(module: StrictModule, overload: Overload, args: tuple, kwargs: dict) -> bool:
    params = [p for p in overload.params if p.kind == "plain"]
    if any(p.kind in ("args", "kwargs") for p in overload.params):
        return True  # (*args, **kwargs): pybind11 dispatches inside; nothing to check here
    if len(args) > len(params):
        return False
    bound: dict[str, Any] = {}
    for param, value in zip(params, args):
        bound[param.name] = value
    for key, value in kwargs.items():
        if key in bound or key not in {p.name for p in params}:
            return False
        bound[key] = value
    for param in params:
        if param.name not in bound:
            if not param.has_default:
                return False
            continue
        if not accepts(module, param.type, bound[param.name]):
            return False
    return True


# -- the module ----------------------------------------------------------------------------
class CallLog:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def record(self, qual: str, args: tuple, kwargs: dict | None = None) -> None:
        self.calls.append((qual, args, kwargs or {}))

    def names(self) -> list[str]:
        return [qual for qual, _, _ in self.calls]

    def index(self, qual: str) -> int:
        """Position of the first call to `qual` (ValueError when never called)."""
        return self.names().index(qual)


class StrictModule(types.ModuleType):
    """`import tensorrt` for one snapshot; `behaviours` maps class names to implementations."""

    def __init__(self, line: str, behaviours: Mapping[str, type],
                 functions: Mapping[str, Callable[..., Any]], state: Any) -> None:
        snapshot = load_snapshot(line)
        super().__init__("tensorrt")
        # an installed module has a spec: importlib.util.find_spec("tensorrt") (which other
        # libraries call to see what is installed) raises ValueError on a None one
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        self._snapshot = snapshot
        self._version = snapshot["tensorrt"]
        self._state = state
        self._classes: dict[str, type] = {}
        self.__version__ = snapshot["tensorrt"]
        classes = snapshot["classes"]
        made: set[str] = set()
        while len(made) < len(classes):  # bases before the classes that derive from them
            for qual, api in classes.items():
                if qual in made or any(b in classes and b not in made for b in api["bases"]):
                    continue
                api = dict(api)
                api["nested"] = {q.split(".")[-1] for q in classes if q.startswith(qual + ".")
                                 and q.count(".") == qual.count(".") + 1}
                bases = tuple(self._classes[b] for b in api["bases"] if b in self._classes)
                self._classes[qual] = self._make(qual, api, behaviours.get(qual), bases)
                made.add(qual)
        for qual, cls in list(self._classes.items()):
            if "." in qual:
                outer, inner = qual.rsplit(".", 1)
                type.__setattr__(self._classes[outer], inner, cls)
                self._classes.setdefault(inner, cls)
        for qual, api in classes.items():  # class-level values (ILogger.ERROR) after enums
            cls = self._classes.get(qual)
            for name, target in api.get("values", {}).items():
                value = self._resolve(target)
                if cls is not None and value is not None:
                    type.__setattr__(cls, name, value)
        for name, target in snapshot["values"].items():
            value = self._resolve(target)
            if value is not None:
                object.__setattr__(self, name, value)
        for name, sigs in snapshot["functions"].items():
            impl = functions.get(name)
            if impl is None:
                def impl(*_: Any, _name: str = name, **__: Any) -> Any:
                    raise NotImplementedError(f"the fake TensorRT has no behaviour for {_name}()")
            object.__setattr__(self, name, _checked(self, name, sigs, impl, None))
        for qual, cls in self._classes.items():
            if "." not in qual:
                object.__setattr__(self, qual, cls)

    def _resolve(self, target: str) -> Any:
        enum_qual, _, member = target.rpartition(".")
        enum = self._classes.get(enum_qual) or self._classes.get(enum_qual.split(".")[-1])
        return getattr(enum, member, None) if enum is not None else None

    def _make(self, qual: str, api: dict[str, Any], behaviour: type | None,
              registered_bases: tuple[type, ...] = ()) -> type:
        short = qual.split(".")[-1]
        if api.get("members"):
            enum = _EnumMeta(short, (), {"_version": self._version, "__qualname__": qual})
            members = {name: EnumMember(enum, name, value)
                       for name, value in api["members"].items()}
            for name, member in members.items():
                type.__setattr__(enum, name, member)
            enum.__members__ = members
            return enum
        bases = (behaviour,) if behaviour is not None else ()
        bases += tuple(b for b in registered_bases if not isinstance(b, _EnumMeta))
        bases = bases or (Strict,)
        cls = _StrictMeta(short, bases, {"_api": api, "_module": self, "_qual": qual,
                                         "_version": self._version, "__qualname__": short})
        type.__setattr__(cls, "_fake_class", cls)
        init_sigs = api["methods"].get("__init__")
        original_init = cls.__init__

        def __init__(obj: Any, *args: Any, **kwargs: Any) -> None:
            if init_sigs:
                check_call(self, f"{qual}.__init__", init_sigs, args, kwargs)
            self._state.record(f"{qual}.__init__", args, kwargs)
            if behaviour is None:
                raise TypeError(f"TensorRT {self._version}: {qual} cannot be constructed "
                                "(the fake has no behaviour for it)")
            original_init(obj, *args, **kwargs)
            object.__setattr__(obj, "_initialised", True)

        type.__setattr__(cls, "__init__", __init__)
        type.__setattr__(cls, "_behaviour_init", original_init)
        return cls

    def _new(self, name: str, *args: Any) -> Any:
        """An instance made the way TensorRT makes one internally: no constructor check (many
        classes have no public constructor), but the instance is as strict as any other."""
        cls = self._classes[name]
        obj = cls.__new__(cls, *args) if issubclass(cls, bytes) else cls.__new__(cls)
        if not issubclass(cls, bytes):
            cls._behaviour_init(obj, *args)
        object.__setattr__(obj, "_initialised", True)
        return obj

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"TensorRT {self._version}: module 'tensorrt' has no attribute "
                             f"'{name}'")
