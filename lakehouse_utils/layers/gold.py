"""Gold: Silver trades -> OHLCV + VWAP bars per (exchange, symbol) for 1m, 5m and 1h, the forming bar included.

``bars(trades, "1m")`` is the pure transformation (trades -> one row per exchange, symbol and bar); the tables'
schemas and paths are in ``gold_tables.py``.
``start_gold`` follows Silver (``follow.py``: its new versions, or Silver's own batches when Silver runs in the same
process) into ``<gold>/bars_1m``, ``bars_5m``, ``bars_1h`` with :class:`GoldWriter`
(``gold_writer.py``), which keeps the forming bars in memory and writes each table with **one Delta commit
per micro-batch**, no MERGE and no table scan:

- Each table is partitioned by ``is_final``.  The ``is_final=false`` partition holds the forming bars (a few
  rows); a batch rewrites it whole with ``replaceWhere "is_final = false"`` and, in the same commit, appends
  the bars the watermark has just closed to ``is_final=true``.  A final bar never changes again.
- The watermark is the max event time seen minus ``settings.watermark``; when the feed goes quiet it also
  advances with the wall clock (:data:`IDLE_AFTER_S`), so the last bars turn final instead of forming forever.
- Trades older than the watermark of the batch they arrive in are late: they go to ``<gold>/late_trades``.
- Restarts are exact: every write carries Delta's idempotent-write id (app id, batch id), the batch's
  watermark decision is logged in the checkpoint before any write, and the forming bars are reloaded from
  the tables (see ``gold_writer.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from ..config import TIMEFRAMES, Settings, table_exists
from .follow import Follower, chain_for
from .gold_tables import BAR_COLUMNS, GOLD_SCHEMA, LATE_SCHEMA, PARTITIONS, bars_path, late_path
from .gold_writer import GoldWriter, start_idle_finalizer
from .query_progress import LayerStats
from .silver import SILVER_SCHEMA, add_new_columns
from .silver import ensure_tables as ensure_silver
from .streaming import LAYER_CHECKPOINTS, PIPELINE_CHECKPOINT, app_id_for, check_flow, ensure_table

QUERY_NAME = "gold"
CHECKPOINT = LAYER_CHECKPOINTS[2]
def order_key(time_col: str = "event_time", id_col: str = "trade_id") -> Column:
    """(event_time, trade_id) order; numeric ids compare as numbers (shorter string first)."""
    return F.struct(F.unix_micros(time_col).alias("t"), F.length(id_col).alias("n"), F.col(id_col).alias("id"))


def bars(trades: DataFrame, timeframe: str, watermark_us: int | None = None) -> DataFrame:
    """Silver trades -> one bar per (exchange, symbol, bar_start) of ``timeframe`` (a key of TIMEFRAMES)."""
    step = TIMEFRAMES[timeframe] * 1_000_000
    us = F.unix_micros("event_time")
    agg = (
        trades.withColumn("start_us", us - F.pmod(us, F.lit(step))).withColumn("_k", order_key())
        .groupBy("exchange", "symbol", "start_us")
        .agg(
            F.min_by("price", "_k").alias("open"),
            F.max("price").alias("high"),
            F.min("price").alias("low"),
            F.max_by("price", "_k").alias("close"),
            F.sum("qty").alias("volume"),
            F.sum(F.col("price") * F.col("qty")).alias("notional"),
            F.count(F.lit(1)).alias("trades"),
            F.sum(F.when(F.col("side") == "buy", F.col("qty")).otherwise(0.0)).alias("buy_volume"),
            F.sum(F.when(F.col("side") == "sell", F.col("qty")).otherwise(0.0)).alias("sell_volume"),
            F.min("_k").alias("_first"),
            F.max("_k").alias("_last"),
        )
    )
    end_us = F.col("start_us") + F.lit(step)
    final = F.lit(False) if watermark_us is None else end_us <= F.lit(watermark_us)
    return agg.select(
        "exchange", "symbol", F.timestamp_micros("start_us").alias("bar_start"),
        F.timestamp_micros(end_us).alias("bar_end"), "open", "high", "low", "close", "volume",
        (F.col("notional") / F.col("volume")).alias("vwap"), "trades", "buy_volume", "sell_volume",
        final.alias("is_final"), F.current_timestamp().alias("updated_at"), "notional",
        F.timestamp_micros(F.col("_first.t")).alias("first_time"), F.col("_first.id").alias("first_id"),
        F.timestamp_micros(F.col("_last.t")).alias("last_time"), F.col("_last.id").alias("last_id"),
        F.to_date(F.timestamp_micros("start_us")).alias("bar_date"),
    )


def check_layout(spark: SparkSession, path: Path) -> None:
    """Refuse a Gold table of the old layout (MERGE'd, no exchange): it must be rebuilt from Silver."""
    from deltalake import DeltaTable

    if not table_exists(path):
        return
    columns = {f.name for f in DeltaTable(str(path)).schema().fields}
    missing = {"exchange", "batch_id", "watermark"} - columns
    if missing:
        raise RuntimeError(
            f"{path} has the old Gold layout (no {', '.join(sorted(missing))}). Gold is rebuilt from Silver: "
            f"delete the Gold tables and the '{CHECKPOINT}' checkpoint (or run `lakehouse reset`), then start again.")


def ensure_tables(spark: SparkSession, settings: Settings) -> None:
    ensure_silver(spark, settings)
    for tf in TIMEFRAMES:
        check_layout(spark, bars_path(settings, tf))
        ensure_table(spark, bars_path(settings, tf), GOLD_SCHEMA, PARTITIONS)
    ensure_table(spark, late_path(settings), LATE_SCHEMA, ["event_date"])
    add_new_columns(late_path(settings), LATE_SCHEMA)  # Silver's new columns (venue_symbol) in an older table


def process_batch(batch: DataFrame, batch_id: int, settings: Settings, app_id: str,
                  checkpoint: Path | None = None, stats=None) -> None:
    """One micro-batch through the (cached) :class:`GoldWriter` of ``(app_id, checkpoint)``."""
    writer = GoldWriter.for_app(batch.sparkSession, settings, app_id, checkpoint or settings.checkpoint(CHECKPOINT))
    writer.process(batch, batch_id, stats)


def read_silver_files(settings: Settings, files: list[tuple[Path, Any, int]]) -> pa.Table:
    """Silver's files (those some versions added) as Arrow with Silver's columns: no Spark job (Gold's fold is
    Arrow on the driver).

    Read with Silver's schema, not the first file's: a file written before a column was added (``venue_symbol``,
    in a Silver made before it) reads NULL there, whichever file comes first."""
    schema = to_arrow_schema(SILVER_SCHEMA, timezone="UTC")
    if not files:
        return pa.Table.from_pylist([], schema)
    partitioning = ds.partitioning(pa.schema([("event_date", pa.date32())]), flavor="hive")
    dataset = ds.dataset([str(p) for p, _, _ in files], schema=schema, format="parquet", partitioning=partitioning,
                         partition_base_dir=str(settings.silver))
    return dataset.to_table(columns=SILVER_SCHEMA.fieldNames())


def start_gold(spark: SparkSession, settings: Settings, trigger: str | None = None,
               checkpoint: str | Path | None = None) -> Follower:
    """Silver -> ``<gold>/bars_1m``, ``bars_5m``, ``bars_1h`` (+ ``late_trades``): Silver's new versions as they
    come (a :class:`~lakehouse_utils.layers.follow.Follower`), or, while Silver runs in this process, its batches."""
    checkpoint = Path(checkpoint or settings.checkpoint(CHECKPOINT))
    check_flow(settings, CHECKPOINT, (PIPELINE_CHECKPOINT,), checkpoint)
    ensure_tables(spark, settings)
    chain = chain_for(settings.bronze)

    def apply(rows: pa.Table, batch_id: int, stats: LayerStats) -> None:
        writer = GoldWriter.for_app(spark, settings, app_id_for(QUERY_NAME, checkpoint), checkpoint)
        writer.process_arrow(rows.select(SILVER_SCHEMA.fieldNames()), batch_id, stats)

    follower = Follower(QUERY_NAME, settings.silver, bars_path(settings, "1m"), checkpoint,
                        trigger or settings.trigger, lambda files: read_silver_files(settings, files), apply, chain)
    with chain.lock:
        chain.gold = follower
    follower.start()
    start_idle_finalizer(follower, spark, settings, checkpoint)
    return follower


def latest_bars(spark: SparkSession, settings: Settings, timeframe: str = "1m", n: int = 10) -> DataFrame:
    """The most recent bars first (the seed's Gold verification), the forming bar included."""
    return (spark.read.format("delta").load(str(bars_path(settings, timeframe)))
            .select(*BAR_COLUMNS).orderBy(F.col("bar_start").desc(), "exchange", "symbol").limit(n))


__all__ = ["bars", "check_layout", "ensure_tables", "latest_bars", "order_key", "process_batch", "start_gold"]
