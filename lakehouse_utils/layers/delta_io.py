"""Small Delta commits from the driver with delta-rs (``deltalake``): no Spark job per commit.

Why: on this 2-core laptop a Spark Delta commit that carries an idempotent-write id, or a ``replaceWhere``,
or any read of the table runs a state-reconstruction job first (1-3 extra Spark jobs, 0.5-3 s under load),
and the Delta log checkpoint every 10 commits stalls a stream for 5-19 s.  A micro-batch of a live stream
holds a few hundred rows: delta-rs appends them in ~15 ms and checks an app's last batch in ~8 ms (measured,
see the README's Performance section).  Spark still reads, parses, deduplicates and aggregates; these helpers
only commit the result.  Both engines write the same Delta protocol and the same ``txn`` actions, so
Spark's streaming sources read these tables and Delta's idempotent-write ids work across both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

log = logging.getLogger(__name__)
T = TypeVar("T")
COMMIT_TRIES = 5


def _retrying(what: str, path: str | Path, op: Callable[[], T]) -> T:
    """``op()`` again (on the table as it is now) when a concurrent commit conflicts with it, e.g. ``lakehouse
    maintain`` compacting the files a Gold replace read: the batch's commit is idempotent (its app id), so
    trying it again on the new version is exact."""
    for attempt in range(COMMIT_TRIES):
        try:
            return op()
        except CommitFailedError as exc:
            if attempt == COMMIT_TRIES - 1:
                raise
            log.warning("%s of %s met a concurrent commit (%s): trying again", what, path, str(exc)[:200])
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _table(path: str | Path) -> DeltaTable:
    return DeltaTable(str(path))


def applied_batch(path: str | Path, app_id: str) -> int:
    """The last batch id ``app_id`` committed to the table (-1 if none)."""
    return _applied(_table(path), app_id)


def _applied(dt: DeltaTable, app_id: str) -> int:
    version = dt.transaction_version(app_id)
    return -1 if version is None else int(version)


def _done(dt: DeltaTable, app_id: str | None, batch_id: int | None) -> bool:
    return app_id is not None and batch_id is not None and _applied(dt, app_id) >= batch_id


def conform(data: pa.Table, dt: DeltaTable) -> pa.Table:
    """``data`` with the table's columns, in its order and types (e.g. Spark's Arrow -> Delta's)."""
    target = pa.schema(dt.schema().to_arrow())
    return data.select(target.names).cast(target)


def _commit(app_id: str | None, batch_id: int | None) -> CommitProperties | None:
    if app_id is None or batch_id is None:
        return None
    return CommitProperties(app_transactions=[Transaction(app_id, int(batch_id))])


def append(path: str | Path, data: pa.Table, app_id: str | None = None, batch_id: int | None = None) -> bool:
    """Append ``data``; with (app_id, batch_id) a no-op if that batch was committed already. True if written."""
    def once() -> bool:
        dt = _table(path)
        if data.num_rows == 0 or _done(dt, app_id, batch_id):
            return False
        write_deltalake(dt, conform(data, dt), mode="append", commit_properties=_commit(app_id, batch_id))
        write_checksum(dt)
        return True

    return _retrying("append", path, once)


def replace(path: str | Path, data: pa.Table, predicate: str, app_id: str | None = None,
            batch_id: int | None = None) -> bool:
    """Replace the rows matching ``predicate`` by ``data`` (every row of which must match it), one commit."""
    def once() -> bool:
        dt = _table(path)
        if _done(dt, app_id, batch_id):
            return False
        write_deltalake(dt, conform(data, dt), mode="overwrite", predicate=predicate,
                        commit_properties=_commit(app_id, batch_id))
        write_checksum(dt)
        return True

    return _retrying("replace", path, once)


def add_columns(path: str | Path, columns: list[tuple[str, str]]) -> list[str]:
    """Add the ``(name, Delta primitive type)`` columns the table lacks, nullable, in one metadata commit.

    Existing rows read NULL there. Spark's Delta streaming readers of the table pick the column up when they
    (re)start; a query already running over the table stops at the schema change and resumes after a restart.
    """
    from deltalake import Field
    from deltalake.schema import PrimitiveType

    dt = _table(path)
    have = {f.name for f in dt.schema().fields}
    missing = [(name, kind) for name, kind in columns if name not in have]
    if missing:
        dt.alter.add_columns([Field(name, PrimitiveType(kind), nullable=True) for name, kind in missing])
        write_checksum(dt)
    return [name for name, _ in missing]


_COMPACTING: dict[str, threading.Lock] = {}
_COMPACTING_LOCK = threading.Lock()


@contextlib.contextmanager
def _compacting(path: str | Path) -> Iterator[bool]:
    """Whether this caller is the one compacting ``path`` now: one at a time, in this process (a thread lock) and
    across processes (``flock`` on ``_delta_log/.lakehouse-compact.lock``, which Delta readers ignore).

    delta-rs commits a compaction whose files a concurrent one already removed without a conflict (seen in the
    soak: two OPTIMIZE commits removed the same 50 Bronze files, each added their rows again, and Bronze held every
    row up to 8 times), so two compactions of a table must never overlap: the second one steps aside.
    """
    key = str(Path(path).resolve())
    with _COMPACTING_LOCK:
        lock = _COMPACTING.setdefault(key, threading.Lock())
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        with open(Path(path) / "_delta_log" / ".lakehouse-compact.lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        lock.release()


def compact(path: str | Path, min_files: int = 24, partition_filters: list[tuple[str, str, Any]] | None = None) -> int:
    """Bin-pack the table's small files once there are more than ``min_files``; returns files removed.

    A stream adds one small file per micro-batch, and a reader opens every file: without this, a live chart
    or Silver's duplicate check slows down as the day goes on.  The commit only rearranges data
    (``dataChange = false``): Spark's streaming readers of the table skip it, and appends go on beside it.
    A compaction of the same table already running (``lakehouse maintain``, a layer's own) makes this one return
    0 at once (:func:`_compacting`).
    """
    with _compacting(path) as mine:
        if not mine:
            log.info("compaction of %s skipped: another one is running", path)
            return 0
        dt = _table(path)
        files = dt.file_uris(file_pruning_predicate=partition_filters) if partition_filters else dt.file_uris()
        if len(files) <= min_files:
            return 0
        try:
            metrics = dt.optimize.compact(partition_filters=partition_filters)  # type: ignore[arg-type]
        except CommitFailedError as exc:  # a replace got there first
            log.info("compaction of %s skipped: a concurrent commit (%s)", path, str(exc)[:200])
            return 0
        write_checksum(dt)
        return int(metrics.get("numFilesRemoved", 0))


def write_checksum(dt: DeltaTable) -> Path | None:
    """Write Delta's version checksum (``_delta_log/<version>.crc``) of the table's current version.

    delta-rs commits without one, and Spark's Delta reader then rebuilds a snapshot's protocol and metadata with a
    Spark job over the JSON log, on every ``latestOffset`` of a streaming query that reads the table (1-2 s per
    Silver or Gold batch, measured) and on every batch read.  With the file it reads them from here (~30 ms).  The
    file describes exactly the snapshot at that version (protocol, metadata, file count and size), whoever
    committed it; the optional parts (set transactions, the file list) are left out, so Spark takes those from the
    log itself.  Written to a temp file and renamed: a reader never sees half of it.
    """
    dt.update_incremental()
    version = dt.version()
    log_dir = Path(dt.table_uri.removeprefix("file://")) / "_delta_log"
    target = log_dir / f"{version:020d}.crc"
    if not log_dir.is_dir() or target.exists():
        return None
    proto, meta = dt.protocol(), dt.metadata()
    protocol: dict[str, Any] = {"minReaderVersion": proto.min_reader_version,
                                "minWriterVersion": proto.min_writer_version}
    if proto.reader_features:
        protocol["readerFeatures"] = list(proto.reader_features)
    if proto.writer_features:
        protocol["writerFeatures"] = list(proto.writer_features)
    metadata = {"id": meta.id, "name": meta.name, "description": meta.description,
                "format": {"provider": "parquet", "options": {}}, "schemaString": dt.schema().to_json(),
                "partitionColumns": list(meta.partition_columns), "configuration": dict(meta.configuration),
                "createdTime": meta.created_time}
    sizes = pa.table(dt.get_add_actions(flatten=True)).column("size_bytes")
    checksum = {"tableSizeBytes": int(pc.sum(sizes).as_py() or 0), "numFiles": len(sizes),
                "numMetadata": 1, "numProtocol": 1, "protocol": protocol, "metadata": metadata}
    # a name of its own: maintenance on a thread of the pipeline's process may write the same version's at once
    # (the soak found a batch failing on the other's rename); the file is a shortcut, so a failure only logs
    tmp = log_dir / f".{version:020d}.crc.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(json.dumps(checksum))
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("no checksum for %s version %d: %s", log_dir.parent, version, exc)
        return None
    return target


__all__ = ["add_columns", "append", "applied_batch", "compact", "conform", "replace", "write_checksum"]
