"""Small helpers shared by the layers: triggers, empty tables, idempotent batch writes, progress."""

from __future__ import annotations

import json
import re
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from ..config import FlowConflict, table_exists
from . import delta_io

AVAILABLE_NOW = "available-now"


# A data dir's tables are built either by the one-query pipeline (``lakehouse demo``, ``pipeline.py``) or by
# the three layer queries (notebooks 02-04, ``lakehouse bronze|silver|gold``); each keeps its own position in
# the topic, so both on one set of tables would write Bronze twice and fold trades into Gold twice.
PIPELINE_CHECKPOINT = "kafka_to_gold"
LAYER_CHECKPOINTS = ("kafka_to_bronze_trades", "bronze_to_silver_trades", "silver_to_gold_bars")
# The layers whose tables each checkpoint's query writes; every commit carries the app id
# "<layer>-<the checkpoint's query id>" (``app_id_for``), so a table tells which checkpoints wrote it.
WRITES: dict[str, tuple[str, ...]] = {
    LAYER_CHECKPOINTS[0]: ("bronze",), LAYER_CHECKPOINTS[1]: ("silver",), LAYER_CHECKPOINTS[2]: ("gold",),
    PIPELINE_CHECKPOINT: ("bronze", "silver", "gold")}


def flow_of(settings: Any) -> str | None:
    """"pipeline" or "layers": the way the data dir's tables were built (``None`` for a new data dir)."""
    if (settings.checkpoint(PIPELINE_CHECKPOINT) / "offsets").is_dir():
        return "pipeline"
    if any((settings.checkpoint(n) / "offsets").is_dir() or (settings.checkpoint(n) / "follower.json").exists()
           for n in LAYER_CHECKPOINTS):
        return "layers"
    return None


def _layer_table(settings: Any, layer: str) -> Path:
    return {"bronze": settings.bronze, "silver": settings.silver}.get(layer) or settings.bars_table("1m")


def _roots(settings: Any, checkpoint: str | Path | None, tables: list[Path]) -> list[Path]:
    """Where checkpoints that may have written ``tables`` live: beside the checkpoint given, the settings'
    checkpoint folder, and ``<data>/checkpoints`` of each table's data dir (``<data>/<layer>/<table>``)."""
    found = [Path(checkpoint).parent] if checkpoint else []
    found += [Path(settings.checkpoints), *(t.parent.parent / "checkpoints" for t in tables)]
    unique: dict[Path, Path] = {}
    for root in found:
        unique.setdefault(root.resolve(), root)
    return list(unique.values())


def check_flow(settings: Any, mine: str, others: tuple[str, ...] | list[str],
               checkpoint: str | Path | None = None) -> None:
    """Refuse to start checkpoint ``mine`` (at ``checkpoint``, default under ``settings``) when a table it
    writes holds commits of a checkpoint of the other flow (``others``).

    Which tables and checkpoints belong together comes from the tables themselves (each commit's app id
    names the checkpoint's query id), so the demo's checkpoints in the default data dir never stop a job that
    writes tables elsewhere, and a job pointed at the demo's tables is refused whatever checkpoint it is given.
    """
    tables = {layer: _layer_table(settings, layer) for layer in WRITES[mine]}
    found: list[tuple[Path, list[Path]]] = []
    for root in _roots(settings, checkpoint, list(tables.values())):
        for other in others:
            qid = query_id_of(root / other)
            if other == mine or qid == "no-checkpoint":
                continue
            wrote = [tables[layer] for layer in WRITES[other] if layer in tables and table_exists(tables[layer])
                     and delta_io.applied_batch(tables[layer], f"{layer}-{qid}") >= 0]
            if wrote:
                found.append((root / other, wrote))
    if not found:
        return
    by_pipeline = any(ck.name == PIPELINE_CHECKPOINT for ck, _ in found)
    built, starting = ("by the one-query pipeline (lakehouse demo)", "layer by layer") if by_pipeline else \
        ("layer by layer (notebooks 02-04 or lakehouse bronze/silver/gold)", "as one query (lakehouse demo)")
    written = sorted({str(t) for _, ts in found for t in ts})
    raise FlowConflict(
        f"{', '.join(written)} {'was' if len(written) == 1 else 'were'} built {built}: checkpoint(s) "
        f"{', '.join(str(ck) for ck, _ in found)} hold the tables' position in the topic, and running them "
        f"{starting} as well would write Bronze twice and count trades in Gold twice. Keep to the flow that "
        f"built them, write to other tables (another --data-dir), or `lakehouse reset` (the tables are rebuilt "
        f"from Kafka).")


_UNITS = {"ms": 0.001, "millisecond": 0.001, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
          "h": 3600, "hour": 3600}


def parse_delay(text: str) -> timedelta:
    """'2 minutes' | '90 seconds' | '1 hour' | '500 ms' -> timedelta."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", text.lower())
    unit = m.group(2) if m else ""
    unit = unit if unit in _UNITS else unit.removesuffix("s")
    if not m or unit not in _UNITS:
        raise ValueError(f"delay {text!r}: expected e.g. '2 minutes' or '30 seconds'")
    return timedelta(seconds=float(m.group(1)) * _UNITS[unit])


def trigger_kwargs(trigger: str) -> dict[str, Any]:
    """'available-now' | 'once' | an interval like '2 seconds' -> ``DataStreamWriter.trigger`` kwargs."""
    t = trigger.strip().lower()
    if t in (AVAILABLE_NOW, "availablenow", "available_now"):
        return {"availableNow": True}
    if t == "once":
        return {"once": True}
    return {"processingTime": trigger}


def ensure_table(spark: SparkSession | None, path: str | Path, schema: StructType, partition_by: list[str]) -> None:
    """Create an empty Delta table with ``schema`` if none exists (so downstream streams can start first).

    Created by delta-rs from the Spark schema (timestamps as Delta's ``timestamp``, UTC): ~10 ms, where a
    Spark write of an empty DataFrame took 1-3 s per table on a cold session (seven tables at a demo's start).
    """
    from deltalake import DeltaTable
    from pyspark.sql.pandas.types import to_arrow_schema

    if table_exists(path):
        return
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        created = DeltaTable.create(str(path), schema=to_arrow_schema(schema, timezone="UTC"),
                                    partition_by=partition_by, mode="ignore")
        delta_io.write_checksum(created)
    except Exception:  # a concurrent creator won: fine if the table is there now
        if not table_exists(path):
            raise


def repair_checkpoint(checkpoint: str | Path) -> list[Path]:
    """Delete temp files a crash left in a checkpoint's logs; returns what was removed.

    Spark writes each offsets/commits entry to a hidden ``.N.<uuid>.tmp`` file and renames it, so such a
    file is never a committed entry.  After a ``kill -9`` at that moment, Spark 4.2 refuses to start the
    query (STATE_STORE_CHECKPOINT_LOCATION_NOT_EMPTY) although nothing was committed.
    """
    removed = []
    for sub in ("offsets", "commits"):
        for f in (Path(checkpoint) / sub).glob(".*.tmp*"):
            f.unlink(missing_ok=True)
            removed.append(f)
    if removed:
        print(f"[checkpoint] removed {len(removed)} temp file(s) left by a crash in {checkpoint}", file=sys.stderr)
    return removed


def query_id_of(checkpoint: str | Path) -> str:
    """The streaming query id stored in a checkpoint (stable across restarts of that checkpoint)."""
    try:
        return json.loads((Path(checkpoint) / "metadata").read_text().splitlines()[0])["id"]
    except (OSError, ValueError, KeyError, IndexError):
        return "no-checkpoint"


def app_id_for(name: str, checkpoint: str | Path) -> str:
    """``<name>-<the checkpoint's query id>``: stable across restarts of a checkpoint, new after a reset."""
    return f"{name}-{query_id_of(checkpoint)}"


def idempotent_append(df: DataFrame, path: str | Path, app_id: str, batch_id: int,
                      partition_by: list[str]) -> None:
    """Append that is a no-op when the same (app_id, batch_id) was already committed to this table."""
    (df.write.format("delta").mode("append").partitionBy(*partition_by)
     .option("txnAppId", app_id).option("txnVersion", batch_id).save(str(path)))


@contextmanager
def idempotent_dml(spark: SparkSession, app_id: str, batch_id: int):
    """MERGE/UPDATE inside this block are skipped by Delta if (app_id, batch_id) was already applied."""
    spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(batch_id))
    try:
        yield
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")


@contextmanager
def scheduler_pool(spark: SparkSession, name: str):
    """Start a query inside this block and its jobs run in the FAIR scheduler pool ``name``.

    A query's stream thread inherits the local properties of the thread that started it, so each layer gets
    its own pool: a long Gold job no longer holds Bronze's and Silver's tasks back (``spark.scheduler.mode``
    is FAIR in ``get_spark``; without it the pool is ignored).
    """
    sc = spark.sparkContext
    before = sc.getLocalProperty("spark.scheduler.pool")
    sc.setLocalProperty("spark.scheduler.pool", name)
    try:
        yield
    finally:
        sc.setLocalProperty("spark.scheduler.pool", before)  # type: ignore[arg-type]


def stop_between_batches(query: Any, timeout: float = 10.0) -> None:
    """Stop ``query`` once the batch it is running (if any) has ended, then wait for its helpers.

    ``StreamingQuery.stop()`` interrupts a batch in progress.  Inside a Python ``foreachBatch`` that comes back as a
    Py4J error, and Spark decides whether it was an interruption by matching its message with the regex
    ``An error occurred while calling((.|\\r\\n|\\r|\\n)*)(...)`` (``StreamExecution``), which recurses once per
    character: on a long message the stream thread died of a ``StackOverflowError`` instead of stopping (seen at
    the end of ``lakehouse demo --duration``).  Between batches there is nothing to interrupt.

    A query that stops so by itself (a follower, a query of the engine: ``stops_between_batches``) is just stopped.
    A Spark query catching up runs its batches back to back: after ``timeout`` it is stopped as it is.
    """
    deadline = time.monotonic() + (0.0 if getattr(query, "stops_between_batches", False) else timeout)
    while query.isActive and time.monotonic() < deadline:
        try:
            busy = bool(query.status.get("isTriggerActive"))
        except Exception:  # the query ended meanwhile
            break
        if not busy:
            break
        time.sleep(0.05)
    if query.isActive:
        query.stop()
    join_helpers(query)


def join_helpers(query: StreamingQuery, timeout: float = 10.0) -> None:
    """Wait for the threads a layer runs beside ``query`` (``query.helpers``: Gold's idle finalizer) to leave.

    Call it once the query has ended, before the process exits: a daemon thread cut off inside a delta-rs
    or Arrow call at interpreter exit aborts the process ("terminate called without an active exception").
    """
    for thread in getattr(query, "helpers", []):
        thread.join(timeout)


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
