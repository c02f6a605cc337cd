"""Trade/Rejected types and the Kraken v2 trade item parser."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from lakehouse_utils.sources.trades import (
    MAX_RAW_CHARS,
    SCHEMA_VERSION,
    Rejected,
    Trade,
    TradeError,
    normalize_symbol,
    parse_kraken_v2_trade,
)

INGEST = datetime(2019, 7, 1, 0, 0, 4, 5, tzinfo=UTC)


def item(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "symbol": "BTC/USD",
        "side": "sell",
        "price": 10749.4,
        "qty": 0.004,
        "trade_id": 1,
        "timestamp": "2019-07-01T00:00:03.172000Z",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def reason_of(raw_item: object) -> str:
    with pytest.raises(TradeError) as info:
        parse_kraken_v2_trade(raw_item, ingest_time=INGEST)  # type: ignore[arg-type]
    return info.value.reason


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("BTC/USD", "BTC/USD"),
        ("XBT/USDT", "BTC/USDT"),
        ("xbt/usd", "BTC/USD"),
        (" eth/xbt ", "ETH/BTC"),
        ("XDG/USD", "DOGE/USD"),
        ("sol/eur", "SOL/EUR"),
    ],
)
def test_normalize_symbol(given: str, expected: str) -> None:
    assert normalize_symbol(given) == expected


@pytest.mark.parametrize("bad", ["XBTUSD", "BTC/", "/USD", "BTC/USD/EUR", "BTC-USD", "", 42, None])
def test_normalize_symbol_rejects_non_pairs(bad: object) -> None:
    with pytest.raises(ValueError):
        normalize_symbol(bad)  # type: ignore[arg-type]


def test_parse_valid_item_without_ord_type() -> None:
    trade = parse_kraken_v2_trade(item(symbol="XBT/USD"), ingest_time=INGEST)
    assert trade == Trade(
        exchange="kraken",
        symbol="BTC/USD",
        trade_id="1",
        price=10749.4,
        qty=0.004,
        side="sell",
        ord_type=None,
        event_time=datetime(2019, 7, 1, 0, 0, 3, 172000, tzinfo=UTC),
        ingest_time=INGEST,
        venue_symbol="XBT/USD",  # the name as Kraken sent it
    )


def test_parse_keeps_ord_type_and_microseconds() -> None:
    trade = parse_kraken_v2_trade(
        item(ord_type="limit", timestamp="2023-09-25T07:49:37.708706Z", price=3, trade_id="77"),
        exchange="kraken-test",
        ingest_time=INGEST,
    )
    assert trade.ord_type == "limit"
    assert trade.event_time == datetime(2023, 9, 25, 7, 49, 37, 708706, tzinfo=UTC)
    assert trade.price == 3.0 and isinstance(trade.price, float)
    assert trade.trade_id == "77"
    assert trade.exchange == "kraken-test"


def test_parse_converts_offsets_to_utc() -> None:
    trade = parse_kraken_v2_trade(item(timestamp="2019-07-01T02:00:03.172+02:00"), ingest_time=INGEST)
    assert trade.event_time == datetime(2019, 7, 1, 0, 0, 3, 172000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "expected_code"),
    [
        ({"price": ...}, "missing_field:price"),
        ({"qty": ...}, "missing_field:qty"),
        ({"symbol": ...}, "missing_field:symbol"),
        ({"side": ...}, "missing_field:side"),
        ({"trade_id": ...}, "missing_field:trade_id"),
        ({"timestamp": ...}, "missing_field:timestamp"),
        ({"price": None}, "missing_field:price"),
        ({"price": "abc"}, "bad_type:price"),
        ({"price": "10749.4"}, "bad_type:price"),  # numeric strings are rejected on purpose
        ({"price": "Infinity"}, "bad_type:price"),
        ({"price": True}, "bad_type:price"),
        ({"price": [1.0]}, "bad_type:price"),
        ({"qty": {"v": 1}}, "bad_type:qty"),
        ({"price": math.nan}, "non_finite:price"),
        ({"price": math.inf}, "non_finite:price"),
        ({"qty": -math.inf}, "non_finite:qty"),
        ({"price": -1}, "non_positive:price"),
        ({"price": 0}, "non_positive:price"),
        ({"qty": 0}, "non_positive:qty"),
        ({"qty": -0.5}, "non_positive:qty"),
        ({"price": 1e13}, "price_too_large"),
        ({"side": "hold"}, "unknown_side:hold"),
        ({"side": "BUY"}, "unknown_side:BUY"),
        ({"side": 1}, "bad_type:side"),
        ({"timestamp": "yesterday"}, "bad_timestamp"),
        ({"timestamp": "2019-07-01T00:00:03"}, "bad_timestamp"),  # no timezone
        ({"timestamp": "0001-01-01T00:00:00+01:00"}, "bad_timestamp"),  # out of range in UTC
        ({"timestamp": 1561939203}, "bad_type:timestamp"),
        ({"symbol": "XBTUSD"}, "bad_symbol"),
        ({"trade_id": 1.5}, "bad_type:trade_id"),
        ({"trade_id": False}, "bad_type:trade_id"),
        ({"ord_type": 7}, "bad_type:ord_type"),
    ],
)
def test_parse_rejections(changes: dict[str, object], expected_code: str) -> None:
    reason = reason_of(item(**changes))
    assert reason.split(" ", 1)[0] == expected_code


def test_parse_rejects_non_objects() -> None:
    assert reason_of([1, 2]) == "bad_type:item list"
    assert isinstance(TradeError("x"), ValueError)


def test_reason_detail_shows_the_value() -> None:
    assert reason_of(item(price=-1)) == "non_positive:price -1"
    assert reason_of(item(qty=0)) == "non_positive:qty 0"


def test_trade_json_and_kafka_fields() -> None:
    trade = parse_kraken_v2_trade(item(), ingest_time=INGEST)
    text = trade.to_json()
    assert " " not in text
    assert json.loads(text) == {
        "exchange": "kraken",
        "symbol": "BTC/USD",
        "venue_symbol": "BTC/USD",
        "trade_id": "1",
        "price": 10749.4,
        "qty": 0.004,
        "side": "sell",
        "ord_type": None,
        "event_time": "2019-07-01T00:00:03.172000Z",
        "ingest_time": "2019-07-01T00:00:04.000005Z",
        "schema_version": SCHEMA_VERSION,
    }
    assert trade.kafka_key() == b"kraken|BTC/USD"
    assert trade.kafka_headers("kraken") == [("source", b"kraken"), ("schema_version", b"1")]


def _reference_json(trade: Trade) -> str:
    """The message format as first written: json.dumps of the fields, times via strftime in UTC."""
    def fmt(ts: datetime) -> str:
        return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    venue = {} if trade.venue_symbol is None else {"venue_symbol": trade.venue_symbol}
    fields = {"exchange": trade.exchange, "symbol": trade.symbol, **venue, "trade_id": trade.trade_id,
              "price": trade.price,
              "qty": trade.qty, "side": trade.side, "ord_type": trade.ord_type, "event_time": fmt(trade.event_time),
              "ingest_time": fmt(trade.ingest_time), "schema_version": SCHEMA_VERSION}
    return json.dumps(fields, separators=(",", ":"), allow_nan=False)


def test_to_json_is_byte_for_byte_the_json_dumps_format() -> None:
    rng = random.Random(5)
    zones = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    texts = ["BTC/USD", "é/€", 'a"b\\c', "\n\t", "\U0001f600", "", "kraken"]
    for _ in range(20_000):
        event = datetime(rng.randint(1990, 2100), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                         rng.randint(0, 59), rng.randint(0, 59), rng.choice([0, 1, 999_999, rng.randint(0, 999_999)]),
                         tzinfo=rng.choice(zones))
        ingest = event if rng.random() < 0.5 else event + timedelta(microseconds=rng.randint(0, 10**9))
        price = rng.choice([rng.random() * 10 ** rng.randint(-8, 12), 5e-324, 1.7976931348623157e308, -0.0, 7, True])
        trade_id = rng.choice([str(rng.randint(1, 10**12)), rng.randint(1, 100), rng.choice(texts)])
        trade = Trade(rng.choice(texts), rng.choice(texts), trade_id, price, rng.choice([rng.random(), 2]),  # type: ignore[arg-type]
                      rng.choice(texts), rng.choice([None, "limit", "ü"]), event, ingest,
                      rng.choice([None, *texts]))
        assert trade.to_json() == _reference_json(trade)
    naive = datetime(2024, 1, 1, 12, 0, 0, 5)  # taken as local time, as before
    trade = Trade("x", "BTC/USD", "1", 1.0, 1.0, "buy", None, naive, naive)
    assert trade.to_json() == _reference_json(trade)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            Trade("x", "BTC/USD", "1", bad, 1.0, "buy", None, INGEST, INGEST).to_json()


def test_trade_is_frozen() -> None:
    trade = parse_kraken_v2_trade(item(), ingest_time=INGEST)
    with pytest.raises(AttributeError):
        trade.price = 1.0  # type: ignore[misc]


def test_rejected_short_raw_is_kept() -> None:
    rejected = Rejected(reason="invalid_json x", raw="{oops", source="kraken", received_at=INGEST)
    assert rejected.raw == "{oops"
    assert rejected.code == "invalid_json"
    assert json.loads(rejected.to_json()) == {
        "reason": "invalid_json x",
        "raw": "{oops",
        "source": "kraken",
        "received_at": "2019-07-01T00:00:04.000005Z",
        "truncated": False,
        "original_length": 5,
        "schema_version": SCHEMA_VERSION,
    }


def test_rejected_long_raw_is_truncated_with_marker() -> None:
    raw = "x" * (MAX_RAW_CHARS * 3)
    rejected = Rejected(reason="frame_too_large", raw=raw, source="kraken", received_at=INGEST)
    assert len(rejected.raw) == MAX_RAW_CHARS
    assert rejected.raw.endswith("[truncated]")
    payload = json.loads(rejected.to_json())
    assert payload["truncated"] is True
    assert payload["original_length"] == MAX_RAW_CHARS * 3


def test_rejected_at_the_limit_is_not_truncated() -> None:
    raw = "y" * MAX_RAW_CHARS
    rejected = Rejected(reason="r", raw=raw, source="s", received_at=INGEST)
    assert rejected.raw == raw and not rejected.truncated
