"""Gold: Silver trades -> OHLCV + VWAP bars per symbol (1m, 5m, 1h), the forming bar included.

``bars(trades, "1m")`` is the pure transformation (trades -> one row per symbol and bar).  ``start_gold``
streams Silver; per micro-batch it folds the batch's bars into each table with one Delta MERGE keyed on
(symbol, bar_start): open/close come from the first/last trade ordered by (event_time, trade_id), the
other measures add up, and ``is_final`` turns true once the watermark (max event time seen minus
``settings.watermark``) passes ``bar_end``.  Trades older than the watermark of the batch they arrive in
are late: they go to ``<gold>/late_trades`` (counted, visible) instead of changing a final bar.  Every
write carries Delta's idempotent-write id (app id, batch id), so a batch replayed after a crash changes
nothing twice.  The watermark itself is kept per batch in a small Delta table next to the checkpoint.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from .config import TIMEFRAMES, Settings
from .silver import SILVER_SCHEMA
from .silver import ensure_tables as ensure_silver
from .streaming import (
    LayerStats,
    ensure_table,
    idempotent_append,
    idempotent_dml,
    parse_delay,
    start_delta_foreach_batch,
)

QUERY_NAME = "gold"
CHECKPOINT = "silver_to_gold_bars"

BAR_COLUMNS = ["symbol", "bar_start", "bar_end", "open", "high", "low", "close", "volume", "vwap", "trades",
               "buy_volume", "sell_volume", "is_final", "updated_at"]
GOLD_SCHEMA = T.StructType([
    T.StructField("symbol", T.StringType()),
    T.StructField("bar_start", T.TimestampType()),
    T.StructField("bar_end", T.TimestampType()),
    *[T.StructField(c, T.DoubleType()) for c in ("open", "high", "low", "close", "volume", "vwap")],
    T.StructField("trades", T.LongType()),
    T.StructField("buy_volume", T.DoubleType()),
    T.StructField("sell_volume", T.DoubleType()),
    T.StructField("is_final", T.BooleanType()),
    T.StructField("updated_at", T.TimestampType()),
    # Bookkeeping for exact incremental merges: sum(price*qty) and the first/last trade's order key.
    T.StructField("notional", T.DoubleType()),
    T.StructField("first_time", T.TimestampType()),
    T.StructField("first_id", T.StringType()),
    T.StructField("last_time", T.TimestampType()),
    T.StructField("last_id", T.StringType()),
    T.StructField("bar_date", T.DateType()),
])
PARTITIONS = ["bar_date", "symbol"]
LATE_SCHEMA = T.StructType([
    *SILVER_SCHEMA.fields,
    T.StructField("watermark", T.TimestampType()),
    T.StructField("reason", T.StringType()),
    T.StructField("detected_at", T.TimestampType()),
])
STATE_SCHEMA = T.StructType([
    T.StructField("batch_id", T.LongType()),
    T.StructField("max_event_time", T.TimestampType()),
])


def bars_path(settings: Settings, timeframe: str) -> Path:
    return settings.bars_table(timeframe)


def late_path(settings: Settings) -> Path:
    return settings.late_trades


def state_path(checkpoint: Path) -> Path:
    """The per-batch watermark state lives with the checkpoint: a new checkpoint starts a new clock."""
    return Path(checkpoint) / "watermark_state"


def _order_key(time_col: str, id_col: str, prefix: str = "") -> Column:
    """(event_time, trade_id) order; numeric ids compare as numbers (shorter string first)."""
    t, i = F.col(prefix + time_col), F.col(prefix + id_col)
    return F.struct(t.alias("t"), F.length(i).alias("n"), i.alias("id"))


def bars(trades: DataFrame, timeframe: str, watermark: datetime | None = None) -> DataFrame:
    """Silver trades -> one bar per (symbol, bar_start) of ``timeframe`` (a key of TIMEFRAMES)."""
    seconds = TIMEFRAMES[timeframe]
    bar_start = F.timestamp_seconds(F.floor(F.unix_micros("event_time") / (seconds * 1_000_000)) * seconds)
    key = _order_key("event_time", "trade_id")
    agg = (
        trades.withColumn("bar_start", bar_start).withColumn("_k", key)
        .groupBy("symbol", "bar_start")
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
    bar_end = F.col("bar_start") + F.make_dt_interval(secs=F.lit(seconds))
    final = F.lit(False) if watermark is None else bar_end <= F.lit(watermark)
    return agg.select(
        "symbol", "bar_start", bar_end.alias("bar_end"), "open", "high", "low", "close", "volume",
        (F.col("notional") / F.col("volume")).alias("vwap"), "trades", "buy_volume", "sell_volume",
        final.alias("is_final"), F.current_timestamp().alias("updated_at"), "notional",
        F.col("_first.t").alias("first_time"), F.col("_first.id").alias("first_id"),
        F.col("_last.t").alias("last_time"), F.col("_last.id").alias("last_id"),
        F.to_date("bar_start").alias("bar_date"),
    )


def merge_bars(spark: SparkSession, path: str | Path, updates: DataFrame, watermark: datetime | None) -> None:
    """Fold ``updates`` (from ``bars``) into the table at ``path`` and finalize bars behind the watermark."""
    t, s = "t.", "s."
    s_first, t_first = _order_key("first_time", "first_id", s), _order_key("first_time", "first_id", t)
    s_last, t_last = _order_key("last_time", "last_id", s), _order_key("last_time", "last_id", t)
    earlier, later = s_first < t_first, s_last > t_last
    col = F.col
    wm = F.lit(watermark).cast("timestamp") if watermark else F.lit(None).cast("timestamp")
    final = F.coalesce(col(t + "bar_end") <= wm, F.lit(False))
    matched = {
        "open": F.when(earlier, col(s + "open")).otherwise(col(t + "open")),
        "first_time": F.when(earlier, col(s + "first_time")).otherwise(col(t + "first_time")),
        "first_id": F.when(earlier, col(s + "first_id")).otherwise(col(t + "first_id")),
        "close": F.when(later, col(s + "close")).otherwise(col(t + "close")),
        "last_time": F.when(later, col(s + "last_time")).otherwise(col(t + "last_time")),
        "last_id": F.when(later, col(s + "last_id")).otherwise(col(t + "last_id")),
        "high": F.greatest(col(t + "high"), col(s + "high")),
        "low": F.least(col(t + "low"), col(s + "low")),
        "volume": col(t + "volume") + col(s + "volume"),
        "notional": col(t + "notional") + col(s + "notional"),
        "vwap": (col(t + "notional") + col(s + "notional")) / (col(t + "volume") + col(s + "volume")),
        "trades": col(t + "trades") + col(s + "trades"),
        "buy_volume": col(t + "buy_volume") + col(s + "buy_volume"),
        "sell_volume": col(t + "sell_volume") + col(s + "sell_volume"),
        "is_final": final,
        "updated_at": F.current_timestamp(),
    }
    inserted = {c: col(s + c) for c in GOLD_SCHEMA.fieldNames()}
    inserted["is_final"] = F.coalesce(col(s + "bar_end") <= wm, F.lit(False))
    merge = (
        DeltaTable.forPath(spark, str(path)).alias("t")
        .merge(updates.alias("s"), "t.bar_date = s.bar_date AND t.symbol = s.symbol AND t.bar_start = s.bar_start")
        .whenMatchedUpdate(set=matched)
        .whenNotMatchedInsert(values=inserted)
    )
    if watermark is not None:
        merge = merge.whenNotMatchedBySourceUpdate(
            condition=~col(t + "is_final") & (col(t + "bar_end") <= wm),
            set={"is_final": F.lit(True), "updated_at": F.current_timestamp()},
        )
    merge.execute()


def _max_event_time_before(spark: SparkSession, state_table: Path, batch_id: int) -> datetime | None:
    state = spark.read.format("delta").load(str(state_table))
    return state.where(F.col("batch_id") < batch_id).agg(F.max("max_event_time")).first()[0]


def process_batch(batch: DataFrame, batch_id: int, settings: Settings, app_id: str,
                  checkpoint: Path | None = None, stats: LayerStats | None = None) -> None:
    spark = batch.sparkSession
    state_table = state_path(checkpoint or settings.checkpoint(CHECKPOINT))
    delay = parse_delay(settings.watermark)
    trades = batch.select(*SILVER_SCHEMA.fieldNames()).persist()
    try:
        batch_max = trades.agg(F.max("event_time")).first()[0]
        if batch_max is None:
            return
        prev_max = _max_event_time_before(spark, state_table, batch_id)
        before = prev_max - delay if prev_max is not None else None
        new_max = max(prev_max, batch_max) if prev_max is not None else batch_max
        after = new_max - delay
        on_time = trades if before is None else trades.where(F.col("event_time") >= F.lit(before))
        if before is not None:
            late = trades.where(F.col("event_time") < F.lit(before)).select(
                "*", F.lit(before).cast("timestamp").alias("watermark"),
                F.lit("late: event_time older than the watermark").alias("reason"),
                F.current_timestamp().alias("detected_at"))
            idempotent_append(late, late_path(settings), app_id, batch_id, ["event_date"])
            if stats is not None:
                stats.add(batch_id, "late", late.count())
        with idempotent_dml(spark, app_id, batch_id):
            for tf in TIMEFRAMES:
                merge_bars(spark, bars_path(settings, tf), bars(on_time, tf), after)
        state = spark.createDataFrame([(batch_id, new_max)], STATE_SCHEMA)
        idempotent_append(state, state_table, app_id, batch_id, [])
        if stats is not None:
            stats["watermark"] = after.isoformat(sep=" ")
    finally:
        trades.unpersist()


def ensure_tables(spark: SparkSession, settings: Settings, checkpoint: Path | None = None) -> None:
    ensure_silver(spark, settings)
    for tf in TIMEFRAMES:
        ensure_table(spark, bars_path(settings, tf), GOLD_SCHEMA, PARTITIONS)
    ensure_table(spark, late_path(settings), LATE_SCHEMA, ["event_date"])
    ensure_table(spark, state_path(checkpoint or settings.checkpoint(CHECKPOINT)), STATE_SCHEMA, [])


def start_gold(spark: SparkSession, settings: Settings, trigger: str | None = None,
               checkpoint: str | Path | None = None) -> StreamingQuery:
    """Silver (Delta stream) -> ``<gold>/bars_1m``, ``bars_5m``, ``bars_1h`` (+ ``late_trades``)."""
    checkpoint = Path(checkpoint or settings.checkpoint(CHECKPOINT))
    ensure_tables(spark, settings, checkpoint)
    return start_delta_foreach_batch(
        spark, settings.silver, QUERY_NAME, checkpoint, trigger or settings.trigger,
        lambda batch, batch_id, app_id, stats: process_batch(batch, batch_id, settings, app_id, checkpoint, stats),
    )


def latest_bars(spark: SparkSession, settings: Settings, timeframe: str = "1m", n: int = 10) -> DataFrame:
    """The most recent bars first (the seed's Gold verification), the forming bar included."""
    return (spark.read.format("delta").load(str(bars_path(settings, timeframe)))
            .select(*BAR_COLUMNS).orderBy(F.col("bar_start").desc(), "symbol").limit(n))
