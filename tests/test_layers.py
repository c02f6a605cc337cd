"""Unit tests of the pure layer transformations (tiny DataFrames, real Spark) and of batch idempotency."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F

from lakehouse_utils.config import Settings
from lakehouse_utils.layers import gold, silver
from lakehouse_utils.layers.bronze import BRONZE_SCHEMA, to_bronze
from lakehouse_utils.layers.gold_tables import bars_path, late_path
from lakehouse_utils.layers.query_progress import LayerStats

T0 = datetime(2019, 7, 1, 0, 0, 0, tzinfo=UTC)


def trade_json(trade_id: str, price: float, qty: float, at: datetime, side: str = "buy", /, **over) -> str:
    d = {"exchange": "kraken", "symbol": "BTC/USD", "trade_id": trade_id, "price": price, "qty": qty,
         "side": side, "ord_type": None, "event_time": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
         "ingest_time": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "schema_version": 1}
    d.update(over)
    return json.dumps({k: v for k, v in d.items() if v is not ...})


def bronze_df(spark, values: list[str], start_offset: int = 0):
    rows = [Row(value_raw=v, key="BTC/USD", topic="t", partition=0, offset=start_offset + i, ts_kafka=T0,
                headers=[], ingest_date=T0.date()) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def test_to_bronze_keeps_raw_value_and_kafka_metadata(spark) -> None:
    kafka_rows = spark.createDataFrame(
        [(b"BTC/USD", b'{"x": 1}', "crypto.trades", 0, 41, T0, 0, [("source", b"replay")])],
        "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
        "timestampType int, headers array<struct<key:string,value:binary>>",
    )
    row = to_bronze(kafka_rows).first()
    assert row.value_raw == '{"x": 1}' and row.key == "BTC/USD"
    assert (row.topic, row.partition, row.offset) == ("crypto.trades", 0, 41)
    assert row.headers[0].key == "source" and row.headers[0].value == "replay"
    assert row.ingest_date == date(2019, 7, 1)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "not_a_json_object"),
        (trade_json("1", 1.0, 1.0, T0, price=...), "missing_field:price"),
        (trade_json("1", 1.0, 1.0, T0, symbol=...), "missing_field:symbol"),
        (trade_json("1", 1.0, 1.0, T0, price="abc"), "bad_type:price"),
        (trade_json("1", -5.0, 1.0, T0), "non_positive:price"),
        (trade_json("1", 5.0, 0.0, T0), "non_positive:qty"),
        (trade_json("1", 5.0, 1.0, T0, qty="Infinity"), "non_finite:qty"),
        (trade_json("1", 2e12, 1.0, T0), "price_too_large"),
        (trade_json("1", 5.0, 1.0, T0, side="hold"), "unknown_side:hold"),
        (trade_json("1", 5.0, 1.0, T0, symbol="BTCUSD"), "bad_symbol:BTCUSD"),
        (trade_json("1", 5.0, 1.0, T0, event_time="yesterday"), "bad_timestamp:yesterday"),
    ],
)
def test_invalid_rows_are_quarantined_with_reason(spark, value: str, reason: str) -> None:
    parsed = silver.parse_bronze(bronze_df(spark, [value, trade_json("2", 10.0, 1.0, T0)]))
    bad = silver.quarantined(parsed).collect()
    assert [r.reason.split(": ")[0] for r in bad] == [reason]
    assert bad[0].value_raw == value and bad[0].offset == 0
    good = silver.valid_trades(parsed).collect()
    assert [(g.trade_id, g.price, g.offset) for g in good] == [("2", 10.0, 1)]


def test_parse_types_event_time_and_lineage(spark) -> None:
    at = T0 + timedelta(microseconds=172000)
    row = silver.valid_trades(silver.parse_bronze(bronze_df(spark, [trade_json("7", 10749.4, 0.004, at, "sell")],
                                                            start_offset=5))).first()
    assert row.symbol == "BTC/USD" and row.trade_id == "7" and row.side == "sell"
    assert row.price == 10749.4 and row.qty == 0.004
    assert row.event_time == at.replace(tzinfo=None) and row.event_date == date(2019, 7, 1)
    assert (row.topic, row.partition, row.offset) == ("t", 0, 5)


def test_duplicates_in_a_batch_keep_the_earliest_offset(spark) -> None:
    values = [trade_json("1", 10.0, 1.0, T0), trade_json("1", 10.0, 1.0, T0), trade_json("2", 10.0, 1.0, T0)]
    parsed = silver.parse_bronze(bronze_df(spark, values))
    rows = silver.valid_trades(parsed).orderBy("trade_id").collect()
    assert [(r.trade_id, r.offset) for r in rows] == [("1", 0), ("2", 2)]
    # the streaming path does the same on the batch's Arrow rows (no shuffle), reversed input order too
    arrow = parsed.select(*silver.SILVER_SCHEMA.fieldNames()).orderBy(F.col("offset").desc()).toArrow()
    firsts = silver.first_per_key(arrow)
    assert list(zip(firsts["trade_id"].to_pylist(), firsts["offset"].to_pylist(), strict=True)) == [("1", 0), ("2", 2)]


def test_silver_batches_are_idempotent_and_dedup_across_batches(spark, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    silver.ensure_tables(spark, settings)
    batch0 = bronze_df(spark, [trade_json(str(i), 10.0 + i, 1.0, T0 + timedelta(seconds=i)) for i in range(5)]
                       + ["junk"])
    stats = LayerStats()
    silver.process_batch(silver.to_driver(batch0), 0, settings, "app", stats)
    silver.process_batch(silver.to_driver(batch0), 0, settings, "app", stats)  # replay after a crash: a no-op
    # a later batch repeats trades 3 and 4 (a snapshot after reconnect) and adds 5
    batch1 = bronze_df(spark, [trade_json(str(i), 10.0 + i, 1.0, T0 + timedelta(seconds=i)) for i in (3, 4, 5)],
                       start_offset=6)
    silver.process_batch(silver.to_driver(batch1), 1, settings, "app")
    table = spark.read.format("delta").load(str(settings.silver))
    assert sorted(int(r.trade_id) for r in table.collect()) == [0, 1, 2, 3, 4, 5]
    assert spark.read.format("delta").load(str(settings.quarantine)).count() == 1
    assert stats["quarantined"] == 1


def silver_rows(spark, trades: list[tuple[str, float, float, datetime, str]]):
    rows = [Row(exchange="kraken", symbol=s, trade_id=i, price=p, qty=q, side="buy" if n % 2 == 0 else "sell",
                ord_type=None, event_time=t, ingest_time=t, topic="t", partition=0, offset=n, event_date=t.date(),
                venue_symbol="BTC/USD")
            for n, (i, p, q, t, s) in enumerate(trades)]
    return spark.createDataFrame(rows, silver.SILVER_SCHEMA)


def test_bars_ohlcv_and_ties_at_the_same_timestamp(spark) -> None:
    t = T0 + timedelta(seconds=10)
    # Same event_time: trade_id decides; numeric ids compare as numbers ("9" < "10").
    df = silver_rows(spark, [("10", 101.0, 1.0, t, "BTC/USD"), ("9", 100.0, 2.0, t, "BTC/USD"),
                             ("11", 103.0, 1.0, t, "BTC/USD"), ("8", 99.0, 1.0, T0 + timedelta(seconds=70), "BTC/USD")])
    bars = {r.bar_start: r for r in gold.bars(df, "1m").collect()}
    b = bars[datetime(2019, 7, 1, 0, 0)]
    assert (b.open, b.high, b.low, b.close, b.trades) == (100.0, 103.0, 100.0, 103.0, 3)
    assert b.volume == 4.0 and b.vwap == pytest.approx((101 + 200 + 103) / 4.0, rel=1e-12)
    assert b.buy_volume + b.sell_volume == b.volume
    assert b.bar_end == datetime(2019, 7, 1, 0, 1) and b.is_final is False
    assert bars[datetime(2019, 7, 1, 0, 1)].open == 99.0
    five = gold.bars(df, "5m").collect()
    assert len(five) == 1 and (five[0].open, five[0].close, five[0].trades) == (100.0, 99.0, 4)


def test_bars_across_a_day_boundary(spark) -> None:
    late_evening = datetime(2019, 7, 1, 23, 59, 59, 900000)
    df = silver_rows(spark, [("1", 10.0, 1.0, late_evening, "ETH/USD"),
                             ("2", 11.0, 1.0, late_evening + timedelta(milliseconds=200), "ETH/USD")])
    for tf, starts in {"1m": [datetime(2019, 7, 1, 23, 59), datetime(2019, 7, 2, 0, 0)],
                       "1h": [datetime(2019, 7, 1, 23, 0), datetime(2019, 7, 2, 0, 0)]}.items():
        rows = sorted(gold.bars(df, tf).collect(), key=lambda r: r.bar_start)
        assert [r.bar_start for r in rows] == starts
        assert [r.bar_date for r in rows] == [date(2019, 7, 1), date(2019, 7, 2)]
        assert [r.close for r in rows] == [10.0, 11.0]


def read_bars(spark, settings: Settings, tf: str) -> dict[datetime, Row]:
    return {r.bar_start: r for r in spark.read.format("delta").load(str(bars_path(settings, tf))).collect()}


def test_gold_merge_late_trades_finality_and_replay(spark, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, watermark="2 minutes")
    gold.ensure_tables(spark, settings)
    t = datetime(2019, 7, 1, 0, 0, 0)
    batch0 = silver_rows(spark, [("1", 100.0, 1.0, t + timedelta(seconds=5), "BTC/USD"),
                                 ("2", 105.0, 1.0, t + timedelta(seconds=50), "BTC/USD")])
    gold.process_batch(batch0, 0, settings, "g")
    # batch 1: the same minute gets an earlier trade (becomes open) and the clock moves to 00:05:30
    batch1 = silver_rows(spark, [("3", 90.0, 2.0, t + timedelta(seconds=1), "BTC/USD"),
                                 ("4", 120.0, 1.0, t + timedelta(minutes=5, seconds=30), "BTC/USD")])
    gold.process_batch(batch1, 1, settings, "g")
    gold.process_batch(batch1, 1, settings, "g")  # replayed batch: nothing counted twice
    m = read_bars(spark, settings, "1m")
    first = m[t]
    assert (first.open, first.high, first.low, first.close, first.trades) == (90.0, 105.0, 90.0, 105.0, 3)
    assert first.volume == 4.0 and first.vwap == pytest.approx((100 + 105 + 180) / 4.0, rel=1e-12)
    # watermark = 00:05:30 - 2 min = 00:03:30: the 00:00 bar is final, the 00:05 bar is still forming
    assert first.is_final is True and m[t + timedelta(minutes=5)].is_final is False

    # batch 2: a trade at 00:02:00 is older than the watermark 00:03:30 -> late, counted, not in Gold
    batch2 = silver_rows(spark, [("5", 1000.0, 1.0, t + timedelta(minutes=2), "BTC/USD"),
                                 ("6", 121.0, 1.0, t + timedelta(minutes=5, seconds=40), "BTC/USD")])
    stats = LayerStats()
    gold.process_batch(batch2, 2, settings, "g", stats=stats)
    assert stats["late"] == 1 and stats["watermark"] == "2019-07-01 00:03:40"
    m = read_bars(spark, settings, "1m")
    assert t + timedelta(minutes=2) not in m
    assert m[t + timedelta(minutes=5)].trades == 2 and m[t + timedelta(minutes=5)].close == 121.0
    late = spark.read.format("delta").load(str(late_path(settings))).collect()
    assert [(r.trade_id, r.watermark) for r in late] == [("5", t + timedelta(minutes=3, seconds=30))]
    hour = read_bars(spark, settings, "1h")[t]
    assert hour.trades == 5 and hour.high == 121.0 and hour.open == 90.0 and hour.close == 121.0


def test_a_crash_mid_offset_write_does_not_block_the_restart(spark, tmp_path: Path) -> None:
    """kill -9 while Spark renames offsets/0 leaves an empty temp file; the next start must still work."""
    settings = Settings(data_dir=tmp_path)
    silver.ensure_tables(spark, settings)
    chk = settings.checkpoint(silver.CHECKPOINT)
    (chk / "offsets").mkdir(parents=True)
    (chk / "offsets" / ".0.0b5e-crash.tmp").write_text("")
    (chk / "offsets" / "..0.0b5e-crash.tmp.crc").write_text("")
    spark.createDataFrame([(trade_json("1", 10.0, 1.0, T0),)], "value_raw string").selectExpr(
        "value_raw", "'BTC/USD' AS key", "'t' AS topic", "0 AS partition", "0L AS offset",
        "TIMESTAMP'2019-07-01 00:00:00' AS ts_kafka", "array() AS headers", "DATE'2019-07-01' AS ingest_date",
    ).selectExpr(*[f"CAST({f.name} AS {f.dataType.simpleString()}) AS {f.name}" for f in BRONZE_SCHEMA]) \
        .write.format("delta").mode("append").save(str(settings.bronze))
    query = silver.start_silver(spark, settings, trigger="available-now")
    query.awaitTermination(120)
    assert query.exception() is None
    assert [r.trade_id for r in spark.read.format("delta").load(str(settings.silver)).collect()] == ["1"]


def kafka_df(spark, values: list[str], start_offset: int = 0):
    """Rows as Spark's Kafka source gives them."""
    rows = [(b"BTC/USD", v.encode(), "t", 0, start_offset + i, T0, 0, [("source", b"test")])
            for i, v in enumerate(values)]
    return spark.createDataFrame(rows, "key binary, value binary, topic string, partition int, offset long, "
                                       "timestamp timestamp, timestampType int, "
                                       "headers array<struct<key:string,value:binary>>")


def test_one_query_pipeline_batch_is_exact_after_a_crash_between_silver_and_gold(spark, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from lakehouse_utils.layers import bronze, pipeline
    from lakehouse_utils.layers.gold_writer import GoldWriter
    from lakehouse_utils.layers.streaming import app_id_for

    settings = Settings(data_dir=tmp_path)
    gold.ensure_tables(spark, settings)
    checkpoint = tmp_path / "checkpoints" / pipeline.CHECKPOINT
    values = [trade_json(str(i), 10.0 + i, 1.0, T0 + timedelta(seconds=i)) for i in range(4)]
    batch0 = pipeline.rows_for_layers(kafka_df(spark, values + ["junk", values[1]])).toArrow()
    # batch 0 reaches Bronze and Silver, then the process dies before Gold ...
    bronze.write_batch(settings, batch0, app_id_for("bronze", checkpoint), 0)
    first = silver.commit_parsed(batch0, 0, settings, app_id_for("silver", checkpoint))
    assert first["trade_id"].to_pylist() == ["0", "1", "2", "3"]
    # ... and Spark replays it after the restart: Silver hands Gold the same four trades, nothing is doubled
    GoldWriter._cache.clear()
    pipeline.process_batch(batch0, 0, settings, checkpoint, spark)
    batch1 = pipeline.rows_for_layers(kafka_df(spark, [values[3], trade_json("9", 20.0, 2.0, T0)], 6)).toArrow()
    pipeline.process_batch(batch1, 1, settings, checkpoint, spark)
    pipeline.process_batch(batch1, 1, settings, checkpoint, spark)  # a replay of a batch that completed

    assert len(DeltaTable(str(settings.bronze)).to_pyarrow_table()) == 8  # the raw audit keeps every message
    assert len(DeltaTable(str(settings.quarantine)).to_pyarrow_table()) == 1
    assert sorted(DeltaTable(str(settings.silver)).to_pyarrow_table()["trade_id"].to_pylist()) == \
        ["0", "1", "2", "3", "9"]
    bar = DeltaTable(str(settings.bars_table("1m"))).to_pyarrow_table().to_pylist()
    assert len(bar) == 1 and bar[0]["trades"] == 5 and bar[0]["exchange"] == "kraken"
    # "0" opens: trades are ordered by (time, id)
    assert (bar[0]["open"], bar[0]["high"], bar[0]["low"], bar[0]["close"]) == (10.0, 20.0, 10.0, 13.0)
    assert bar[0]["volume"] == pytest.approx(6.0)


def _checkpoint(settings: Settings, name: str) -> str:
    """A checkpoint as Spark leaves it (its query id in ``metadata``); returns the query id."""
    import uuid

    qid = str(uuid.uuid4())
    (settings.checkpoint(name) / "offsets").mkdir(parents=True)
    (settings.checkpoint(name) / "metadata").write_text(json.dumps({"id": qid}) + "\n")
    return qid


def _commit(path: Path, layer: str, qid: str) -> None:
    """One row committed as a query of that checkpoint commits it: app id ``<layer>-<query id>``."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from lakehouse_utils.layers import delta_io

    schema = pa.schema(DeltaTable(str(path)).schema().to_arrow())
    assert delta_io.append(path, pa.Table.from_pylist([{}], schema), f"{layer}-{qid}", 0)


def test_a_set_of_tables_is_run_by_one_flow(tmp_path: Path) -> None:
    """The tables say which checkpoints wrote them: only those refuse a query of the other flow."""
    from lakehouse_utils.config import FlowConflict
    from lakehouse_utils.layers import bronze, pipeline
    from lakehouse_utils.layers.streaming import LAYER_CHECKPOINTS, check_flow, flow_of

    demo = Settings(data_dir=tmp_path / "data")  # as `make demo` leaves ./data
    check_flow(demo, pipeline.CHECKPOINT, LAYER_CHECKPOINTS)  # a new data dir: either flow may start
    assert flow_of(demo) is None
    gold.ensure_tables(None, demo)
    qid = _checkpoint(demo, pipeline.CHECKPOINT)
    assert flow_of(demo) == "pipeline"
    check_flow(demo, silver.CHECKPOINT, (pipeline.CHECKPOINT,))  # a checkpoint that wrote nothing owns nothing
    for table, layer in ((demo.bronze, "bronze"), (demo.silver, "silver"), (demo.bars_table("1m"), "gold")):
        _commit(table, layer, qid)

    for layer in (bronze, silver, gold):  # each layer on the demo's tables: refused, naming tables and checkpoint
        with pytest.raises(FlowConflict, match=f"built by the one-query pipeline.*{pipeline.CHECKPOINT}.*reset"):
            check_flow(demo, layer.CHECKPOINT, (pipeline.CHECKPOINT,))
    elsewhere = tmp_path / "mine" / "checkpoints" / bronze.CHECKPOINT  # ... with a checkpoint elsewhere, too
    with pytest.raises(FlowConflict, match=str(demo.bronze)):
        check_flow(demo, bronze.CHECKPOINT, (pipeline.CHECKPOINT,), elsewhere)

    # the seed's commands with their own paths, the demo's data dir as the default one: the demo's checkpoint
    # is looked at (it is in the default checkpoint folder) but did not write these tables
    mine = demo.with_(bronze_path=tmp_path / "mine/bronze/crypto_trades", silver_path=tmp_path / "mine/silver/trades",
                      gold_path=tmp_path / "mine/gold")
    gold.ensure_tables(None, mine)
    for layer in (bronze, silver, gold):
        check_flow(mine, layer.CHECKPOINT, (pipeline.CHECKPOINT,), tmp_path / "mine/checkpoints" / layer.CHECKPOINT)

    layered = Settings(data_dir=tmp_path / "layered")
    gold.ensure_tables(None, layered)
    _commit(layered.silver, "silver", _checkpoint(layered, silver.CHECKPOINT))
    assert flow_of(layered) == "layers"  # the demo keeps to the layer queries on such a data dir
    with pytest.raises(FlowConflict, match=f"built layer by layer.*{silver.CHECKPOINT}"):
        check_flow(layered, pipeline.CHECKPOINT, LAYER_CHECKPOINTS)


def test_delta_rs_commits_carry_the_version_checksum_spark_would_write(spark, tmp_path: Path) -> None:
    """Each delta-rs commit leaves ``_delta_log/<v>.crc``: Spark reads protocol and metadata from it instead of
    rebuilding them with a job per read; a commit Spark adds after ours derives its own checksum from ours."""
    import pyarrow as pa

    from lakehouse_utils.layers import delta_io
    from lakehouse_utils.layers.streaming import ensure_table

    path = tmp_path / "t"
    ensure_table(spark, path, silver.QUARANTINE_SCHEMA, ["ingest_date"])
    rows = [{"reason": f"r{i}", "value_raw": "x" * i, "topic": "t", "partition": 0, "offset": i, "ts_kafka": T0,
             "quarantined_at": T0, "ingest_date": (T0 + timedelta(days=i % 2)).date()} for i in range(5)]
    assert delta_io.append(path, pa.Table.from_pylist(rows), "app", 0)
    log = path / "_delta_log"
    assert sorted(p.name for p in log.glob("*.crc")) == [f"{v:020d}.crc" for v in (0, 1)]
    ours = json.loads((log / f"{1:020d}.crc").read_text())
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").collect()[0]
    assert ours["numFiles"] == detail.numFiles == 2 and ours["tableSizeBytes"] == detail.sizeInBytes
    assert ours["metadata"]["partitionColumns"] == ["ingest_date"]
    assert json.loads(ours["metadata"]["schemaString"])["fields"][0]["name"] == "reason"
    assert spark.read.format("delta").load(str(path)).count() == 5

    more = spark.createDataFrame([{**rows[0], "offset": 9}], silver.QUARANTINE_SCHEMA)
    more.write.format("delta").mode("append").save(str(path))  # Spark's own commit (and checksum) on top of ours
    theirs = json.loads((log / f"{2:020d}.crc").read_text())
    assert theirs["numFiles"] == 3 and theirs["protocol"] == ours["protocol"]
    assert theirs["metadata"]["id"] == ours["metadata"]["id"]
    assert theirs["tableSizeBytes"] == sum(f.stat().st_size for f in path.rglob("*.parquet"))


def test_the_engine_warm_up_is_a_valid_kafka_row_built_in_the_jvm(spark) -> None:
    """The shared engine's warm-up batch: the Kafka source's columns and types, a trade Silver accepts, and no
    Python rows shipped to workers (``createDataFrame`` of a list did: a ``pyspark.daemon`` the engine kept)."""
    from lakehouse_utils.engine.host import warm_up_rows
    from lakehouse_utils.layers.pipeline import rows_for_layers

    rows = warm_up_rows(spark)
    kafka = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", "127.0.0.1:9")
             .option("subscribe", "never-read").option("includeHeaders", "true").load())  # its schema; nothing connects
    assert [(f.name, f.dataType) for f in rows.schema] == [(f.name, f.dataType) for f in kafka.schema]
    plan = rows._jdf.queryExecution().executedPlan().toString()
    assert "ExistingRDD" not in plan and "Python" not in plan, plan
    out = rows_for_layers(rows).toArrow().to_pylist()
    assert len(out) == 1 and out[0]["symbol"] == "WARM/UP" and out[0]["reason"] is None and out[0]["price"] == 1.0
