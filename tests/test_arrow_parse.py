"""Silver's parse in Arrow (layers/arrow_parse.py) gives exactly what Spark's ``parse_bronze`` gives.

Each case builds Kafka-shaped rows in Spark, makes Bronze's rows of them (``to_bronze``, as a batch does), and
compares, row for row and column for column, ``rows_for_layers`` (the whole parse in Spark: the definition)
with ``silver.Parser`` (canonical rows in Arrow, the rest in Spark).  The corpora: the fuzz test's hostile mix,
crafted rows where a second reading of JSON could differ, and the bundled real hour, which Arrow must take
whole (that is the speed-up: a catch-up of our producer's trades never needs Spark's parse).
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest

from lakehouse_utils.config import Settings
from lakehouse_utils.layers import bronze, pipeline, silver
from lakehouse_utils.layers.silver import Parser
from lakehouse_utils.sources.recording import SAMPLE_RECORDING, read_recording
from lakehouse_utils.sources.trades import parse_kraken_v2_trade
from tests.test_fuzz import T0, mix
from tests.test_layers import trade_json

KAFKA = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
         "timestampType int, headers array<struct<key:string,value:binary>>")


def kafka_rows(spark, values: list[bytes | None], keys: list[bytes | None] | None = None,
               headers: list[list[tuple[str, bytes]] | None] | None = None):
    rows = [(keys[i] if keys else b"k", v, "t", i % 2, i, T0 + timedelta(milliseconds=i), 0,
             (headers[i] if headers else None) or [("source", b"replay")]) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA)


def both(spark, kafka_df, settings: Settings | None = None) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """(Spark's parse, the Arrow parse, the Arrow parse's counts) of the same Kafka rows."""
    settings = settings or Settings()
    want = pipeline.rows_for_layers(kafka_df).toArrow()
    _, parse = pipeline.layer_rows(spark, settings)
    assert parse is not None
    stats: dict[str, Any] = {}
    got = parse(bronze.to_bronze(kafka_df).toArrow(), stats)
    return want, got, stats


def plain(values: list[Any]) -> list[Any]:
    """NaN as a word: a NaN price is the same NaN in both (NaN != NaN)."""
    return ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in values]


def assert_same(want: pa.Table, got: pa.Table) -> None:
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        w, g = plain(want[name].to_pylist()), plain(got[name].to_pylist())
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(w, g, strict=True)) if a != b]
        assert not diff, f"{name}: {len(diff)} rows differ, first {diff[:3]}"


def test_the_fuzz_corpus_parses_the_same_in_arrow_and_in_spark(spark) -> None:
    messages = mix(random.Random(20261126))
    df = kafka_rows(spark, [m.value for m in messages], [m.key for m in messages], [m.headers for m in messages])
    want, got, stats = both(spark, df)
    assert_same(want, got)
    # the canonical valid trades went through Arrow (not all to Spark: that would prove nothing)
    assert stats["arrow_rows"] >= 150 and stats["spark_rows"] >= 100, stats
    assert want["reason"].null_count >= stats["arrow_rows"]  # Arrow takes valid trades only


def crafted(i: int, **over: Any) -> bytes:
    return trade_json(f"c{i}", 10.5, 0.25, T0 + timedelta(seconds=i), **over).encode()


CRAFTED = {
    "canonical": crafted(0),
    "lower symbol": crafted(1, symbol="btc/usd"),
    "side in capitals": crafted(2, side="BUY"),
    "symbol with space": crafted(3, symbol="BTC /USD"),
    "case twin of a key": crafted(4).replace(b'"price": 10.5', b'"price": 10.5, "PRICE": 99.0'),
    "escaped text": crafted(5, exchange="kr\u00e4ken"),
    "non-ASCII text": trade_json("c6", 10.5, 0.25, T0, exchange="kr\u00e4ken").encode().replace(
        b"\\u00e4", "\u00e4".encode()),
    "seven fraction digits": crafted(7, event_time="2026-11-26T12:00:07.1234567Z"),
    "no fraction": crafted(8, event_time="2026-11-26T12:00:08Z"),
    "offset instead of Z": crafted(9, event_time="2026-11-26T12:00:09+00:00"),
    "leap second": crafted(10, event_time="2026-11-26T23:59:60Z"),
    "space separator": crafted(11, event_time="2026-11-26 12:00:11Z"),
    "ingest time odd": crafted(12, ingest_time="yesterday"),
    "ingest time null": crafted(13, ingest_time=None),
    "ingest time missing": crafted(14, ingest_time=...),
    "tab as trade id": crafted(15, trade_id="\t"),
    "integer price": crafted(16, price=11),
    "tiny qty": crafted(17, qty=5e-324),
    "price at the bound": crafted(18, price=1e12),
    "price past the bound": crafted(19, price=1.0000000000001e12),
    "long decimal": crafted(20).replace(b'"price": 10.5', b'"price": 0.1000000000000000055511151231257827'),
    "exponent": crafted(21).replace(b'"price": 10.5', b'"price": 1.05E1'),
    "leading space": b" " + crafted(22),
    "trailing text": crafted(23) + b" x",
    "two objects": crafted(24) + crafted(25),
    "ord type": crafted(26, ord_type="limit"),
    "venue symbol": crafted(27, venue_symbol="XBT/USD"),
    "extra nested field": crafted(28, extra={"a": [1, {"b": None}]}),
    "zero price": crafted(29, price=0.0),
    "year 0999": crafted(30, event_time="0999-01-01T00:00:00Z"),
}
# rows Arrow's reader refuses (the batch is read again in halves): Spark parses those, Arrow the rest
REFUSED = {
    "price as text": crafted(40, price="10.5"),
    "a key twice": crafted(41).replace(b'"price": 10.5', b'"price": 10.5, "price": 12.5'),
    "february 30": crafted(42, event_time="2026-02-30T00:00:00Z"),
    "ord type a number": crafted(43, ord_type=3),
}


def test_crafted_rows_parse_the_same_in_arrow_and_in_spark(spark) -> None:
    values = list(CRAFTED.values())
    want, got, stats = both(spark, kafka_rows(spark, values))
    assert_same(want, got)
    assert 0 < stats["arrow_rows"] < len(values), stats
    assert got["reason"].to_pylist()[0] is None and got["symbol"].to_pylist()[1] == "BTC/USD"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_row_arrow_refuses_is_parsed_by_spark_and_the_others_by_arrow(spark, name: str) -> None:
    values = [crafted(50), crafted(51), REFUSED[name], crafted(52), crafted(53), crafted(54)]
    want, got, stats = both(spark, kafka_rows(spark, values))
    assert_same(want, got)
    assert stats == {"arrow_rows": 5, "spark_rows": 1}


def test_the_real_hour_is_parsed_in_arrow_whole_and_the_same(spark) -> None:
    items = [item for entry in read_recording(SAMPLE_RECORDING) if entry.get("frame", {}).get("channel") == "trade"
             for item in entry["frame"]["data"]]
    trades = [parse_kraken_v2_trade(item, ingest_time=T0) for item in items]
    assert len(trades) == len(items) > 2000
    values = [t.to_json().encode() for t in trades]
    want, got, stats = both(spark, kafka_rows(spark, values))
    assert_same(want, got)
    assert stats == {"arrow_rows": len(trades), "spark_rows": 0}
    assert got["reason"].null_count == len(trades)


def test_silver_layer_rows_carry_no_raw_value_for_valid_trades(spark) -> None:
    values = [crafted(60), b"not json", crafted(61, side="hold")]
    bronze_rows = bronze.to_bronze(kafka_rows(spark, values))
    want = silver.to_driver(bronze_rows).toArrow()
    got = Parser(spark, Settings(), silver.driver_columns())(bronze_rows.toArrow())
    assert_same(want, got)
    assert got["value_raw"].to_pylist()[0] is None and got["value_raw"].to_pylist()[1] == "not json"


def test_spark_parse_setting_parses_every_row_in_spark(spark) -> None:
    settings = Settings(silver_parse="spark")
    plan, parse = pipeline.layer_rows(spark, settings)
    assert plan is pipeline.rows_for_layers and parse is None
    with pytest.raises(ValueError, match="silver_parse"):
        Settings(silver_parse="pandas")
    assert Settings.from_env({"LAKEHOUSE_SILVER_PARSE": "spark"}).silver_parse == "spark"
