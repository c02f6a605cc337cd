"""Gold's tables: their schemas, partitioning and paths (``gold`` writes them, ``gold_writer`` fills them).

Apart from ``gold.py`` so that the writer and the job both read them from here: ``gold`` starts the query with
a :class:`~lakehouse_utils.layers.gold_writer.GoldWriter`, and the writer needs the tables' paths, which made the
two import each other.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import types as T

from ..config import Settings
from .silver import SILVER_SCHEMA

KEY = ["exchange", "symbol", "bar_start"]

BAR_COLUMNS = ["exchange", "symbol", "bar_start", "bar_end", "open", "high", "low", "close", "volume", "vwap",
               "trades", "buy_volume", "sell_volume", "is_final", "updated_at"]
GOLD_SCHEMA = T.StructType([
    T.StructField("exchange", T.StringType()),
    T.StructField("symbol", T.StringType()),
    T.StructField("bar_start", T.TimestampType()),
    T.StructField("bar_end", T.TimestampType()),
    *[T.StructField(c, T.DoubleType()) for c in ("open", "high", "low", "close", "volume", "vwap")],
    T.StructField("trades", T.LongType()),
    T.StructField("buy_volume", T.DoubleType()),
    T.StructField("sell_volume", T.DoubleType()),
    T.StructField("is_final", T.BooleanType()),
    T.StructField("updated_at", T.TimestampType()),
    # Bookkeeping for exact incremental bars: sum(price*qty) and the first/last trade's order key.
    T.StructField("notional", T.DoubleType()),
    T.StructField("first_time", T.TimestampType()),
    T.StructField("first_id", T.StringType()),
    T.StructField("last_time", T.TimestampType()),
    T.StructField("last_id", T.StringType()),
    T.StructField("bar_date", T.DateType()),
    # The watermark after the write, and the micro-batch that wrote the row.
    T.StructField("watermark", T.TimestampType()),
    T.StructField("batch_id", T.LongType()),
])
PARTITIONS = ["is_final"]
LATE_SCHEMA = T.StructType([
    *SILVER_SCHEMA.fields,
    T.StructField("watermark", T.TimestampType()),
    T.StructField("reason", T.StringType()),
    T.StructField("detected_at", T.TimestampType()),
])


def bars_path(settings: Settings, timeframe: str) -> Path:
    return settings.bars_table(timeframe)


def late_path(settings: Settings) -> Path:
    return settings.late_trades


__all__ = ["BAR_COLUMNS", "GOLD_SCHEMA", "KEY", "LATE_SCHEMA", "PARTITIONS", "bars_path", "late_path"]
