"""torch.compile is not saved: its record says so; verify and bench rebuild it in-process."""

from __future__ import annotations

from typing import Any

from toolkit.export.job import ExportJob


def export_artifact(job: ExportJob) -> dict[str, Any]:
    job.need_model()
    return {"device": job.options.device,
            "note": "in-process torch.compile; not saved — verify/bench rebuild it from the "
                    "source"}
