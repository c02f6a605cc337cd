"""What a notebook's verification cell says when its layer has nothing to show yet (Run All before Start).

``nothing_yet(path, "Bronze", "press Start above")`` is ``None`` once the table holds rows, else one line saying
that the table is missing or empty and what to do, so Run All on a new data dir ends without a traceback.
"""

from __future__ import annotations

from pathlib import Path

from .pipeline_status import delta_count


def nothing_yet(path: str | Path, what: str, hint: str = "press Start above, and Start in 01_ingest") -> str | None:
    """One line if the Delta table at ``path`` is missing or empty, else ``None``."""
    rows = delta_count(path)
    if rows is None:
        return f"{what}: no table yet at {path} ({hint})"
    if rows == 0:
        return f"{what}: the table at {path} is empty so far ({hint})"
    return None


__all__ = ["nothing_yet"]
