"""The live path as one streaming query: Kafka -> Bronze -> Silver -> Gold in every micro-batch.

Run layer by layer (notebooks 02-04, ``lakehouse bronze|silver|gold``), a trade crosses three queries, and
Silver and Gold each first wait for their next trigger, then for Delta's streaming source to find the new
table version (~0.5 s a batch here) and for a Spark job.  Measured on this laptop: Bronze 0.8 s, Silver 2.1 s,
Gold 1.4 s per batch, so a trade reached Gold in ~9 s.  ``start_pipeline`` reads Kafka once per micro-batch
and runs the same three layers in a row on that batch:

1. one Spark job: ``to_bronze`` of the Kafka rows, brought to the driver as Arrow, and Silver's parse of them
   (``silver.Parser``: in Arrow, Spark's ``parse_bronze`` for rows that are not canonical; with
   ``silver_parse = "spark"`` the parse is in the same Spark job);
2. ``bronze.write_batch``: the raw rows appended to Bronze (delta-rs, idempotent on (app id, batch id));
3. ``silver.commit_parsed``: deduplicated trades to Silver, bad rows to quarantine; returns the new trades;
4. ``GoldWriter.process_arrow``: those trades folded into the 1m, 5m and 1h bars.

Each table's commit carries its own app id (``bronze-``, ``silver-``, ``gold-`` + this checkpoint's query id)
and the batch id, so a batch replayed after a crash between two commits skips the tables it reached and
completes the others with the same rows (Silver returns the trades it holds at the batch's offsets).

A data dir is run by this query or by the layer-by-layer queries, not both (:func:`check_flow`): each keeps
its own position in the topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from ..config import Settings
from . import bronze, gold, maintenance, silver
from .gold_writer import GoldWriter, start_idle_finalizer
from .query_progress import LayerStats
from .streaming import (
    LAYER_CHECKPOINTS,
    PIPELINE_CHECKPOINT,
    app_id_for,
    check_flow,
    repair_checkpoint,
    scheduler_pool,
    trigger_kwargs,
)

QUERY_NAME = "pipeline"
CHECKPOINT = PIPELINE_CHECKPOINT


KAFKA_SCHEMA = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
                "timestampType int, headers array<struct<key:string,value:binary>>")  # Spark's Kafka source rows
LAYER_COLUMNS = [*silver.SILVER_SCHEMA.fieldNames(), "reason", "value_raw", "ts_kafka", "ingest_date", "key",
                 "headers"]


def rows_for_layers(kafka_batch: DataFrame) -> DataFrame:
    """Kafka rows -> Bronze's columns and ``parse_bronze``'s in one DataFrame (one Spark job per batch)."""
    return silver.parse_bronze(bronze.to_bronze(kafka_batch), keep=("key", "headers")).select(*LAYER_COLUMNS)


def layer_rows(spark: SparkSession, settings: Settings
               ) -> tuple[Callable[[DataFrame], DataFrame], Callable[..., pa.Table] | None]:
    """What a batch's Spark job computes from the Kafka rows, and what then parses its Arrow rows (None: nothing):
    ``to_bronze`` and a ``silver.Parser`` (``silver_parse = "arrow"``), or :func:`rows_for_layers` alone."""
    if settings.silver_parse != "arrow":
        return rows_for_layers, None
    kafka = spark.createDataFrame([], KAFKA_SCHEMA)
    parser = silver.Parser(spark, settings, [F.col(c) for c in LAYER_COLUMNS], keep=("key", "headers"),
                           raw_of_valid=True, source=bronze.to_bronze(kafka))
    return bronze.to_bronze, parser


def process_batch(rows: pa.Table, batch_id: int, settings: Settings, checkpoint: Path, spark: SparkSession,
                  stats: LayerStats | None = None) -> None:
    """One micro-batch (``rows_for_layers`` as Arrow) through Bronze, Silver and Gold, in that order."""
    t0 = time.perf_counter()
    bronze.write_batch(settings, rows, app_id_for("bronze", checkpoint), batch_id)
    t1 = time.perf_counter()
    trades = silver.commit_parsed(rows, batch_id, settings, app_id_for("silver", checkpoint), stats)
    t2 = time.perf_counter()
    GoldWriter.for_app(spark, settings, app_id_for("gold", checkpoint), checkpoint).process_arrow(
        trades, batch_id, stats)
    if stats is not None:
        stats["_bronze_ms"], stats["_silver_ms"] = round(1000 * (t1 - t0)), round(1000 * (t2 - t1))
        stats["_gold_ms"] = round(1000 * (time.perf_counter() - t2))


def start_pipeline(spark: SparkSession, settings: Settings, trigger: str | None = None,
                   checkpoint: str | Path | None = None, fail_on_data_loss: bool = True) -> StreamingQuery:
    """Kafka topic -> Bronze, Silver (+ quarantine) and Gold (1m, 5m, 1h, late trades) in one query."""
    gold.ensure_tables(spark, settings)
    checkpoint = Path(checkpoint or settings.checkpoint(CHECKPOINT))
    check_flow(settings, CHECKPOINT, LAYER_CHECKPOINTS, checkpoint)
    repair_checkpoint(checkpoint)
    stats = LayerStats()
    plan, parse = layer_rows(spark, settings)

    def run(batch: DataFrame, batch_id: int) -> None:
        t0 = time.perf_counter()
        rows = batch.toArrow()
        stats["_spark_ms"] = round(1000 * (time.perf_counter() - t0))
        if parse is not None:
            rows = parse(rows, stats)
            stats["_parse_ms"] = round(1000 * (time.perf_counter() - t0)) - stats["_spark_ms"]
        bronze.count_skipped(checkpoint, batch_id, rows, stats)  # offsets lost to retention (--allow-data-loss)
        process_batch(rows, batch_id, settings, checkpoint, spark, stats)
        maintenance.maybe_in_background(settings, batch_id)  # every maintain_every batches, beside the stream

    with scheduler_pool(spark, QUERY_NAME):
        query = (  # the transformation is built once, on the stream: building it per batch cost ~0.5 s here
            plan(bronze.read_kafka(spark, settings, fail_on_data_loss))
            .writeStream.queryName(QUERY_NAME)
            .foreachBatch(run)
            .option("checkpointLocation", str(checkpoint))
            .trigger(**trigger_kwargs(trigger or settings.trigger))
            .start()
        )
    query.layer_stats = stats
    start_idle_finalizer(query, spark, settings, checkpoint, app_name="gold")
    return query


__all__ = ["CHECKPOINT", "LAYER_COLUMNS", "layer_rows", "process_batch", "rows_for_layers", "start_pipeline"]
