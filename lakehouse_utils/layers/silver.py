"""Silver: Bronze -> typed, validated, deduplicated trades in event time.

``parse_bronze`` is the pure transformation: every Bronze row becomes a typed trade plus a ``reason``
(NULL when valid).  ``start_silver`` follows Bronze through it (``follow.py``: Bronze's new versions, or Bronze's
own batches when its query runs in the same process); per batch the valid rows are
deduplicated on (exchange, symbol, trade_id) against the batch and against Silver itself (a duplicate
carries its original's event_time, so only Silver rows in the batch's event-time range are read), and
appended with Delta's idempotent-write ids: a restart or a replayed batch never re-appends a row.
Invalid rows go to the quarantine table with their reason.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..config import Settings
from . import delta_io
from .bronze import BRONZE_SCHEMA, ensure_bronze
from .follow import Follower, chain_for
from .query_progress import LayerStats
from .streaming import (
    LAYER_CHECKPOINTS,
    PIPELINE_CHECKPOINT,
    app_id_for,
    check_flow,
    ensure_table,
)

QUERY_NAME = "silver"
CHECKPOINT = LAYER_CHECKPOINTS[1]
KEYS = ["exchange", "symbol", "trade_id"]
COMPACT_EVERY = 20  # batches: one small file per batch, and the duplicate check opens the day's files
MAX_PRICE = 1e12
SIDES = ("buy", "sell")
# Checked on the symbol as sent, ASCII only: upper() first let "ß/usd" in as "SS/USD". The end is "nothing after"
# ((?![\s\S]), the same in Java and Python): Java's $ also matches before a final line break ("btc/usd\n").
SYMBOL_RE = r"(?i)^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}(?![\s\S])"

# Every field read as text first: a wrong JSON type becomes a clear reason instead of a silent NULL.
_RAW_FIELDS = ["exchange", "symbol", "trade_id", "price", "qty", "side", "ord_type", "event_time", "ingest_time",
               "venue_symbol"]
RAW_SCHEMA = T.StructType([T.StructField(f, T.StringType()) for f in _RAW_FIELDS])
_CORRUPT = "_corrupt"  # from_json puts a row it cannot parse here (one parse finds every malformed row)
_PARSE_SCHEMA = T.StructType([*RAW_SCHEMA.fields, T.StructField(_CORRUPT, T.StringType())])
_REQUIRED = ["exchange", "symbol", "trade_id", "price", "qty", "side", "event_time"]

SILVER_SCHEMA = T.StructType([
    T.StructField("exchange", T.StringType()),
    T.StructField("symbol", T.StringType()),
    T.StructField("trade_id", T.StringType()),
    T.StructField("price", T.DoubleType()),
    T.StructField("qty", T.DoubleType()),
    T.StructField("side", T.StringType()),
    T.StructField("ord_type", T.StringType()),
    T.StructField("event_time", T.TimestampType()),
    T.StructField("ingest_time", T.TimestampType()),
    T.StructField("topic", T.StringType()),
    T.StructField("partition", T.IntegerType()),
    T.StructField("offset", T.LongType()),
    T.StructField("event_date", T.DateType()),
    # the venue's own name of the symbol (BTC-USD, BTCUSDT); last, so a table made before it had it gets it added
    # (ensure_tables), and NULL for messages written before the producer sent it
    T.StructField("venue_symbol", T.StringType()),
])
QUARANTINE_SCHEMA = T.StructType([
    T.StructField("reason", T.StringType()),
    T.StructField("value_raw", T.StringType()),
    T.StructField("topic", T.StringType()),
    T.StructField("partition", T.IntegerType()),
    T.StructField("offset", T.LongType()),
    T.StructField("ts_kafka", T.TimestampType()),
    T.StructField("quarantined_at", T.TimestampType()),
    T.StructField("ingest_date", T.DateType()),
])


def _first_reason(checks: list[tuple[Column, str | Column]]) -> Column:
    expr = F.lit(None).cast("string")
    for cond, reason in reversed(checks):
        expr = F.when(cond, reason if isinstance(reason, Column) else F.lit(reason)).otherwise(expr)
    return expr


def parse_bronze(bronze: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
    """Bronze rows -> Silver columns + lineage + ``reason`` (NULL for a valid trade); ``keep``: more Bronze
    columns passed through (the one-query pipeline writes Bronze from the same rows)."""
    raw = F.from_json("value_raw", _PARSE_SCHEMA, {"columnNameOfCorruptRecord": _CORRUPT})
    df = bronze.withColumn("_j", raw)
    j = F.col("_j")
    # Only a row from_json could not read is parsed again, to tell bad JSON from JSON that is not an object
    # (a second parse of every row cost a quarter of Silver's parsing time).
    invalid_json = j[_CORRUPT].isNotNull() & F.expr("try_parse_json(value_raw)").isNull()
    price, qty = j["price"].try_cast("double"), j["qty"].try_cast("double")
    event_time = j["event_time"].try_cast("timestamp")
    side = F.lower(j["side"])
    checks: list[tuple[Column, str | Column]] = [
        (F.col("value_raw").isNull() | (F.trim("value_raw") == ""), "empty_value"),
        # Bronze's mark of bytes that were not UTF-8 (a JSON writer escapes a real U+FFFD: ours are ASCII)
        (F.col("value_raw").contains("\ufffd"), "invalid_utf8"),
        (invalid_json, "invalid_json"),
        (~F.trim("value_raw").startswith("{"), "not_a_json_object"),
    ]
    checks += [(j[f].isNull() | (F.trim(j[f]) == ""), f"missing_field:{f}") for f in _REQUIRED]
    # a number past the double range (1e400) reaches from_json's text as the quoted '"Infinity"'
    overflow = ('"Infinity"', '"-Infinity"')
    price_over, qty_over = j["price"].isin(*overflow), j["qty"].isin(*overflow)
    checks += [
        (price.isNull() & ~price_over, F.concat(F.lit("bad_type:price: "), F.substring(j["price"], 1, 40))),
        (qty.isNull() & ~qty_over, F.concat(F.lit("bad_type:qty: "), F.substring(j["qty"], 1, 40))),
        (F.isnan(price) | price.isin(float("inf"), float("-inf")) | price_over, "non_finite:price"),
        (F.isnan(qty) | qty.isin(float("inf"), float("-inf")) | qty_over, "non_finite:qty"),
        (price <= 0, F.concat(F.lit("non_positive:price: "), j["price"])),
        (qty <= 0, F.concat(F.lit("non_positive:qty: "), j["qty"])),
        (price > MAX_PRICE, "price_too_large"),
        (~side.isin(*SIDES), F.concat(F.lit("unknown_side:"), F.substring(j["side"], 1, 40))),
        (~j["symbol"].rlike(SYMBOL_RE), F.concat(F.lit("bad_symbol:"), F.substring(j["symbol"], 1, 40))),
        (event_time.isNull(), F.concat(F.lit("bad_timestamp:"), F.substring(j["event_time"], 1, 40))),
    ]
    return df.select(
        j["exchange"].alias("exchange"),
        F.upper(j["symbol"]).alias("symbol"),
        j["trade_id"].alias("trade_id"),
        price.alias("price"),
        qty.alias("qty"),
        side.alias("side"),
        j["ord_type"].alias("ord_type"),
        event_time.alias("event_time"),
        j["ingest_time"].try_cast("timestamp").alias("ingest_time"),
        "topic",
        "partition",
        "offset",
        F.to_date(event_time).alias("event_date"),
        j["venue_symbol"].alias("venue_symbol"),
        _first_reason(checks).alias("reason"),
        "value_raw",
        "ts_kafka",
        "ingest_date",
        *keep,
    )


def valid_trades(parsed: DataFrame) -> DataFrame:
    """The valid rows of ``parse_bronze``, one per (exchange, symbol, trade_id): the earliest offset wins."""
    first = Window.partitionBy(*KEYS).orderBy("topic", "partition", "offset")
    return (parsed.where(F.col("reason").isNull())
            .withColumn("_rn", F.row_number().over(first)).where("_rn = 1")
            .select(*SILVER_SCHEMA.fieldNames()))


def quarantined(parsed: DataFrame) -> DataFrame:
    """The invalid rows of ``parse_bronze`` with their reason, for the quarantine table."""
    return parsed.where(F.col("reason").isNotNull()).select(
        "reason", "value_raw", "topic", "partition", "offset", "ts_kafka",
        F.current_timestamp().alias("quarantined_at"), "ingest_date")


def first_per_key(trades: pa.Table) -> pa.Table:
    """One row per (exchange, symbol, trade_id): the lowest (topic, partition, offset) wins, in offset order."""
    if trades.num_rows == 0:
        return trades
    ordered = trades.sort_by([("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")])
    ordered = ordered.append_column("_i", pa.array(range(ordered.num_rows), pa.int64()))
    firsts = ordered.group_by(KEYS, use_threads=False).aggregate([("_i", "min")])["_i_min"]
    return ordered.take(pc.take(firsts, pc.sort_indices(firsts))).drop_columns(["_i"])  # row numbers, in order


def _silver_rows(path: str | Path, lo: Any, hi: Any, columns: list[str]) -> pa.Table:
    """``columns`` of Silver's rows with ``lo <= event_time <= hi`` (a duplicate carries its original's event
    time, so the keys in a batch's event-time range are all a duplicate check needs).

    Read with delta-rs: the event_date partitions, then Parquet row-group statistics, prune the files.
    """
    from deltalake import DeltaTable

    dataset = DeltaTable(str(path)).to_pyarrow_dataset()
    date = pa.date32()
    where = ((ds.field("event_date") >= pa.scalar(lo, pa.timestamp("us", tz="UTC")).cast(date))
             & (ds.field("event_date") <= pa.scalar(hi, pa.timestamp("us", tz="UTC")).cast(date))
             & (ds.field("event_time") >= lo) & (ds.field("event_time") <= hi))
    return dataset.to_table(columns=columns, filter=where)


def driver_columns() -> list[Column]:
    """What a Silver micro-batch brings to the driver: Silver's columns, ``reason``, and for bad rows their
    raw value, Kafka time and ingest date (the quarantine's columns)."""
    bad = F.col("reason").isNotNull()
    return [F.col(c) for c in SILVER_SCHEMA.fieldNames()] + [
        F.col("reason"), F.when(bad, F.col("value_raw")).alias("value_raw"), F.col("ts_kafka"),
        F.col("ingest_date")]


def _written_rows(path: str | Path, good: pa.Table, lo: Any, hi: Any) -> pa.Table:
    """The rows of ``good`` that Silver holds already (same topic, partition, offset): a replayed batch."""
    lineage = ["topic", "partition", "offset"]
    held = _silver_rows(path, lo, hi, lineage)
    return good.join(held, lineage, join_type="left semi") if held.num_rows else good.slice(0, 0)


def commit_parsed(rows: pa.Table, batch_id: int, settings: Settings, app_id: str,
                  stats: LayerStats | None = None) -> pa.Table:
    """Parsed rows (``parse_bronze``'s columns, as Arrow) -> Silver and quarantine; returns the new Silver rows.

    Valid rows are deduplicated within the batch (:func:`first_per_key`) and against Silver, then appended
    with (app_id, batch_id).  A batch replayed after it was committed returns the same new rows (those
    Silver holds at its offsets), so a layer fed from here (Gold, in the one-query pipeline) sees them again.
    """
    is_bad = pc.is_valid(rows["reason"])
    n_bad = pc.sum(is_bad.cast(pa.int64())).as_py() or 0
    good = first_per_key(rows.filter(pc.invert(is_bad)).select(SILVER_SCHEMA.fieldNames()))
    if good.num_rows:
        bounds = pc.min_max(good["event_time"])
        replayed = delta_io.applied_batch(settings.silver, app_id) >= batch_id
        if replayed:
            good = _written_rows(settings.silver, good, bounds["min"], bounds["max"])
        else:
            existing = _silver_rows(settings.silver, bounds["min"], bounds["max"], KEYS)
            if existing.num_rows:
                good = good.join(existing, KEYS, join_type="left anti")
        good = good.sort_by([("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")])
        if not replayed:
            delta_io.append(settings.silver, good, app_id, batch_id)
    if n_bad:
        quarantine = rows.filter(is_bad)
        now = pa.array([datetime.now(UTC)] * quarantine.num_rows, pa.timestamp("us", tz="UTC"))
        delta_io.append(settings.quarantine, quarantine.append_column("quarantined_at", now), app_id, batch_id)
    if batch_id % COMPACT_EVERY == 0:
        delta_io.compact(settings.silver)
    if stats is not None:
        stats.add(batch_id, "quarantined", n_bad)
    return good


def to_driver(bronze: DataFrame) -> DataFrame:
    """Bronze rows -> what :func:`commit_parsed` takes (applied to the stream, once)."""
    return parse_bronze(bronze).select(*driver_columns())


def process_batch(batch: DataFrame, batch_id: int, settings: Settings, app_id: str,
                  stats: LayerStats | None = None) -> None:
    """A batch of :func:`to_driver` rows: one Spark job brings it to the driver, :func:`commit_parsed` commits."""
    t0 = time.perf_counter()
    rows = batch.toArrow()
    t1 = time.perf_counter()
    commit_parsed(rows, batch_id, settings, app_id, stats)
    if stats is not None:
        stats["_spark_ms"], stats["_commit_ms"] = round(1000 * (t1 - t0)), round(1000 * (time.perf_counter() - t1))


def ensure_tables(spark: SparkSession, settings: Settings) -> None:
    """Bronze (the input), Silver and quarantine, created empty if missing; a Silver made before a column of
    SILVER_SCHEMA existed (``venue_symbol``) gets it, NULL in its rows."""
    ensure_bronze(spark, settings)
    ensure_table(spark, settings.silver, SILVER_SCHEMA, ["event_date"])
    add_new_columns(settings.silver, SILVER_SCHEMA)
    ensure_table(spark, settings.quarantine, QUARANTINE_SCHEMA, ["ingest_date"])


def add_new_columns(path: str | Path, schema: T.StructType) -> list[str]:
    """Add the columns of ``schema`` the Delta table at ``path`` lacks (nullable, at the end); returns them."""
    return delta_io.add_columns(path, [(f.name, f.dataType.typeName()) for f in schema.fields])


def arrow_schema(df: DataFrame) -> pa.Schema:
    """The Arrow schema ``df.toArrow()`` gives (what the Arrow parse must match)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    large = df.sparkSession.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false") == "true"
    return to_arrow_schema(df.schema, error_on_duplicated_field_names_in_struct=True, timezone="UTC",
                           prefers_large_types=large)


class Parser:
    """Bronze rows as Arrow -> ``parse_bronze``'s rows selected to ``columns`` (as Arrow): in Arrow for canonical
    rows and in Spark for the rest (``arrow_parse.parse_rows``).  Used when ``settings.silver_parse`` is ``arrow``;
    its callers (``pipeline.layer_rows``, :func:`start_silver`) keep the whole parse in Spark's job otherwise."""

    def __init__(self, spark: SparkSession, settings: Settings, columns: list[Column], keep: tuple[str, ...] = (),
                 raw_of_valid: bool = False, source: DataFrame | None = None) -> None:
        """``source``: a DataFrame shaped like the Bronze rows to come (its schema decides the output's, down to
        nullability; default: read from Bronze's table)."""
        self.spark, self.columns, self.keep, self.raw_of_valid = spark, columns, keep, raw_of_valid
        shaped = source if source is not None else spark.createDataFrame([], BRONZE_SCHEMA)
        self.schema = arrow_schema(self.spark_parse_df(shaped))

    def spark_parse_df(self, bronze: DataFrame) -> DataFrame:
        return parse_bronze(bronze, keep=self.keep).select(*self.columns)

    def in_spark(self, rows: pa.Table) -> pa.Table:
        bronze = self.spark.createDataFrame(rows.select(BRONZE_SCHEMA.fieldNames()), schema=BRONZE_SCHEMA)
        return self.spark_parse_df(bronze).toArrow()

    def __call__(self, rows: pa.Table, stats: dict[str, Any] | None = None) -> pa.Table:
        from .arrow_parse import parse_rows

        return parse_rows(rows, self.in_spark, self.schema, self.raw_of_valid, stats)


def read_bronze_files(spark: SparkSession, settings: Settings, files: list[tuple[Path, Any, int]],
                      parser: Parser | None = None) -> pa.Table:
    """Bronze's files (those some versions added) through :func:`to_driver`'s columns, as Arrow: one Spark job
    reads them, and ``parser`` (a :class:`Parser` of ``driver_columns``) parses them; without one, Spark does."""
    paths = [str(path) for path, _, _ in files]
    bronze = spark.read.schema(BRONZE_SCHEMA).option("basePath", str(settings.bronze)).parquet(*paths)
    if parser is None:
        return to_driver(bronze).toArrow()
    return parser(bronze.toArrow())


def start_silver(spark: SparkSession, settings: Settings, trigger: str | None = None,
                 checkpoint: str | Path | None = None) -> Follower:
    """Bronze -> ``settings.silver`` + ``settings.quarantine``: Bronze's new versions as they come (a
    :class:`~lakehouse_utils.layers.follow.Follower`), or, while Bronze's query runs in this process, its batches."""
    ensure_tables(spark, settings)
    checkpoint = Path(checkpoint or settings.checkpoint(CHECKPOINT))
    check_flow(settings, CHECKPOINT, (PIPELINE_CHECKPOINT,), checkpoint)
    chain = chain_for(settings.bronze)

    def apply(rows: pa.Table, batch_id: int, stats: LayerStats) -> pa.Table:
        return commit_parsed(rows, batch_id, settings, app_id_for(QUERY_NAME, checkpoint), stats)

    parser = Parser(spark, settings, driver_columns()) if settings.silver_parse == "arrow" else None
    follower = Follower(QUERY_NAME, settings.bronze, settings.silver, checkpoint, trigger or settings.trigger,
                        lambda files: read_bronze_files(spark, settings, files, parser), apply, chain)
    with chain.lock:
        chain.silver = follower
    return follower.start()


def latest_trades(spark: SparkSession, settings: Settings, n: int = 10) -> DataFrame:
    """The most recent Silver trades (the seed's Silver verification)."""
    return (spark.read.format("delta").load(str(settings.silver))
            .select("symbol", "trade_id", "price", "qty", "side", "event_time", "ingest_time", "offset")
            .orderBy(F.col("event_time").desc(), F.col("offset").desc()).limit(n))


def quarantine_reasons(spark: SparkSession, settings: Settings) -> DataFrame:
    """Quarantined rows per reason code (the part before ':' details)."""
    return (spark.read.format("delta").load(str(settings.quarantine))
            .groupBy(F.split("reason", ":")[0].alias("reason")).count().orderBy(F.col("count").desc()))
