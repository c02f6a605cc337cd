"""What a notebook's verification cell says when its layer has nothing to show yet (Run All before Start).

``nothing_yet(path, "Bronze", "press Start above")`` is ``None`` once the table holds rows, else one line saying
that the table is missing or empty and what to do, so Run All on a new data dir ends without a traceback.
Light on purpose (deltalake only, imported when a table exists): a kernel on the shared engine that has only run
its setup and verification cells holds neither pandas nor the Spark client.
"""

from __future__ import annotations

from pathlib import Path

from ..config import table_exists


def delta_count(path: str | Path) -> int | None:
    """Rows of a Delta table from its log (no data file read); None if there is no table."""
    if not table_exists(path):
        return None
    from deltalake import DeltaTable

    dt = DeltaTable(str(path))
    try:
        return int(dt.count())
    except Exception:  # no row counts in the log: count the rows
        return dt.to_pyarrow_table(columns=[]).num_rows


def nothing_yet(path: str | Path, what: str, hint: str = "press Start above, and Start in 01_ingest") -> str | None:
    """One line if the Delta table at ``path`` is missing or empty, else ``None``."""
    rows = delta_count(path)
    if rows is None:
        return f"{what}: no table yet at {path} ({hint})"
    if rows == 0:
        return f"{what}: the table at {path} is empty so far ({hint})"
    return None


__all__ = ["delta_count", "nothing_yet"]
