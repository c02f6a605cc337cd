"""Silver's ``venue_symbol``: parsed from the message, NULL before producers sent it, and added to a Silver table
made before it existed, with Spark's Delta streaming reader of Silver (Gold's input) carrying on over the change."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import Row
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from lakehouse_utils.config import Settings
from lakehouse_utils.layers import bronze as bronze_layer
from lakehouse_utils.layers import delta_io, gold, silver
from lakehouse_utils.layers.bronze import BRONZE_SCHEMA
from lakehouse_utils.layers.gold_tables import LATE_SCHEMA, late_path
from lakehouse_utils.layers.streaming import ensure_table

T0 = datetime(2019, 7, 1, 0, 0, 0, tzinfo=UTC)
OLD_SILVER = T.StructType([f for f in silver.SILVER_SCHEMA.fields if f.name != "venue_symbol"])
OLD_LATE = T.StructType([f for f in LATE_SCHEMA.fields if f.name != "venue_symbol"])


def message(trade_id: int, venue_symbol: str | None, exchange: str = "coinbase", symbol: str = "BTC/USD") -> str:
    at = (T0 + timedelta(seconds=trade_id)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    d = {"exchange": exchange, "symbol": symbol, "venue_symbol": venue_symbol, "trade_id": str(trade_id),
         "price": 100.0 + trade_id, "qty": 1.0, "side": "buy", "ord_type": None, "event_time": at, "ingest_time": at,
         "schema_version": 1}
    return json.dumps({k: v for k, v in d.items() if k != "venue_symbol" or v is not None})


def bronze(spark, values: list[str], start: int = 0):
    rows = [Row(value_raw=v, key=None, topic="t", partition=0, offset=start + i, ts_kafka=T0, headers=[],
                ingest_date=T0.date()) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def test_venue_symbol_is_parsed_and_null_when_the_message_has_none(spark) -> None:
    parsed = silver.parse_bronze(bronze(spark, [message(1, "BTC-USD"), message(2, None, "kraken")]))
    rows = silver.valid_trades(parsed).orderBy("trade_id").collect()
    assert [(r.exchange, r.symbol, r.venue_symbol) for r in rows] == [("coinbase", "BTC/USD", "BTC-USD"),
                                                                       ("kraken", "BTC/USD", None)]
    assert silver.SILVER_SCHEMA.fieldNames()[-1] == "venue_symbol"


def _read_stream(spark, path: Path, checkpoint: Path) -> list[tuple[str, str | None]]:
    """(trade_id, venue_symbol) of what one available-now run of a Delta stream over ``path`` reads."""
    got: list[tuple[str, str | None]] = []

    def collect(batch, _batch_id: int) -> None:
        got.extend((r.trade_id, r.venue_symbol if "venue_symbol" in batch.columns else "absent")
                   for r in batch.collect())

    query = (spark.readStream.format("delta").load(str(path)).writeStream.foreachBatch(collect)
             .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start())
    query.awaitTermination(120)
    assert query.exception() is None, query.exception()
    return sorted(got)


def test_an_older_silver_gets_the_column_and_its_streams_go_on(spark, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", spark_ui=False)
    # the tables as a data dir made before venue_symbol holds them
    ensure_table(spark, settings.silver, OLD_SILVER, ["event_date"])
    ensure_table(spark, settings.quarantine, silver.QUARANTINE_SCHEMA, ["ingest_date"])
    ensure_table(spark, late_path(settings), OLD_LATE, ["event_date"])
    silver.process_batch(silver.to_driver(bronze(spark, [message(i, None, "kraken") for i in (1, 2)])), 0,
                         settings, "app")
    assert "venue_symbol" not in {f.name for f in DeltaTable(str(settings.silver)).schema().fields}
    reader = tmp_path / "reader-checkpoint"
    assert _read_stream(spark, settings.silver, reader) == [("1", "absent"), ("2", "absent")]

    silver.ensure_tables(spark, settings)  # a layer starting on it: the column is added, NULL in the old rows
    gold.ensure_tables(spark, settings)  # the late trades carry Silver's columns: theirs too
    for path in (settings.silver, late_path(settings)):
        assert DeltaTable(str(path)).schema().fields[-1].name == "venue_symbol"
    assert silver.add_new_columns(settings.silver, silver.SILVER_SCHEMA) == []  # once
    silver.process_batch(silver.to_driver(bronze(spark, [message(3, "BTC-USD"), message(2, None, "kraken")],
                                                 start=2)), 1, settings, "app")

    # the stream that read Silver before the change resumes from its checkpoint and reads the new row
    assert _read_stream(spark, settings.silver, reader) == [("3", "BTC-USD")]
    rows = sorted((r.trade_id, r.venue_symbol) for r in spark.read.format("delta").load(str(settings.silver)).collect())
    assert rows == [("1", None), ("2", None), ("3", "BTC-USD")]
    # and Gold, started on the migrated Silver, folds old and new rows alike
    query = gold.start_gold(spark, settings, trigger="available-now")
    query.awaitTermination(180)
    assert query.exception() is None
    bars = DeltaTable(str(settings.bars_table("1m"))).to_pandas()
    assert sorted(zip(bars["exchange"], bars["trades"], strict=True)) == [("coinbase", 1), ("kraken", 2)]


def test_an_older_silver_gets_the_column_under_the_followers(spark, tmp_path: Path) -> None:
    """The same migration with Silver and Gold as followers: Silver's follower adds the column when it starts and
    writes it with delta-rs; Gold's reads Silver's files from before and after the change alike."""
    settings = Settings(data_dir=tmp_path / "data", spark_ui=False)
    bronze_layer.ensure_bronze(spark, settings)
    ensure_table(spark, settings.silver, OLD_SILVER, ["event_date"])
    ensure_table(spark, settings.quarantine, silver.QUARANTINE_SCHEMA, ["ingest_date"])
    ensure_table(spark, late_path(settings), OLD_LATE, ["event_date"])
    old = bronze(spark, [message(i, None, "kraken") for i in (1, 2)])
    bronze_layer.write_batch(settings, old.toArrow(), "bronze-x", 0)
    silver.process_batch(silver.to_driver(old), 0, settings, "older-release")  # Silver as an older release wrote it
    bronze_layer.write_batch(settings, bronze(spark, [message(3, "BTC-USD"), message(2, None, "kraken")],
                                              start=2).toArrow(), "bronze-x", 1)

    s = silver.start_silver(spark, settings, trigger="available-now")  # from Bronze's first version
    assert s.awaitTermination(120) and s.exception() is None
    assert DeltaTable(str(settings.silver)).schema().fields[-1].name == "venue_symbol"
    rows = sorted((r["trade_id"], r["venue_symbol"]) for r in DeltaTable(str(settings.silver)).to_pyarrow_table(
        columns=["trade_id", "venue_symbol"]).to_pylist())
    assert rows == [("1", None), ("2", None), ("3", "BTC-USD")]  # the old trades once, the new one with its name

    g = gold.start_gold(spark, settings, trigger="available-now")
    assert g.awaitTermination(120) and g.exception() is None
    bars = DeltaTable(str(settings.bars_table("1m"))).to_pandas()
    assert sorted(zip(bars["exchange"], bars["trades"], strict=True)) == [("coinbase", 1), ("kraken", 2)]
    assert DeltaTable(str(late_path(settings))).schema().fields[-1].name == "venue_symbol"


def test_gold_reads_silver_files_with_and_without_the_column(tmp_path: Path) -> None:
    """Gold's reader takes Silver's schema, not the first file's: an older file reads NULL in venue_symbol."""
    settings = Settings(data_dir=tmp_path / "data", spark_ui=False)
    day = settings.silver / "event_date=2019-07-01"
    day.mkdir(parents=True)
    schema = to_arrow_schema(silver.SILVER_SCHEMA, timezone="UTC")
    row = {"exchange": "kraken", "symbol": "BTC/USD", "trade_id": "1", "price": 1.0, "qty": 1.0, "side": "buy",
           "ord_type": None, "event_time": T0, "ingest_time": T0, "topic": "t", "partition": 0, "offset": 0,
           "venue_symbol": "XBT/USD"}
    in_file = schema.remove(schema.get_field_index("event_date"))  # a partition column: in the path only
    pq.write_table(pa.Table.from_pylist([row], in_file).drop_columns(["venue_symbol"]), day / "old.parquet")
    pq.write_table(pa.Table.from_pylist([{**row, "trade_id": "2", "offset": 1}], in_file), day / "new.parquet")
    for order in (["old", "new"], ["new", "old"]):
        got = gold.read_silver_files(settings, [(day / f"{name}.parquet", {}, 0) for name in order])
        assert got.schema == schema
        assert sorted(zip(got["trade_id"].to_pylist(), got["venue_symbol"].to_pylist(), strict=True)) == [
            ("1", None), ("2", "XBT/USD")]
        assert set(got["event_date"].to_pylist()) == {T0.date()}


def test_delta_io_adds_only_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "t"
    write_deltalake(str(path), pa.table({"a": pa.array([1], pa.int64())}))
    assert delta_io.add_columns(path, [("a", "long"), ("b", "string")]) == ["b"]
    assert delta_io.add_columns(path, [("b", "string")]) == []
    table = DeltaTable(str(path))
    assert [f.name for f in table.schema().fields] == ["a", "b"]
    assert table.to_pyarrow_table()["b"].to_pylist() == [None]
    assert (path / "_delta_log" / f"{table.version():020d}.crc").exists()
