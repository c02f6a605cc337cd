"""Time travel without a JVM: each table's history, Gold as of a version or a timestamp, and what changed since.

Every commit to a Delta table is a version; ``deltalake`` reads the table as it was at any version still in the
log (``DeltaTable.load_as_version(version | datetime)``). Here:

* :func:`history` / :func:`histories`: the commits of one table / of every layer (bronze, silver, gold 1m/5m/1h):
  version, time, operation, rows added, files added and removed, from ``DeltaTable.history()``.
* :func:`bars_at`: a Gold table's bars as of a version or a timestamp, as pandas.
* :func:`bars_diff`: the bars that differ between two such reads, one row each with what changed:
  ``new``, ``forming -> final``, ``updated`` (a forming bar that took more trades), and the two that Gold never
  does (``final changed``, ``final -> forming``) and ``gone``, so a diff that shows them is a finding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import TIMEFRAMES, Settings, table_exists
from .sql import commit_times, open_at, parse_as_of

# a Gold bar's key and the columns a change is told by (layers.gold_tables: KEY, BAR_COLUMNS; not imported from
# there, which would load pyspark into a kernel or a `lakehouse sql` that has no use for it)
KEY = ["exchange", "symbol", "bar_start"]
VALUES = ["open", "high", "low", "close", "volume", "vwap", "trades", "buy_volume", "sell_volume"]
CHANGES = ["new", "forming -> final", "updated", "final changed", "final -> forming", "gone"]
# what each kind of commit calls the rows it added: delta-rs writes and merges, Spark merges (its numOutputRows
# counts the rows a merge rewrote too: last), Spark writes
_ADDED = ("num_added_rows", "num_target_rows_inserted", "numTargetRowsInserted", "numOutputRows")


@dataclass(frozen=True)
class Commit:
    table: str
    version: int
    timestamp: datetime  # UTC
    operation: str
    rows_added: int | None  # None: the commit does not say (CREATE TABLE, a metadata change)
    files_added: int | None
    files_removed: int | None
    data_change: bool  # False for a compaction (OPTIMIZE): the same rows in fewer files


def layer_tables(settings: Settings) -> dict[str, Path]:
    """The layers' tables by the names ``lakehouse sql`` knows them: bronze, silver, gold_1m, gold_5m, gold_1h."""
    return {"bronze": settings.bronze, "silver": settings.silver,
            **{f"gold_{tf}": settings.bars_table(tf) for tf in TIMEFRAMES}}


def _metric(metrics: dict[str, Any], *names: str) -> int | None:
    for name in names:
        if metrics.get(name) is not None:
            return int(metrics[name])
    return None


def history(path: str | Path, table: str = "", limit: int | None = None) -> list[Commit]:
    """The commits of the Delta table at ``path``, oldest first (the last ``limit`` if given); [] if none."""
    if not table_exists(path):
        return []
    from deltalake import DeltaTable

    out = []
    commits = DeltaTable(str(path)).history(limit)
    times = commit_times(path, commits)
    for c in commits:
        metrics = c.get("operationMetrics") or {}
        operation = str(c.get("operation", "?"))
        out.append(Commit(
            table=table or Path(path).name, version=int(c["version"]),
            timestamp=times[int(c["version"])], operation=operation,
            rows_added=_metric(metrics, *_ADDED),
            files_added=_metric(metrics, "num_added_files", "numFilesAdded", "num_target_files_added", "numFiles"),
            files_removed=_metric(metrics, "num_removed_files", "numFilesRemoved", "num_target_files_removed"),
            data_change=operation != "OPTIMIZE"))
    return sorted(out, key=lambda c: c.version)


def histories(settings: Settings, tables: dict[str, Path] | None = None) -> pd.DataFrame:
    """Every commit of every layer's table (default :func:`layer_tables`) as one frame, table by table."""
    rows = [asdict(c) for name, path in (tables or layer_tables(settings)).items() for c in history(path, name)]
    columns = list(Commit.__dataclass_fields__)
    frame = pd.DataFrame(rows, columns=columns)
    for c in ("rows_added", "files_added", "files_removed"):
        frame[c] = frame[c].astype("Int64")
    return frame


def history_summary(commits: pd.DataFrame) -> pd.DataFrame:
    """Per table: commits, versions, the first and last commit's time, rows added, the commits per operation."""
    if commits.empty:
        return pd.DataFrame(columns=["table", "commits", "last_version", "first_commit", "last_commit",
                                     "rows_added", "operations"])
    grouped = commits.groupby("table", sort=False)
    out = grouped.agg(commits=("version", "size"), last_version=("version", "max"),
                      first_commit=("timestamp", "min"), last_commit=("timestamp", "max"),
                      rows_added=("rows_added", "sum"))
    out["operations"] = grouped["operation"].agg(
        lambda ops: ", ".join(f"{op} {n}" for op, n in ops.value_counts(sort=False).items()))
    return out.reset_index()


def version_at(path: str | Path, when: str | datetime) -> int | None:
    """The version that was the table's latest at ``when`` (ISO text or a datetime, UTC if naive; None if the
    table did not exist yet)."""
    when = parse_as_of(when)
    before = [c.version for c in history(path) if c.timestamp <= when]
    return max(before) if before else None


def first_version(path: str | Path) -> int:
    """The table's oldest version still in its log: 0, unless maintenance pruned the log before a later one."""
    versions = [c.version for c in history(path)]
    return min(versions) if versions else 0


def middle_version(path: str | Path) -> int:
    """The version halfway through the table's history (what notebook 08 compares with now by default)."""
    versions = [c.version for c in history(path)]
    return versions[len(versions) // 2] if versions else 0


def halfway(path: str | Path) -> datetime:
    """The time halfway between the table's first and last commit (UTC)."""
    stamps = [c.timestamp for c in history(path)]
    return stamps[0] + (stamps[-1] - stamps[0]) / 2


def bar_counts(bars: pd.DataFrame) -> str:
    """``60 bars (57 final)``."""
    return f"{len(bars)} bars ({int(bars['is_final'].sum()) if len(bars) else 0} final)"


def added_line(commits: pd.DataFrame, table: str, rows_now: int | None) -> str:
    """``bronze: 2,672 rows added by 5 commits, 2,672 rows now`` (equal for an append-only table)."""
    mine = commits[commits["table"] == table]
    added = int(mine["rows_added"].sum()) if len(mine) else 0
    now = "no table" if rows_now is None else f"{rows_now:,} rows now"
    return f"{table}: {added:,} rows added by its commits, {now}"


def changes_line(diff: pd.DataFrame) -> str:
    """``60 new``, ``1 forming -> final, 2 updated`` or ``no change``: the kinds of change that occur."""
    return ", ".join(f"{n} {kind}" for kind, n in diff_counts(diff).items() if n) or "no change"


def commit_time(path: str | Path, version: int) -> datetime | None:
    """When ``version`` of the table was committed (UTC); None if the log has no such version."""
    return next((c.timestamp for c in history(path) if c.version == version), None)


def late_since(settings: Settings, when: str | datetime) -> int | None:
    """Late trades Gold recorded since ``when``: ``late_trades``' rows now minus its rows as of then (time travel
    on that table). They are the trades that came too late to change a bar (None: no ``late_trades`` table)."""
    path = settings.late_trades
    if not table_exists(path):
        return None
    from deltalake import DeltaTable

    then = version_at(path, when)
    before = 0 if then is None else DeltaTable(str(path), version=then).count()
    return int(DeltaTable(str(path)).count()) - int(before)


def bars_at(path: str | Path, version: int | None = None, as_of: str | datetime | None = None) -> pd.DataFrame:
    """The Gold bars of the table at ``path`` now, at ``version`` or as of ``as_of``, sorted by key."""
    dt = open_at(Path(path).name, Path(path), version, as_of)
    df = dt.to_pandas()
    return df.sort_values(KEY, kind="stable").reset_index(drop=True)


def _kind(row: pd.Series) -> str | None:
    if row["_merge"] == "right_only":
        return "new"
    if row["_merge"] == "left_only":
        return "gone"
    was, now = bool(row["is_final_before"]), bool(row["is_final_after"])
    if not was and now:
        return "forming -> final"
    if was and not now:
        return "final -> forming"
    if row["changed"]:
        return "final changed" if was else "updated"
    return None


def bars_diff(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """The bars that differ between two reads of one Gold table (``bars_at``), one row per bar in key order.

    Columns: the key, ``change`` (one of :data:`CHANGES`), ``changed`` (the value columns that differ, comma
    separated) and ``trades``, ``close``, ``volume`` before and after (NA where the bar was not there).
    """
    cols = KEY + VALUES + ["is_final"]
    merged = before[cols].merge(after[cols], on=KEY, how="outer", suffixes=("_before", "_after"), indicator=True)
    both = merged["_merge"] == "both"
    differs = {c: both & ~((merged[f"{c}_before"] == merged[f"{c}_after"])
                           | (merged[f"{c}_before"].isna() & merged[f"{c}_after"].isna())) for c in VALUES}
    merged["changed"] = [", ".join(c for c in VALUES if differs[c].iloc[i]) for i in range(len(merged))]
    merged["change"] = merged.apply(_kind, axis=1) if len(merged) else pd.Series(dtype=object)
    out = merged[merged["change"].notna()]
    keep = KEY + ["change", "changed"] + [f"{c}_{w}" for c in ("trades", "close", "volume") for w in ("before",
                                                                                                       "after")]
    return out[keep].sort_values(KEY, kind="stable").reset_index(drop=True)


def diff_counts(diff: pd.DataFrame) -> dict[str, int]:
    """How many bars of each kind of change (every kind of :data:`CHANGES`, zeros too)."""
    counts = diff["change"].value_counts()
    return {kind: int(counts.get(kind, 0)) for kind in CHANGES}


__all__ = ["CHANGES", "Commit", "added_line", "bar_counts", "bars_at", "bars_diff", "changes_line", "commit_time",
           "diff_counts", "first_version", "halfway", "histories", "history", "history_summary", "late_since",
           "layer_tables", "middle_version", "version_at"]
