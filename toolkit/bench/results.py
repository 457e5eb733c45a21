"""Results documents: bench rows with the machine that produced them, as JSON files."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from toolkit.bench.measurement import KEY_FIELDS, RESULTS_SCHEMA
from toolkit.errors import UsageError


# -- results documents -----------------------------------------------------------------------
def results_document(
    rows: Iterable[Mapping[str, Any]], environment: Mapping[str, Any], **meta: Any
) -> dict[str, Any]:
    """The results JSON: `{"schema", "created", "results": [...], "environment": {...}, ...}`.
    `meta` adds top-level fields (bundle name, command line, knobs)."""
    from toolkit.bundle import now

    clash = sorted(set(meta) & {"schema", "results", "environment"})
    if clash:
        raise ValueError(f"meta fields {clash} are reserved")
    return {
        "schema": RESULTS_SCHEMA,
        "created": now(),
        **meta,
        "results": [dict(r) for r in rows],
        "environment": dict(environment),
    }


def save_results(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Write a results document atomically (no half-written JSON on a crash)."""
    from toolkit.bundle import write_json_atomic

    write_json_atomic(path, _finite(document))


def _finite(value: Any) -> Any:
    # JSON has no NaN/inf; json.dumps would write them anyway and break strict readers
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def load_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The `results` rows of a results JSON written by `toolkit bench --json`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: results file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read results file ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); "
            "pass a file written by 'toolkit bench --json'"
        ) from None
    except (ValueError, RecursionError) as exc:  # huge integer literals, deep nesting
        raise UsageError(f"{path}: not a results file ({str(exc)[:100]})") from None
    rows = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise UsageError(
            f"{path}: no 'results' list; pass a file written by 'toolkit bench --json'"
        )
    for i, row in enumerate(rows):
        missing = [k for k in (*KEY_FIELDS, "p50_ms") if not isinstance(row, dict) or k not in row]
        if missing:
            raise UsageError(f"{path}: results[{i}] lacks {', '.join(missing)}")
        wrong = [k for k in ("format", "precision", "layout", "device")
                 if k in row and row[k] is not None and not (
                     isinstance(row[k], str) and _WORD.match(row[k]))]
        wrong += [k for k in ("batch", "p50_ms", "p99_ms", "threads")
                  if row.get(k) is not None and (isinstance(row[k], bool)
                                                 or not isinstance(row[k], (int, float))
                                                 or row[k] < 0)]
        if wrong:  # p50_ms may be null: a measurement that didn't finish
            raise UsageError(f"{path}: results[{i}] has a malformed {', '.join(wrong)}")
    return rows


_WORD = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")  # format, precision, layout, device names
