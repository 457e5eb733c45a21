"""An exported file becomes a manifest record (hashes, sizes, companions, the libraries that
made it), or is taken out of the bundle again when it turned out unusable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit import environment, transaction
from toolkit.bundle import Bundle, now, sha256_file
from toolkit.formats import Format
from toolkit.manifest import ArtifactRecord, InProcessTarget, Target


def record_artifact(bundle: Bundle, fmt: Format, precision: str, dest: Path,
                    extra: dict[str, Any], layout: str | None = None) -> ArtifactRecord:
    """The record of `dest` (and its companions beside it), with the exporter's fields."""
    companions = [dest.with_name(name) for name in fmt.companions(dest.name)
                  if dest.with_name(name).is_file()]
    record = {
        "format": fmt.name, "precision": precision, "path": dest.name,
        **({"layout": layout} if layout else {}),
        "sha256": sha256_file(dest),
        "size_bytes": sum(p.stat().st_size for p in [dest, *companions]),
        **({"files": [{"name": p.name, "sha256": sha256_file(p),
                       "size_bytes": p.stat().st_size} for p in companions]}
           if companions else {}),
        "created_at": now(),
        "tools": {k: v for k in fmt.recorded_libraries()
                  if (v := environment.library_version(k))},
        **extra,
    }
    return bundle.record_artifact(record)


def drop_artifact(bundle: Bundle, record: Target) -> None:
    """A record made this run whose file is unusable (it won't even load): its files go and
    the bundle no longer lists it."""
    if isinstance(record, InProcessTarget):
        return
    for path in bundle.files_of(record):
        transaction.remove_file(path)
    bundle.remove_artifact(record)
    bundle.save()
