"""Table maintenance (``lakehouse maintain``): compact, vacuum what nobody can need any more, checkpoint the log.

Streams add a small file per micro-batch; the layers compact them as they go (``delta_io.compact``), but the
files a compaction replaced stay on disk, and every table's log grows by a JSON commit per batch. For each table
:func:`maintain_table`:

1. **compacts** it (``dataChange = false``: writers go on beside it, readers and followers skip it);
2. **vacuums** the files earlier commits removed, except those a reader may still need. The first version kept,
   ``k0``, is the earlier of: the version current at ``now - retain`` (time travel stays possible back to then;
   ``retain`` is never under a minute, so a reader in the middle of a read keeps its files), and the first version
   a *follower* has not processed yet (Silver follows Bronze's table, Gold Silver's, version by version:
   ``layers.follow``; a layer stopped for a week still finds every file it needs). A removed file goes only if
   no version from ``k0`` on holds it. Only files the log removed are candidates: a file being written and not
   committed yet is never touched;
3. writes a **log checkpoint** (readers load one Parquet file instead of replaying every JSON commit) and
   **prunes the log** to what ``k0`` needs: every entry (commit, checksum, checkpoint) of a version before the
   newest checkpoint at or before ``k0`` is deleted, as Delta's own metadata cleanup does past its log retention.
   A table's state is that checkpoint plus the commits after it, so every version from ``k0`` on stays readable.
   Why not delta-rs' ``cleanup_metadata()``: it removed nothing here (delta-rs issues #2180, #3692). Why at all:
   each write lists ``_delta_log``, so a batch's cost grew with the log's length (README: Soak, the fifth run).

Uses delta-rs only: no JVM, safe to run beside the demo, the engine or a notebook.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from deltalake import DeltaTable

from ..config import Settings, commit_file
from .delta_io import compact, write_checksum
from .follow import FollowerError, processed_version, removed_files
from .streaming import LAYER_CHECKPOINTS

log = logging.getLogger(__name__)
MIN_RETAIN_S = 60.0
EXACT_VERSIONS = 20_000  # up to this many commits since k0 (their JSON read), vacuum keeps exactly the files of
# the versions kept; beyond (a week at a commit a second is 600k), by delta-rs' retention in whole hours


@dataclass
class TableMaintenance:
    name: str
    path: Path
    version: int = -1  # the table's version after maintenance
    compacted: int = 0  # small files replaced by compaction
    vacuumed: int = 0  # removed files deleted
    bytes_freed: int = 0
    kept_from: int | None = None  # k0: every file a version from here on holds is kept
    held_by: str | None = None  # "silver's follower (version 41 done)" when it, not the window, set k0
    checkpoint: bool = False
    logs_removed: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.version < 0:
            return f"{self.name}: {'; '.join(self.notes) or 'no table'}"
        held = f", held by {self.held_by}" if self.held_by else ""
        return (f"{self.name}: v{self.version}, compacted {self.compacted} file(s), vacuumed {self.vacuumed} "
                f"({self.bytes_freed / 1e6:.1f} MB), kept from v{self.kept_from}{held}"
                f"{', log checkpoint' if self.checkpoint else ''}"
                f"{f', {self.logs_removed} old log file(s) removed' if self.logs_removed else ''}"
                f"{''.join(f'; {n}' for n in self.notes)}")


def retain_seconds(text: str) -> float:
    """``--retain`` / ``maintain_retain`` in seconds: a duration (7d, 12h, 30m) or an ISO time to keep back to."""
    from datetime import UTC, datetime

    from ..kafka.rest_backfill import parse_when

    now = datetime.now(UTC)
    return (now - parse_when(text, now)).total_seconds()


def followers(settings: Settings) -> dict[Path, tuple[int, str]]:
    """Source table -> (first version its follower still needs, who): Silver follows Bronze, Gold Silver."""
    out: dict[Path, tuple[int, str]] = {}
    for layer, checkpoint, source in (("silver", LAYER_CHECKPOINTS[1], settings.bronze),
                                      ("gold", LAYER_CHECKPOINTS[2], settings.silver)):
        done = processed_version(settings.checkpoint(checkpoint))
        if done is not None:
            out[Path(source)] = (done + 1, f"{layer}'s follower (version {done} done)")
    return out


def _commit_time(table: Path, version: int) -> float | None:
    try:
        return commit_file(table, version).stat().st_mtime
    except OSError:
        return None


def version_at(table: Path, when: float, latest: int) -> int:
    """The version current at ``when`` (the newest committed at or before it; the oldest left if none was)."""
    lo, hi, found = 0, latest, None
    while lo <= hi:  # commit times rise with the version
        mid = (lo + hi) // 2
        t = _commit_time(table, mid)
        if t is None:  # cleaned from the log: older than anything kept
            lo = mid + 1
        elif t <= when:
            found, lo = mid, mid + 1
        else:
            hi = mid - 1
    return found if found is not None else min(lo, latest)


def _removed_after(table: Path, k0: int, latest: int) -> set[str] | None:
    """The files the commits after ``k0`` removed; None if one is gone from the log. Every file a version from
    ``k0`` on holds is either in the latest version or among these."""
    try:
        return removed_files(table, k0, latest)
    except FollowerError:
        return None


def _vacuum(dt: DeltaTable, table: Path, k0: int, latest: int, now: float, retain_s: float) -> list[Path]:
    """The files no version from ``k0`` on holds, written more than ``retain_s`` ago. A full listing (delta-rs'
    lighter mode sees only what was removed since the last log checkpoint) of every file the latest version does
    not hold, less those the commits after ``k0`` removed; a file no commit names yet (being written) is young,
    so the age keeps it. Past EXACT_VERSIONS commits to read, delta-rs' own retention in whole hours instead."""
    keep = _removed_after(table, k0, latest) if latest - k0 <= EXACT_VERSIONS else None
    if keep is not None:
        found = [rel for rel in dt.vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False,
                                          full=True) if rel not in keep]
    else:
        since = _commit_time(table, k0)
        hours = math.ceil((now - since) / 3600) if since is not None else None  # rounded up: keeps more, never less
        found = dt.vacuum(retention_hours=hours, dry_run=True, enforce_retention_duration=False, full=True)
    out = []
    for rel in found:
        file = table / rel
        try:
            if file.stat().st_mtime < now - retain_s:
                out.append(file)
        except FileNotFoundError:
            continue
    return out


def _log_version(name: str) -> int | None:
    """The version a ``_delta_log`` entry belongs to (``N.json``, ``N.crc``, ``N.checkpoint[.k.n].parquet``,
    Hadoop's ``.N.json.crc``); None for anything else (``_last_checkpoint``, locks, folders)."""
    head = name.lstrip(".").split(".", 1)[0]
    return int(head) if len(head) == 20 and head.isdigit() else None


def prune_log(table: Path, keep_from: int) -> int:
    """Delete the log entries of every version before the newest checkpoint at or before ``keep_from``; returns
    how many files went. Versions from that checkpoint on stay readable; none if it has no such checkpoint."""
    log_dir = Path(table) / "_delta_log"
    entries = [(v, e) for e in log_dir.iterdir() if e.is_file() and (v := _log_version(e.name)) is not None]
    checkpoints = [v for v, e in entries if ".checkpoint." in e.name and v <= keep_from]
    if not checkpoints:
        return 0
    base, removed = max(checkpoints), 0
    for version, entry in sorted(entries):
        if version < base:
            try:
                entry.unlink()
                removed += 1
            except FileNotFoundError:
                continue
    return removed


def maintain_table(name: str, path: Path, retain_s: float, needed: tuple[int, str] | None = None,
                   now: float | None = None) -> TableMaintenance:
    """Compact, vacuum and checkpoint one table (see the module)."""
    report = TableMaintenance(name, Path(path))
    if not (Path(path) / "_delta_log").is_dir():
        report.notes.append("no table yet")
        return report
    retain_s = max(retain_s, MIN_RETAIN_S)
    report.compacted = compact(path, min_files=1)
    dt = DeltaTable(str(path))
    latest = dt.version()
    now = time.time() if now is None else now
    k0 = version_at(Path(path), now - retain_s, latest)
    if needed is not None and needed[0] < k0:
        k0, report.held_by = max(needed[0], 0), needed[1]
    report.kept_from = k0
    for file in _vacuum(dt, Path(path), k0, latest, now, retain_s):
        try:
            size = file.stat().st_size
            file.unlink()
        except FileNotFoundError:
            continue
        report.vacuumed += 1
        report.bytes_freed += size
    dt = DeltaTable(str(path))
    dt.create_checkpoint()
    report.checkpoint = True
    report.logs_removed = prune_log(Path(path), k0)
    write_checksum(dt)
    report.version = dt.version()
    return report


def maintain(settings: Settings, retain_s: float = 7 * 86400.0,
             only: list[str] | None = None) -> list[TableMaintenance]:
    """:func:`maintain_table` on every table (or the ``only`` ones), each with what its follower needs."""
    needs = followers(settings)
    out = []
    for name, path in settings.tables.items():
        if only and name not in only:
            continue
        try:
            out.append(maintain_table(name, path, retain_s, needs.get(Path(path))))
        except Exception as exc:  # one table's failure is reported; the others are still maintained
            failed = TableMaintenance(name, Path(path))
            failed.notes.append(f"failed: {type(exc).__name__}: {str(exc)[:300]}")
            out.append(failed)
    return out


_running = threading.Lock()


def maybe_in_background(settings: Settings, batch_id: int) -> threading.Thread | None:
    """Every ``settings.maintain_every`` batches of a live pipeline, :func:`maintain` on a thread of its own
    (one at a time; a batch never waits for it: its commits retry on a conflict with it, ``delta_io``)."""
    every = settings.maintain_every
    if every <= 0 or batch_id % every != every - 1 or not _running.acquire(blocking=False):
        return None

    def run() -> None:
        try:
            reports = maintain(settings, retain_seconds(settings.maintain_retain))
            log.info("maintenance after batch %d: %s", batch_id, " | ".join(r.line() for r in reports))
        except Exception:
            log.exception("maintenance after batch %d failed", batch_id)
        finally:
            _running.release()

    thread = threading.Thread(target=run, name="lakehouse-maintain", daemon=True)
    thread.start()
    return thread


__all__ = ["MIN_RETAIN_S", "TableMaintenance", "followers", "maintain", "maintain_table", "maybe_in_background",
           "prune_log", "retain_seconds", "version_at"]
