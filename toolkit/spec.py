"""Tensor specifications: names, dtypes and min/opt/max shapes, and the `--input` syntax.

Pure Python and numpy: every layer (exporters, runtimes, optimization profiles, data checks)
reads shapes from here, so this module imports no backend.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import UsageError

# Aliases accepted on the command line -> the canonical (numpy-style) dtype name.
DTYPE_ALIASES: dict[str, str] = {
    "float32": "float32", "fp32": "float32", "f32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "fp64": "float64", "double": "float64",
    "int64": "int64", "i64": "int64", "long": "int64",
    "int32": "int32", "i32": "int32", "int": "int32",
    "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
}

DEFAULT_MAX_BATCH = 64
MAX_DIM = 2**31 - 1  # the largest extent the runtimes' shapes take
@functools.cache
def max_tensor_bytes() -> int:
    """The largest input the toolkit will make: a quarter of this machine's memory (at most
    64 GiB). Larger is a typo, not a model; golden samples, calibration and bench hold a few."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 16 * 2**30
    return min(64 * 2**30, memory // 4)


def feed_bytes(spec: TensorSpec, shape: Sequence[int]) -> int:
    """Memory one input of this shape takes while made: random floats start as float64."""
    itemsize = max(numpy_dtype(spec.dtype).itemsize, 8)
    return math.prod(shape) * itemsize


def check_feed_size(specs: Sequence[TensorSpec], batches: Sequence[int | None],
                    where: str, *, largest: bool = False) -> None:
    """Every input at every batch, made at once (as bench does), must fit what this machine
    can spare: exit 2 before the allocation, not an out-of-memory kill after it. `largest`:
    each input at its range's maximum shape (what export's golden samples may make)."""
    total = sum(feed_bytes(spec, spec.max if largest else spec.shape_at(batch)
                           if batch is not None else spec.opt)
                for batch in batches for spec in specs)
    if total > max_tensor_bytes():
        raise UsageError(f"{where}: the inputs need {total / 2**30:.1f} GiB, more than this "
                         f"machine can spare ({max_tensor_bytes() / 2**30:.1f} GiB)")

# Precision names an artifact can carry (tf32: fp32 computed with TF32 math on a GPU).
PRECISION_ALIASES: dict[str, str] = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "f32": "fp32",
    "tf32": "tf32",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "f16": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
    "int8": "int8", "i8": "int8", "qdq": "int8",
}


_DEVICE = re.compile(r"^(cpu|cuda(:[0-9]{1,3})?)$")  # ASCII digits: \d takes any script's


def check_device(device: str) -> str:
    """cpu, cuda or cuda:N; anything else is a UsageError (and never reaches a printer)."""
    if not _DEVICE.fullmatch(device or ""):
        raise UsageError(f"--device {device!r}: use cpu or cuda (cuda:N)")
    return device


def canonical_precision(name: str, where: str = "--precision") -> str:
    """'half' -> 'fp16'; an unknown name is a UsageError with a suggestion."""
    import difflib

    key = name.strip().lower()
    if key not in PRECISION_ALIASES:
        close = difflib.get_close_matches(key, list(PRECISION_ALIASES), n=1)
        hint = f" (did you mean '{PRECISION_ALIASES[close[0]]}'?)" if close else ""
        raise UsageError(f"{where}: unknown precision '{name}'; use fp32, fp16, bf16 or "
                         f"int8{hint}")
    return PRECISION_ALIASES[key]


def canonical_dtype(name: str) -> str:
    """Map a user-written dtype ('fp16', 'long', 'torch.float32') to its canonical name."""
    key = name.strip().lower().removeprefix("torch.")
    if key not in DTYPE_ALIASES:
        known = ", ".join(sorted(set(DTYPE_ALIASES.values())))
        raise UsageError(f"unknown dtype '{name}'; use one of: {known}")
    return DTYPE_ALIASES[key]


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype that carries arrays of this spec (bfloat16 travels as float32)."""
    return np.dtype("float32" if name == "bfloat16" else name)


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: dtype and, per dimension, the min/opt/max extent.

    A dimension is dynamic when min != max. `opt` is the shape engines are tuned for and the
    shape golden samples use.
    """

    name: str
    dtype: str = "float32"
    min: tuple[int, ...] = ()
    opt: tuple[int, ...] = ()
    max: tuple[int, ...] = ()
    #: a name per dimension (None: unnamed); inputs' dims of one name are one symbolic dim
    dims: tuple[str | None, ...] = ()
    #: integer inputs: the values they take, [low, high) (token ids: 0 to the vocabulary size)
    values: tuple[int, int] | None = None
    #: an attention mask's padding side, 'right' or 'left': drawn as a run of ones then
    #: padding (zeros), never a row with no valid key (i.i.d. 0/1 is no tokenizer's mask)
    mask: str | None = None
    #: per dimension, the step its sizes go in (1: any size; 14: 112, 126, ... for a model
    #: that splits the image into 14-px patches); empty: 1 everywhere
    steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise UsageError(f"input '{self.name}': min/opt/max shapes have different ranks")
        if self.dims and len(self.dims) != len(self.opt):
            raise UsageError(f"input '{self.name}': {len(self.dims)} dimension names for "
                             f"{len(self.opt)} dimensions")
        if self.values is not None:
            if not np.issubdtype(numpy_dtype(self.dtype), np.integer):
                raise UsageError(f"input '{self.name}': a value range is for integer inputs, "
                                 f"not {self.dtype}")
            low, high = self.values
            if not low < high:
                raise UsageError(f"input '{self.name}': values {low}-{high} is empty; give "
                                 "LOW-HIGH with LOW < HIGH (HIGH excluded)")
        if self.mask is not None:
            if self.mask not in MASK_SIDES:
                raise UsageError(f"input '{self.name}': mask padding '{self.mask}' is not one "
                                 f"of {', '.join(MASK_SIDES)}")
            dtype = numpy_dtype(self.dtype)
            if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_) or not self.rank:
                raise UsageError(f"input '{self.name}': a mask is an integer or bool tensor "
                                 f"of at least one dimension, not {self.dtype} "
                                 f"{list(self.opt)}")
        if self.steps and len(self.steps) != len(self.opt):
            raise UsageError(f"input '{self.name}': {len(self.steps)} steps for "
                             f"{len(self.opt)} dimensions")
        for lo, mid, hi, step in zip(self.min, self.opt, self.max, self.steps or [1] * 99):
            if step < 1 or (step > 1 and (lo % step or mid % step or hi % step)):
                raise UsageError(f"input '{self.name}': sizes {lo}-{mid}-{hi} must each be a "
                                 f"multiple of the step {step}")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if not (1 <= lo <= mid <= hi):
                raise UsageError(
                    f"input '{self.name}': each dimension needs 1 <= min <= opt <= max, "
                    f"got {lo}-{mid}-{hi}"
                )
            if hi > MAX_DIM:
                raise UsageError(f"input '{self.name}': dimension {hi} is beyond what any "
                                 f"runtime takes (max {MAX_DIM})")
        opt_bytes = feed_bytes(self, self.opt)
        if opt_bytes > max_tensor_bytes():
            raise UsageError(f"input '{self.name}': one tensor of shape {list(self.opt)} needs "
                             f"{opt_bytes / 2**30:.1f} GiB, more than this machine can spare")

    @classmethod
    def static(cls, name: str, shape: Sequence[int], dtype: str = "float32") -> TensorSpec:
        shape = tuple(int(d) for d in shape)
        return cls(name, canonical_dtype(dtype), shape, shape, shape)

    @property
    def rank(self) -> int:
        return len(self.opt)

    @property
    def dynamic_dims(self) -> list[int]:
        return [i for i, (lo, hi) in enumerate(zip(self.min, self.max)) if lo != hi]

    @property
    def shape(self) -> list[int | None]:
        """Opt shape with dynamic dimensions as None (how the manifest shows them)."""
        dyn = set(self.dynamic_dims)
        return [None if i in dyn else d for i, d in enumerate(self.opt)]

    @property
    def has_dynamic_batch(self) -> bool:
        return self.rank > 0 and 0 in self.dynamic_dims

    def shape_at(self, batch: int | None = None) -> tuple[int, ...]:
        """The opt shape, with dimension 0 set to `batch` when given."""
        shape = list(self.opt)
        if batch is not None and self.rank > 0:
            if not self.min[0] <= batch <= self.max[0]:
                raise UsageError(
                    f"batch {batch} is outside input '{self.name}' range "
                    f"{self.min[0]}-{self.max[0]}"
                )
            shape[0] = batch
        return tuple(shape)

    def accepts(self, shape: Sequence[int]) -> bool:
        return len(shape) == self.rank and all(
            lo <= d <= hi and d % self.step(axis) == 0
            for axis, (d, lo, hi) in enumerate(zip(shape, self.min, self.max))
        )

    def step(self, axis: int) -> int:
        """The step of a dimension's sizes (1: any size)."""
        return self.steps[axis] if self.steps else 1

    def dim_name(self, axis: int) -> str | None:
        return self.dims[axis] if self.dims else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name, "dtype": self.dtype, "shape": self.shape,
            "min": list(self.min), "opt": list(self.opt), "max": list(self.max),
        }
        if any(self.dims):
            data["dims"] = list(self.dims)
        if self.values is not None:
            data["values"] = list(self.values)
        if self.mask is not None:
            data["mask"] = self.mask
        if any(step > 1 for step in self.steps):
            data["steps"] = list(self.steps)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        values = data.get("values")
        return cls(
            str(data["name"]), canonical_dtype(str(data["dtype"])),
            tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]),
            dims=tuple(data.get("dims") or ()),
            values=(int(values[0]), int(values[1])) if values else None,
            mask=str(data["mask"]) if data.get("mask") else None,
            steps=tuple(int(v) for v in data.get("steps") or ()),
        )

    def describe(self) -> str:
        dims = []
        for axis, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max)):
            extent = str(lo) if lo == hi else f"{lo}-{mid}-{hi}"
            if self.step(axis) > 1:
                extent += f"/{self.step(axis)}"
            name = self.dim_name(axis)
            dims.append(f"{name}={extent}" if name else extent)
        values = f":{self.values[0]}-{self.values[1]}" if self.values else ""
        if self.mask is not None:
            values = ":mask" if self.mask == "right" else f":mask-{self.mask}"
        return f"{self.name}:{'x'.join(dims) or 'scalar'}:{self.dtype}{values}"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutputSpec:
        return cls(str(data["name"]), str(data["dtype"]))


# C0, DEL and C1 controls: U+009B is a one-character CSI, U+0085 a line break to a terminal
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DIM = re.compile(r"^(?:([A-Za-z_][A-Za-z0-9_]{0,31})=)?([0-9]{1,12})(?:-([0-9]{1,12}))?"
                  r"(?:-([0-9]{1,12}))?(?:/([0-9]{1,6}))?$")
_DIM_REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
_VALUES = re.compile(r"^([0-9]{1,12})-([0-9]{1,12})$")
MASK_SIDES = ("right", "left")
_MASK_FORMS = {"mask": "right", "mask-right": "right", "mask-left": "left"}
#: an integer input of this name is an attention mask (right-padded) unless its values say
#: otherwise; `:mask-left` for the families that pad on the left
MASK_NAMES = ("attention_mask",)


def parse_input(text: str, named: Mapping[str, str] | None = None) -> TensorSpec:
    """Parse `NAME:SHAPE[:DTYPE[:LOW-HIGH]]`, e.g. `x:1-8x3x224x224` or
    `input_ids:1-4xseq=8-32:int64:0-30522`.

    A dimension `A-B` is dynamic from A to B with opt = A; `A-B-C` is min-opt-max; `/S` after
    either takes the sizes in steps of S (`112-224/14`: multiples of 14); `seq=A-B`
    names it, and a bare `seq` in another input is the same dimension (`named` maps the names
    defined elsewhere to their extents; see `parse_inputs`). `LOW-HIGH` is an integer input's
    values, HIGH excluded.
    """
    if CONTROL_CHARS.search(text):
        raise UsageError(f"--input {text!r}: control characters are not allowed")
    parts = text.strip().split(":")
    if len(parts) not in (2, 3, 4) or not parts[0] or not parts[1]:
        raise UsageError(f"--input '{text}' is malformed; expected NAME:SHAPE[:DTYPE[:LOW-HIGH]]"
                         ", e.g. x:1-8x3x224x224 or ids:1-4xseq=8-32:int64:0-30522")
    # case-insensitive, as always (1X3 reads 1x3): dimension names are lower case
    name, shape_text = parts[0].strip(), parts[1].strip().lower()
    dtype = canonical_dtype(parts[2]) if len(parts) >= 3 else "float32"
    values, mask = None, None
    if len(parts) == 4 and parts[3].strip().lower() in _MASK_FORMS:
        mask = _MASK_FORMS[parts[3].strip().lower()]
    elif len(parts) == 4:
        match = _VALUES.match(parts[3].strip())
        if not match:
            raise UsageError(f"--input '{text}': values '{parts[3]}' are not LOW-HIGH, e.g. "
                             "0-30522, nor mask, mask-left (an attention mask)")
        values = (int(match.group(1)), int(match.group(2)))
    if (mask is None and name in MASK_NAMES and values in (None, (0, 2))
            and np.issubdtype(numpy_dtype(dtype), np.integer)):
        mask = "right"  # by its name: 0/1 drawn i.i.d. is no tokenizer's mask
    lo_dims, opt_dims, hi_dims, names, steps = [], [], [], [], []
    if shape_text.lower() not in ("", "scalar"):
        for dim in shape_text.split("x"):
            dim = dim.strip()
            if _DIM_REFERENCE.match(dim) and not dim.isdigit():
                if dim not in (named or {}):
                    raise UsageError(f"--input '{text}': dimension '{dim}' names no dimension "
                                     f"given a size; define it once, e.g. {dim}=8-32")
                dim = f"{dim}={named[dim]}"  # type: ignore[index]
            match = _DIM.match(dim)
            if not match:
                raise UsageError(f"--input '{text}': dimension '{dim}' is not N, MIN-MAX, "
                                 "MIN-OPT-MAX (either with /STEP: 112-224/14) or NAME=one of "
                                 "them (a name has no 'x': it separates dimensions)")
            label = match.group(1)
            a, b, c = (int(g) if g is not None else None for g in match.groups()[1:4])
            steps.append(int(match.group(5)) if match.group(5) else 1)
            if b is None:
                lo, mid, hi = a, a, a
            elif c is None:
                lo, mid, hi = a, a, b
            else:
                lo, mid, hi = a, b, c
            lo_dims.append(lo)
            opt_dims.append(mid)
            hi_dims.append(hi)
            names.append(label)
    try:
        return TensorSpec(name, dtype, tuple(lo_dims), tuple(opt_dims), tuple(hi_dims),
                          dims=tuple(names) if any(names) else (), values=values, mask=mask,
                          steps=tuple(steps) if any(v > 1 for v in steps) else ())
    except UsageError as err:
        raise UsageError(f"--input '{text}': {err}") from None


def parse_inputs(texts: Sequence[str]) -> list[TensorSpec]:
    """Several `--input`s, a dimension named in one (`seq=8-32`) usable by name in the others
    (`seq`); one name has one extent."""
    defined = named_dims(texts)
    specs = [parse_input(text, defined) for text in texts]
    check_shapes(specs)
    return specs


def named_dims(texts: Sequence[str]) -> dict[str, str]:
    """The extent each dimension name is given in `texts` (`seq=8-32` -> seq: 8-32), for
    `parse_input(text, named)`: --input and --profile resolve names alike."""
    defined: dict[str, str] = {}
    for text in texts:
        parts = text.split(":")
        for dim in (parts[1].lower().split("x") if len(parts) > 1 else []):
            label, sep, extent = dim.strip().partition("=")
            if not sep:
                continue
            if label in defined and defined[label] != extent:
                raise UsageError(f"--input: dimension '{label}' is given two sizes, "
                                 f"{defined[label]} and {extent}; give its size once")
            defined[label] = extent
    return defined


def check_shapes(specs: Sequence[TensorSpec]) -> None:
    """Shapes that can't lie: `batch` names only dimension 0 (any other would be declared
    equal to the batch), inputs that share the batch share its range (else a sample would
    pair one input's batch with another's), and the largest tensors of every range fit the
    machine at once (golden samples make them; better exit 2 now than an out-of-memory kill
    after minutes)."""
    for spec in specs:
        for axis, label in enumerate(spec.dims):
            if label == "batch" and axis != 0:
                raise UsageError(f"--input '{spec.name}': dimension {axis} is named 'batch', "
                                 "which is dimension 0's name; name it something else")
    ranges = {(s.min[0], s.opt[0], s.max[0]): s.name for s in specs if s.has_dynamic_batch}
    if len(ranges) > 1:
        shown = ", ".join(f"{name} {lo}-{mid}-{hi}" for (lo, mid, hi), name in ranges.items())
        raise UsageError(f"--input: inputs share the batch (dimension 0) but give it different "
                         f"ranges ({shown}); give every input the same batch range")
    check_feed_size(specs, [None], "--input", largest=True)


def shared_dims(specs: Sequence[TensorSpec]) -> tuple[dict[tuple[str, int], str], list[str]]:
    """The symbolic dimension of each dynamic (input, axis): the batch, the names the user
    gave, and, for unnamed axes, one name per position and extent that several inputs share
    (token ids and their attention mask: torch.export insists they be declared equal). Also
    returns notes saying which were shared without being named."""
    rng = batch_range(specs)
    names: dict[tuple[str, int], str] = {}
    groups: dict[tuple[int, int, int, int], list[str]] = {}
    for spec in specs:
        for axis in spec.dynamic_dims:
            if axis == 0 and rng is not None:
                names[(spec.name, axis)] = "batch"
            elif spec.dim_name(axis):
                names[(spec.name, axis)] = spec.dim_name(axis)  # type: ignore[assignment]
            else:
                key = (axis, spec.min[axis], spec.opt[axis], spec.max[axis])
                groups.setdefault(key, []).append(spec.name)
    notes = []
    taken = set(names.values())
    for (axis, lo, mid, hi), members in groups.items():
        shared = len(members) > 1
        for member in members:
            name = f"dim{axis}_{lo}_{hi}" if shared else f"{member}_{axis}"
            if shared and name in taken:
                name = f"{name}_{axis}"
            names[(member, axis)] = name
        if shared:
            notes.append(f"dimension {axis} of {', '.join(members)} ({lo}-{mid}-{hi}) is taken "
                         "as one dimension (same place, same range); name dims to say "
                         "otherwise, e.g. ids:1-4xseq=8-32 mask:1-4xseq")
    return names, notes


def with_dynamic_batch(
    spec: TensorSpec, max_batch: int = DEFAULT_MAX_BATCH, min_batch: int = 1
) -> TensorSpec:
    """Make dimension 0 dynamic (min_batch..max_batch), keeping the example's batch as opt."""
    if spec.rank == 0 or spec.has_dynamic_batch:
        return spec
    opt = spec.opt[0]
    hi = max(max_batch, opt)
    return TensorSpec(
        spec.name, spec.dtype, (min(min_batch, opt), *spec.min[1:]), spec.opt,
        (hi, *spec.max[1:]),
    )


def batch_range(specs: Iterable[TensorSpec]) -> tuple[int, int, int] | None:
    """The (min, opt, max) batch all inputs share, or None when the batch isn't dynamic."""
    ranges = {(s.min[0], s.opt[0], s.max[0]) for s in specs if s.has_dynamic_batch}
    if not ranges:
        return None
    lo = max(r[0] for r in ranges)
    hi = min(r[2] for r in ranges)
    opt = min(max(r[1] for r in ranges), hi)
    return (lo, max(lo, opt), hi) if lo <= hi else None


def random_inputs(
    specs: Sequence[TensorSpec],
    batch: int | None = None,
    seed: int = 0,
    int_high: Mapping[str, int] | None = None,
    at: str = "opt",
) -> dict[str, np.ndarray]:
    """Seeded random arrays matching the specs at their `at` ('min', 'opt' or 'max') shape,
    with dimension 0 set to `batch` when given and dynamic.

    Integer inputs are drawn from [0, int_high[name]) — pass the example's range so that
    embedding lookups stay in their vocabulary.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    shared = batch_range(specs)
    if batch is None and shared is not None:
        batch = shared[1]  # one batch for every input: a sample never pairs two batches
    for spec in specs:
        shape = list(getattr(spec, at))
        if batch is not None and spec.has_dynamic_batch:
            shape[0] = spec.shape_at(batch)[0]
        elif spec.rank:
            shape[0] = spec.opt[0]
        dtype = numpy_dtype(spec.dtype)
        if spec.mask is not None:
            out[spec.name] = padded_masks(shape, spec.mask, rng).astype(dtype)
        elif dtype == np.bool_:
            # Boolean inputs are mostly attention / padding masks: a row padded out entirely
            # is invalid input for most attention code, so nothing is masked.
            out[spec.name] = np.ones(shape, dtype=bool)
        elif np.issubdtype(dtype, np.integer):
            low, high = spec.values or (0, max(1, (int_high or {}).get(spec.name, 2)))
            out[spec.name] = rng.integers(low, high, size=shape).astype(dtype)
        else:
            out[spec.name] = rng.standard_normal(size=shape).astype(dtype)
    return out


def padded_masks(shape: Sequence[int], side: str, rng: np.random.Generator) -> np.ndarray:
    """Attention masks as a tokenizer makes them: per row (the last axis is the sequence) a
    run of ones, the rest padding (zeros) on `side`. The first row is full, the others take
    lengths spread over 1..S, so several lengths are judged and no row masks every key."""
    shape = tuple(int(d) for d in shape)
    seq = shape[-1] if shape else 1
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    lengths = np.full(rows, seq)
    if rows > 1:
        lengths[1:] = rng.integers(1, seq + 1, size=rows - 1)
    positions = np.arange(seq)[None, :]
    ones = positions < lengths[:, None] if side == "right" else positions >= seq - lengths[:, None]
    return ones.astype(np.int64).reshape(shape)


def validate_feed(
    specs: Sequence[TensorSpec], feed: Mapping[str, np.ndarray], where: str
) -> None:
    """Raise one UsageError naming every input whose array is missing or doesn't fit."""
    problems: list[str] = []
    names = {s.name for s in specs}
    for spec in specs:
        if spec.name not in feed:
            problems.append(f"input '{spec.name}' is missing")
            continue
        arr = np.asarray(feed[spec.name])
        if not spec.accepts(arr.shape):
            problems.append(
                f"input '{spec.name}' has shape {list(arr.shape)}, expected {spec.describe()}"
            )
        expected = numpy_dtype(spec.dtype)
        if arr.dtype != expected and not (
            np.issubdtype(arr.dtype, np.floating) and np.issubdtype(expected, np.floating)
        ):
            problems.append(f"input '{spec.name}' has dtype {arr.dtype}, expected {spec.dtype}")
    extra = sorted(set(feed) - names - {"labels"})
    if extra and len(problems) == 0 and len(extra) == len(feed):
        problems.append(f"no array is named after an input ({', '.join(sorted(names))})")
    if problems:
        raise UsageError(f"{where}: " + "; ".join(problems))
