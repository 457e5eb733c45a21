"""Optimization profiles: min/opt/max shapes per input, from the bundle's specs and
--profile, and which profile fits a shape. Pure functions; no tensorrt import."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from toolkit.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from toolkit.spec import TensorSpec


def parse_input(text: str, named: Mapping[str, str] | None = None) -> TensorSpec:
    # spec loads numpy; the option group that checks --profile's syntax must not (CLI start-up)
    from toolkit.spec import parse_input as parse

    return parse(text, named)


def _parse_parts(text: str) -> list[TensorSpec]:
    """The inputs of one --profile text, a dimension named in one (`seq=8-16`) usable by name
    in the others (`seq`), as in --input; one name has one range."""
    from toolkit.spec import named_dims

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError(f"--profile {text!r} names no input; write e.g. x:1-2-4x3x224x224")
    try:
        named = named_dims(parts)
        return [parse_input(part, named) for part in parts]
    except UsageError as err:
        # named_dims speaks for --input; this is a --profile mistake
        raise UsageError(f"--profile {text!r}: {str(err).removeprefix('--input: ')}") from None


Shape = tuple[int, ...]
#: one optimization profile: input name -> (min, opt, max) shapes
Profile = dict[str, tuple[Shape, Shape, Shape]]
def parse_profile(text: str, inputs: Sequence[TensorSpec]) -> Profile:
    """One extra optimization profile, written with the --input syntax, inputs separated by
    commas: `x:1-2-4x3x224x224,mask:1-2-4x224`. An input left out takes, for each dimension it
    shares with a named one (the batch, `seq`...), the named input's range, and the bundle's
    range for the rest; two inputs giving one shared dimension different ranges are refused
    here, before a build TensorRT would reject ("kOPT values violate shape constraints")."""
    from toolkit.spec import shared_dims

    by_name = {spec.name: spec for spec in inputs}
    symbols, _ = shared_dims(inputs)
    profile: Profile = {}
    for spec in _parse_parts(text):
        base = by_name.get(spec.name)
        if base is None:
            known = ", ".join(by_name) or "none"
            raise UsageError(f"--profile {text!r}: no input named '{spec.name}' (inputs: {known})")
        problem = _profile_problem(base, spec) or _name_problem(spec, symbols)
        if problem:
            raise UsageError(f"--profile {text!r}: {problem}")
        profile[spec.name] = (spec.min, spec.opt, spec.max)
    return _fill_shared(text, inputs, profile)


def _fill_shared(text: str, inputs: Sequence[TensorSpec], given: Profile) -> Profile:
    """Every input's range in a profile: shared dimensions (one symbol of `spec.shared_dims`)
    take the one range the named inputs give them."""
    from toolkit.spec import shared_dims

    symbols, _ = shared_dims(inputs)
    ranges: dict[str, tuple[tuple[int, int, int], str]] = {}  # symbol -> range, who gave it
    for name, (lo, mid, hi) in given.items():
        for (owner, axis), symbol in symbols.items():
            if owner != name:
                continue
            extent = (lo[axis], mid[axis], hi[axis])
            seen = ranges.setdefault(symbol, (extent, f"{name} dimension {axis}"))
            if seen[0] != extent:
                raise UsageError(
                    f"--profile {text!r}: dimension '{symbol}' is one dimension of several "
                    f"inputs, and {seen[1]} gives it {'-'.join(map(str, seen[0]))} while "
                    f"{name} dimension {axis} gives {'-'.join(map(str, extent))}; give it one "
                    "range (or leave the other input out: it follows)"
                )
    profile: Profile = {}
    for spec in inputs:
        if spec.name in given:
            profile[spec.name] = given[spec.name]
            continue
        lo, mid, hi = list(spec.min), list(spec.opt), list(spec.max)
        for axis in spec.dynamic_dims:
            symbol = symbols.get((spec.name, axis))
            if symbol in ranges:
                lo[axis], mid[axis], hi[axis] = ranges[symbol][0]  # type: ignore[index]
        profile[spec.name] = (tuple(lo), tuple(mid), tuple(hi))
    return profile


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


def _name_problem(spec: TensorSpec, symbols: Mapping[tuple[str, int], str]) -> str | None:
    """Why a dimension name in a profile lies, or None: a name the bundle gives a dimension
    (`batch`, `seq`...) labels that dimension only, so a profile can't declare two dimensions
    one; a name the bundle doesn't have is the profile's own shorthand for a range."""
    where: dict[str, tuple[str, int]] = {}  # symbol -> its first (input, axis)
    for key, symbol in symbols.items():
        where.setdefault(symbol, key)
    for axis, label in enumerate(spec.dims):
        if not label or symbols.get((spec.name, axis)) == label:
            continue
        if label == "batch" and axis != 0:
            return (f"input '{spec.name}' dimension {axis} is named 'batch', which is "
                    "dimension 0's name; name it something else")
        if label in where:
            owner, at = where[label]
            return (f"input '{spec.name}' dimension {axis} is named '{label}', but '{label}' is "
                    f"dimension {at} of {owner} in the bundle; name it something else")
    return None


# -- profiles ------------------------------------------------------------------------------
def check_profile_syntax(text: str) -> None:
    """Raise UsageError when a --profile text isn't NAME:SHAPE[,NAME:SHAPE...]."""
    _parse_parts(text)


def resolve_profiles(inputs: Sequence[TensorSpec], options: Any) -> list[Profile]:
    """All optimization profiles for a build: the bundle's range, then the extra ones.
    (`options` is a BuildOptions, typed loosely since that module imports this one.)"""
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
