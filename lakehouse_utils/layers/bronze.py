"""Bronze: Kafka -> Delta, raw and immutable.  ``value_raw`` plus every bit of Kafka metadata, no parsing."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from ..config import Settings
from ..kafka.kafka_conf import spark_options
from . import delta_io, maintenance
from .query_progress import LayerStats
from .streaming import (
    LAYER_CHECKPOINTS,
    PIPELINE_CHECKPOINT,
    app_id_for,
    check_flow,
    ensure_table,
    repair_checkpoint,
    scheduler_pool,
    trigger_kwargs,
)

log = logging.getLogger(__name__)

QUERY_NAME = "bronze"
SKIPPED = "skipped_offsets"  # LayerStats key: offsets lost to retention, skipped with failOnDataLoss=false
CHECKPOINT = LAYER_CHECKPOINTS[0]
COMPACT_EVERY = 50  # batches: Bronze is read as a stream (new files only), compaction is for batch readers
BRONZE_SCHEMA = T.StructType([
    T.StructField("value_raw", T.StringType()),
    T.StructField("key", T.StringType()),
    T.StructField("topic", T.StringType()),
    T.StructField("partition", T.IntegerType()),
    T.StructField("offset", T.LongType()),
    T.StructField("ts_kafka", T.TimestampType()),
    T.StructField("headers", T.ArrayType(T.StructType([
        T.StructField("key", T.StringType()), T.StructField("value", T.StringType())]))),
    T.StructField("ingest_date", T.DateType()),
])


def _text(data: Column) -> Column:
    """Kafka bytes as a string; invalid UTF-8 sequences become U+FFFD (Silver quarantines those rows).

    A Delta (Parquet) string must be UTF-8: raw random bytes, cast as they were, made the table unreadable to
    Arrow readers (deltalake, pandas) while Spark wrote and read it without a complaint.
    """
    return F.make_valid_utf8(data.cast("string"))


def to_bronze(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows -> Bronze rows (``value_raw``, key, topic, partition, offset, ts_kafka, headers)."""
    headers = F.transform(
        F.coalesce(F.col("headers"), F.array()),
        lambda h: F.struct(h["key"].alias("key"), _text(h["value"]).alias("value")),
    )
    return kafka_df.select(
        _text(F.col("value")).alias("value_raw"),
        _text(F.col("key")).alias("key"),
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("ts_kafka"),
        headers.alias("headers"),
        F.to_date("timestamp").alias("ingest_date"),
    )


def read_kafka(spark: SparkSession, settings: Settings, fail_on_data_loss: bool = True) -> DataFrame:
    reader = (
        spark.readStream.format("kafka")
        .options(**spark_options(settings))  # kafka.bootstrap.servers and the Kafka security settings
        .option("subscribe", settings.topic)
        .option("startingOffsets", settings.starting_offsets)
        .option("includeHeaders", "true")
        .option("failOnDataLoss", str(fail_on_data_loss).lower())
        # a topic partition is read by as many tasks as there are cores: one task used one core of a
        # catch-up batch (measured: 250k trades parsed in 6.5 s with two tasks, 11.6 s with one)
        .option("minPartitions", str(spark.sparkContext.defaultParallelism))
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
    return reader.load()


def start_bronze(spark: SparkSession, settings: Settings, trigger: str | None = None,
                 fail_on_data_loss: bool = True, checkpoint: str | Path | None = None,
                 transform: Callable[[DataFrame], DataFrame] | None = None,
                 on_batch: Callable[[pa.Table, Callable[[], Any]], Any] | None = None,
                 parse: Callable[..., pa.Table] | None = None) -> StreamingQuery:
    """Kafka topic -> ``settings.bronze`` (partitioned by ingest_date). ``trigger``: interval or 'available-now'.

    Each micro-batch is committed with delta-rs (``delta_io.append``) carrying (query id, batch id), so a
    batch replayed after a crash is not appended twice: the same guarantee as Spark's Delta sink, without
    its state-reconstruction job per batch.  ``transform`` replaces :func:`to_bronze` (the fused rows: Bronze's
    columns and Silver's parse, ``pipeline.rows_for_layers``), and ``on_batch(rows, commit)`` runs the commit
    (``follow.Chain.bronze_batch``: then the layers that joined take the batch); ``parse(rows, stats)``, if given,
    turns the batch's Arrow rows into the fused rows first (``pipeline.layer_rows``: Silver's parse in Arrow).
    """
    ensure_bronze(spark, settings)
    checkpoint = Path(checkpoint or settings.checkpoint(CHECKPOINT))
    check_flow(settings, CHECKPOINT, (PIPELINE_CHECKPOINT,), checkpoint)
    repair_checkpoint(checkpoint)
    app_id: list[str] = []
    stats = LayerStats()

    def write(batch: DataFrame, batch_id: int) -> None:
        if not app_id:
            app_id.append(app_id_for(QUERY_NAME, checkpoint))
        rows = batch.toArrow()
        if parse is not None:
            rows = parse(rows, stats)
        count_skipped(checkpoint, batch_id, rows, stats)

        def commit() -> None:
            write_batch(settings, rows, app_id[0], batch_id)

        if on_batch is None:
            commit()
        else:
            on_batch(rows, commit)
        maintenance.maybe_in_background(settings, batch_id)  # every maintain_every batches, beside the stream

    with scheduler_pool(spark, QUERY_NAME):
        query = (
            (transform or to_bronze)(read_kafka(spark, settings, fail_on_data_loss))
            .writeStream.queryName(QUERY_NAME)
            .foreachBatch(write)
            .option("checkpointLocation", str(checkpoint))
            .trigger(**trigger_kwargs(trigger or settings.trigger))
            .start()
        )
    query.layer_stats = stats
    return query


def _source_offsets(path: Path) -> dict[tuple[str, int], int] | None:
    """``{(topic, partition): offset}`` of the Kafka source in a checkpoint file (offsets log or initial offsets)."""
    try:
        text = path.read_text().replace("\x00", "")  # the initial offsets file starts with a zero byte
    except OSError:
        return None
    for line in reversed(text.strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc and all(isinstance(v, dict) for v in doc.values()):
            try:
                return {(t, int(p)): int(o) for t, parts in doc.items() for p, o in parts.items()}
            except (TypeError, ValueError):
                return None
    return None


def skipped_offsets(checkpoint: Path, batch_id: int, rows: pa.Table) -> dict[tuple[str, int], tuple[int, int, int]]:
    """Offsets a Kafka micro-batch should hold but does not: ``{(topic, partition): (skipped, first, last)}``.

    A batch covers, per partition, the offsets from the end offsets of the batch before (batch 0: the source's
    initial offsets) up to its own end offsets, all in the checkpoint.  Every offset of this project's topics is a
    message (the producer is idempotent, not transactional, and the topics are not compacted), so an offset of
    that range with no row was no longer in Kafka when the batch read it: deleted by retention, and skipped
    because the query runs with ``failOnDataLoss=false`` (``--allow-data-loss``); with the default the query
    stops instead.  ``first``..``last`` is the range expected.
    """
    end = _source_offsets(checkpoint / "offsets" / str(batch_id))
    start = (_source_offsets(checkpoint / "offsets" / str(batch_id - 1)) if batch_id > 0
             else _source_offsets(checkpoint / "sources" / "0" / "0"))
    if not end or start is None:
        return {}
    held: dict[tuple[str, int], int] = {}
    if rows.num_rows:
        counts = rows.group_by(["topic", "partition"]).aggregate([("offset", "count")]).to_pylist()
        held = {(r["topic"], int(r["partition"])): int(r["offset_count"]) for r in counts}
    out = {}
    for key, stop in end.items():
        first = start.get(key, 0)
        missing = stop - first - held.get(key, 0)
        if missing > 0:
            out[key] = (missing, first, stop - 1)
    return out


def count_skipped(checkpoint: Path, batch_id: int, rows: pa.Table, stats: LayerStats) -> int:
    """Count the offsets of a batch lost to retention (:func:`skipped_offsets`) in ``stats`` and say so."""
    skipped = skipped_offsets(checkpoint, batch_id, rows)
    total = sum(n for n, _, _ in skipped.values())
    if total:
        stats.add(batch_id, SKIPPED, total)
        for (topic, part), (n, first, last) in sorted(skipped.items()):
            message = (f"[bronze] batch {batch_id}: {n:,} of the offsets {first}..{last} of {topic}[{part}] were no "
                       f"longer in Kafka (deleted by retention) and were skipped (--allow-data-loss)")
            log.warning(message)
            print(message, file=sys.stderr)
    return total


def write_batch(settings: Settings, rows: pa.Table, app_id: str, batch_id: int) -> None:
    """Append a micro-batch's Bronze rows (extra columns are ignored); a no-op if (app_id, batch_id) is in."""
    delta_io.append(settings.bronze, rows, app_id, batch_id)
    if batch_id % COMPACT_EVERY == 0:
        delta_io.compact(settings.bronze)


def ensure_bronze(spark: SparkSession, settings: Settings) -> None:
    ensure_table(spark, settings.bronze, BRONZE_SCHEMA, ["ingest_date"])


def latest_offsets(spark: SparkSession, settings: Settings) -> DataFrame:
    """Rows and the latest offset per topic partition (the seed's Bronze verification)."""
    return (spark.read.format("delta").load(str(settings.bronze))
            .groupBy("topic", "partition")
            .agg(F.count("*").alias("rows"), F.min("offset").alias("first_offset"),
                 F.max("offset").alias("latest_offset"), F.max("ts_kafka").alias("latest_ts_kafka"))
            .orderBy("topic", "partition"))
