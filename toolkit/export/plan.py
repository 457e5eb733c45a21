"""What an export run will do, decided before anything is written: the formats asked for and
those they build from (in order), each one's precisions and INT8 layouts. Pure: no torch, no
bundle; `pipeline._Executor` carries the plan out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from toolkit import formats
from toolkit.export.job import ExportOptions
from toolkit.formats import Format


@dataclass(frozen=True)
class PlannedStep:
    """One artifact the run makes (or finds already made)."""

    format: Format
    precision: str
    layout: str | None = None


class ExportPlan:
    """The steps of one export run; `check_precisions` settles the precision names first."""

    def __init__(self, asked: list[str], opts: ExportOptions) -> None:
        self.asked = [formats.get(t) for t in asked]  # what the user named
        self.targets = [formats.get(t) for t in _with_dependencies(asked, opts)]
        self.opts = opts

    def steps(self) -> Iterator[PlannedStep]:
        """Every (format, precision, layout), dependencies first."""
        for fmt in self.targets:
            for precision in self.precisions_for(fmt):
                for layout in self.layouts_for(fmt, precision):
                    yield PlannedStep(fmt, precision, layout)

    def precisions_for(self, fmt: Format) -> list[str]:
        """Every requested precision the format carries (fp32-only formats: fp32). A format
        only built as another's source (what an asked format builds from) gets the precisions
        that format needs of it, not every one it could carry (no INT8 when the asked format
        quantises its own fp32)."""
        wanted = [p for p in self.opts.precisions if p in fmt.precisions]
        if fmt not in self.asked:
            needed = {p for t in self.asked if fmt.name in t.dependencies(self.opts)
                      for p in t.precisions
                      if p != "int8" or t.int8_from_layout is None
                      or t.int8_from_layout(self.opts)}
            wanted = [p for p in wanted if p in needed]
        return wanted or ["fp32"]

    def check_precisions(self, single_target_strict: bool = False) -> None:
        """Reduced precision names checked against the formats that carry them. A lone
        fp32-only target asked for fp16 is an error; in a list it just exports fp32."""
        from toolkit.spec import canonical_precision

        wanted = [canonical_precision(p) for p in self.opts.precisions]
        self.opts = replace(self.opts, precisions=tuple(dict.fromkeys(wanted)))
        if wanted == ["fp32"]:
            return
        carriers = [f for f in self.asked if len(f.precisions) > 1]
        if not carriers and (len(self.targets) == 1 or single_target_strict):
            formats.check_precisions(self.targets[0].name, wanted)
        for precision in wanted:
            # each precision must be carried by a format asked for; the others export fp32
            if carriers and not any(precision in f.precisions for f in carriers):
                formats.check_precisions(carriers[0].name, [precision])

    def layouts_for(self, fmt: Format, precision: str) -> list[str | None]:
        """The INT8 layouts to write: what --int8-layout says, or by default the one for each
        place the user asked to run it: the format's own default when it is asked for, and
        the layout each asked format built from it needs (`Format.int8_layout_needed`)."""
        if precision != "int8" or not fmt.int8_layouts:
            return [None]
        # a format with layouts has an option group that chooses among them
        choice = self.opts.backend(fmt.name).int8_layout
        if choice == "both":
            return list(fmt.int8_layouts)
        if choice != "auto":
            return [choice]
        wanted = [fmt.default_layout] if fmt in self.asked else []
        wanted += [t.int8_layout_needed for t in self.asked
                   if fmt.name in t.dependencies(self.opts) and t.int8_layout_needed
                   and "int8" in t.precisions
                   and (t.int8_from_layout is None or t.int8_from_layout(self.opts))]
        return list(dict.fromkeys(wanted)) or [fmt.default_layout]


def _with_dependencies(targets: list[str], opts: ExportOptions) -> list[str]:
    """A format built from another (`Format.builds_from`) gets that one exported, and verified,
    first: it is what the target device builds from when the backend isn't here."""
    ordered: list[str] = []
    for name in targets:
        for dependency in formats.get(name).dependencies(opts):
            if dependency not in ordered:
                ordered.append(dependency)
        if name not in ordered:
            ordered.append(name)
    return ordered
