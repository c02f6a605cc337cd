"""Hostile input, property-based (issue 10, "Trust").

1. Random and adversarial items and frames into the Kraken v2 parser and the adapter's frame handler (pure
   Python, hypothesis): nothing raises but the documented rejection (``TradeError`` for an item, a ``Rejected``
   for a frame), every item ends as exactly one valid Trade or one reason, and parsing stays fast.
2. Fuzzed frames over a real socket through ProducerThread into the real broker: every reject in the DLQ.
3. Random bytes straight to the trades topic, through Bronze and Silver (slow): nothing dropped, every row in
   Silver, a duplicate, or the quarantine with a reason; the counts reconcile.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.producer import ProducerThread, TradeProducer
from lakehouse_utils.kafka.topics import end_offsets, ensure_topic
from lakehouse_utils.layers.silver import SYMBOL_RE
from lakehouse_utils.sources.kraken import KrakenV2Source, read_recording
from lakehouse_utils.sources.replay import ReplayServer
from lakehouse_utils.sources.trades import (
    MAX_PRICE,
    MAX_RAW_CHARS,
    REQUIRED_FIELDS,
    SIDES,
    Rejected,
    Trade,
    TradeError,
    normalize_symbol,
    parse_kraken_v2_trade,
)

from .test_kraken_replay import SAMPLE_PRINTS, trade_frame
from .test_layers import trade_json
from .test_producer import read_topic, run_to_end
from .test_trades import INGEST, item

# A generous deadline: the machine is shared; the explicit timing checks below are the tight ones.
FAST = hypothesis_settings(deadline=timedelta(milliseconds=500), max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])

# ---- strategies ---------------------------------------------------------------------------------

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
NASTY_TEXT = [
    "", " ", "NaN", "nan", "Infinity", "-Infinity", "-inf", "inf", "1e400", "-0", "0", "10749.4",
    "BUY", "Buy", "ｂｕｙ", "buy\u200b", "\u200bsell", "\u202ebuy", "b\x00uy", "buy\n",
    "XBTUSD", "BTC\u200b/USD", "\u202eBTC/USD", "BTC/USD\u200f", "ＢＴＣ/USD", "BTC²/USD", "ß/USD", "ﬁ/USD",
    "\u212a/USD", "BTC/USD/EUR", "A" * 17 + "/USD", "BTC\n/USD", "\ud800/USD", "BTC/\udfff", "١٢٣/USD",
    "2019-07-01T00:00:03", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "２０１９-07-01T00:00:00Z",
    "2019-07-01T00:00:03.172000Z\u200b", "\ud800", "\U0001f600", "²", "١٢٣", "x" * 10_000,
]
# unassigned, surrogates, format (zero-width, RTL), marks, digits of other scripts, controls
ODD_CHARS = st.characters(categories=["Cs", "Cf", "Cc", "Mn", "Nd", "No", "Lu", "Ll", "Zs", "So", "Lo"])
ODD_TEXT_CHARS = st.characters(categories=["Cf", "Cc", "Mn", "Nd", "No", "Lu", "Ll", "Zs", "So", "Lo"])  # no surrogates
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 10**40, 0, -1]),
    st.floats(),  # NaN and +-inf included
    st.sampled_from(NASTY_TEXT), st.text(ODD_CHARS, max_size=24),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), timezone(timedelta(0))]
VALID_ITEMS = st.fixed_dictionaries(
    {
        "symbol": st.sampled_from(["BTC/USD", "XBT/USDT", "eth/usd", " sol/eur ", "1INCH/EUR", "XDG/USD"])
        | st.builds("{}/{}".format, st.text(ALNUM, min_size=1, max_size=16), st.text(ALNUM, min_size=1, max_size=16)),
        "side": st.sampled_from(sorted(SIDES)),
        "price": st.floats(min_value=0, max_value=MAX_PRICE, exclude_min=True) | st.integers(1, 10**12),
        "qty": st.floats(min_value=0, exclude_min=True, allow_infinity=False) | st.integers(1, 10**30),
        "trade_id": st.integers(1, 2**63) | st.text(min_size=1) | st.text(ODD_TEXT_CHARS, min_size=1, max_size=8),
        "timestamp": st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),
                                  timezones=st.sampled_from(ZONES)).map(datetime.isoformat),
    },
    optional={"ord_type": st.none() | st.sampled_from(["limit", "market", ""])},
)


@st.composite
def mutated_items(draw: st.DrawFn) -> Any:
    """A valid item with some fields dropped or replaced by hostile JSON values, maybe extra keys."""
    base = dict(draw(VALID_ITEMS))
    for name in draw(st.sets(st.sampled_from([*REQUIRED_FIELDS, "ord_type"]), min_size=1)):
        if draw(st.booleans()):
            base.pop(name, None)
        else:
            base[name] = draw(JSON_VALUES)
    base.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)))
    return base


ITEMS = st.one_of(VALID_ITEMS, mutated_items(), JSON_VALUES)  # JSON_VALUES: arrays and scalars for an item
TRADE_FRAMES = st.builds(
    lambda kind, items, extra: json.dumps({"channel": "trade", "type": kind, "data": items, **extra}),
    st.sampled_from(["snapshot", "update"]), st.lists(ITEMS, max_size=6),
    st.dictionaries(st.text(max_size=6).filter(lambda k: k not in ("channel", "type", "data")), JSON_VALUES,
                    max_size=2),
)
OTHER_FRAMES = st.one_of(
    JSON_VALUES.map(json.dumps),  # arrays, scalars, random objects
    st.fixed_dictionaries({"channel": JSON_VALUES, "type": JSON_VALUES, "data": JSON_VALUES}).map(json.dumps),
    st.fixed_dictionaries({"channel": st.just("trade"), "type": JSON_VALUES, "data": JSON_VALUES}).map(json.dumps),
    st.fixed_dictionaries({"method": JSON_VALUES}, optional={"success": JSON_VALUES, "error": JSON_VALUES,
                                                             "result": JSON_VALUES}).map(json.dumps),
    st.text(), st.text(ODD_CHARS), st.binary(), st.sampled_from(["", " ", "\n", "null", "{", "}", "[]", "{}"]),
)


@st.composite
def broken_text(draw: st.DrawFn) -> str | bytes:
    """A good frame's text cut short, or with bytes flipped (often invalid UTF-8)."""
    text = draw(TRADE_FRAMES).encode()
    if draw(st.booleans()):
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    data = bytearray(text)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


FRAMES = st.one_of(TRADE_FRAMES, OTHER_FRAMES, broken_text())


# ---- the properties every outcome must have -------------------------------------------------------


def assert_valid_trade(trade: Trade) -> None:
    assert type(trade.price) is float and math.isfinite(trade.price) and 0 < trade.price <= MAX_PRICE
    assert type(trade.qty) is float and math.isfinite(trade.qty) and trade.qty > 0
    assert trade.side in SIDES
    assert re.fullmatch(SYMBOL_RE, trade.symbol, re.ASCII) and normalize_symbol(trade.symbol) == trade.symbol
    assert type(trade.trade_id) is str and trade.trade_id.encode("utf-8")  # real text (no lone surrogate)
    assert trade.ord_type is None or type(trade.ord_type) is str
    assert trade.event_time.utcoffset() == timedelta(0) and trade.ingest_time.utcoffset() == timedelta(0)
    message = json.loads(trade.to_json())  # what goes to the trades topic
    assert (message["price"], message["qty"], message["trade_id"]) == (trade.price, trade.qty, trade.trade_id)


def assert_reason(reason: object) -> None:
    assert isinstance(reason, str) and re.match(r"[a-z0-9_]+(:|\s|$)", reason), reason  # a code, maybe a detail


def outcome(raw_item: Any) -> Trade | str:
    """A Trade, or the reason of the TradeError; any other exception fails the test."""
    try:
        trade = parse_kraken_v2_trade(raw_item, ingest_time=INGEST)
    except TradeError as exc:
        assert_reason(exc.reason)
        return exc.reason
    assert_valid_trade(trade)
    return trade


def handle(payload: str | bytes, source: KrakenV2Source | None = None) -> list[Trade | Rejected]:
    """One frame through the adapter's frame handler, checked: each item is a valid Trade or a Rejected."""
    source = source or KrakenV2Source(["BTC/USD"], "ws://127.0.0.1:9")  # never connects
    frames = source.stats["frames"]
    out = source._handle_payload(payload)
    assert source.stats["frames"] == frames + 1
    for result in out:
        if isinstance(result, Trade):
            assert_valid_trade(result)
        else:
            assert isinstance(result, Rejected) and result.source == "kraken"
            assert_reason(result.reason)
            assert len(result.raw) <= MAX_RAW_CHARS
            assert json.loads(result.to_json())["reason"] == result.reason  # what goes to the DLQ
    return out


# ---- items --------------------------------------------------------------------------------------


@FAST
@given(VALID_ITEMS)
def test_valid_items_always_parse_to_the_same_values(raw: dict[str, Any]) -> None:
    trade = outcome(raw)
    assert isinstance(trade, Trade), trade
    assert trade.price == float(raw["price"]) and trade.qty == float(raw["qty"]) and trade.side == raw["side"]
    assert trade.symbol == normalize_symbol(raw["symbol"]) and trade.trade_id == str(raw["trade_id"])
    assert trade.event_time == datetime.fromisoformat(raw["timestamp"]) and trade.ord_type == raw.get("ord_type")


@FAST
@given(ITEMS)
@example(item(price=10**400)).via("crashed: OverflowError from float()")
@example(item(qty=-(10**400))).via("crashed: OverflowError from float()")
@example(item(trade_id=10**5000)).via("crashed: ValueError from str() past 4300 digits")
@example(item(price=[10**5000])).via("crashed: ValueError from repr() in the reason")
@example(item(symbol="BTC²/USD")).via("was a Trade: Silver quarantines a non-ASCII symbol")
@example(item(symbol="ß/USD")).via("was a Trade 'SS/USD'")
@example(item(symbol="A" * 17 + "/USD")).via("was a Trade: Silver allows 16 characters a side")
@example(item(side="\ud800"))
@example(item(trade_id="\ud800")).via("was a Trade: Silver reads every lone surrogate as '?', one key for all")
@example(item(timestamp="2019-07-01T00:00:03.172000Z\u200b"))
def test_any_item_is_a_valid_trade_or_one_reason(raw: Any) -> None:
    result = outcome(raw)
    if isinstance(result, Trade):  # it was a trade item: the fields it took are the item's
        assert result.symbol == normalize_symbol(raw["symbol"]) and result.price == float(raw["price"])


@FAST
@given(VALID_ITEMS, st.sampled_from([*REQUIRED_FIELDS]), JSON_VALUES | st.just(...))
def test_one_bad_field_names_that_field(raw: dict[str, Any], name: str, value: Any) -> None:
    """Spoil one required field: either it is still acceptable, or the reason is about that field."""
    spoiled = {**raw, name: value} if value is not ... else {k: v for k, v in raw.items() if k != name}
    result = outcome(spoiled)
    if isinstance(result, str):  # e.g. missing_field:qty, bad_type:qty, non_positive:qty; bad_timestamp
        assert name in result.split(" ", 1)[0] or (name, result.split(" ")[0]) == ("timestamp", "bad_timestamp")
    else:
        assert value is not None and value is not ...


def test_deep_nesting_and_huge_values_are_rejected_quickly() -> None:
    deep = nested(10_000)
    cases = {
        "price": (deep, "bad_type:price"),
        "qty": ("x" * 1_000_000, "bad_type:qty"),
        "symbol": ("B" * 1_000_000 + "/USD", "bad_symbol"),
        "side": ("s" * 1_000_000, "unknown_side:" + "s" * 20),
        "timestamp": ("2" * 1_000_000, "bad_timestamp"),
    }
    for name, (value, code) in cases.items():
        started = time.perf_counter()
        assert outcome(item(**{name: value})).split(" ", 1)[0] == code
        assert time.perf_counter() - started < 0.5, name
    huge_id = outcome(item(trade_id="7" * 1_000_000))  # a 1 MB id is still an id
    assert isinstance(huge_id, Trade) and len(huge_id.trade_id) == 1_000_000


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# ---- frames -------------------------------------------------------------------------------------


@FAST
@given(FRAMES)
@example("").via("an empty frame")
@example(b"\xff\xfe\x00\x80").via("binary garbage")
@example("\ud800").via("crashed: UnicodeEncodeError (a str frame, as tests pass them)")
@example(trade_frame(item(trade_id="id")).encode().replace(b'"id"', b'"\xffid"')).via("was a Trade, id '\ufffdid'")
@example('{"channel":"trade","type":"update","data":[' + "[" * 10_000 + "]" * 10_000 + "]}")
@example('{"method":' + "[" * 10_000 + "]" * 10_000 + "}")
@example(trade_frame(item(trade_id="²"))).via("crashed: int('²') tracking snapshot repeats")
@example(trade_frame(item(trade_id="1" * 5000))).via("crashed: int() past 4300 digits")
@example(trade_frame(item()).replace('"price": 10749.4', '"price": ' + "9" * 400)).via("crashed: OverflowError")
def test_any_frame_gives_one_outcome_per_item(payload: str | bytes) -> None:
    out = handle(payload)
    frame = decoded(payload)
    if isinstance(frame, dict) and frame.get("channel") == "trade" and "method" not in frame \
            and frame.get("type") in ("snapshot", "update") and isinstance(frame.get("data"), list):
        # exactly one outcome per item, in order, the same as the item parser's
        assert len(out) == len(frame["data"])
        for result, raw in zip(out, frame["data"], strict=True):
            expected = outcome(raw)
            if isinstance(expected, Trade):
                assert isinstance(result, Trade)  # equal in every field but ingest_time (the time it was read)
                assert result._replace(ingest_time=None) == expected._replace(ingest_time=None)
            else:
                assert isinstance(result, Rejected) and result.reason == expected
    elif frame is NOT_UTF8:
        assert [r.code for r in out] == ["invalid_utf8"]
    else:
        assert len(out) <= 1 and all(isinstance(r, Rejected) for r in out)  # control frames: a reason or nothing
        if not isinstance(frame, dict):
            assert [r.code for r in out] in (["invalid_json"], ["not_an_object"])


NOT_UTF8 = object()


def decoded(payload: str | bytes) -> Any:
    """The frame as Python's json reads it (None when it does not: the adapter must reject it then)."""
    try:
        text = (payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload).decode()
    except UnicodeDecodeError:
        return NOT_UTF8
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def test_nesting_at_the_recursion_limit_never_escapes(tmp_path: Path) -> None:
    """Around the interpreter's recursion limit the frame parses but writing its item (or the recording) back
    as JSON, or showing a value in a reason, overflows the stack: that raised RecursionError out of the stream."""
    source = KrakenV2Source(["BTC/USD"], "ws://127.0.0.1:9", record=tmp_path / "rec.jsonl")
    source._recorder = (tmp_path / "rec.jsonl").open("a", encoding="utf-8")  # as stream() opens it
    limit = sys.getrecursionlimit()
    frames = 0
    for depth in range(limit - 120, limit + 5):
        inner = "[" * depth + "]" * depth
        for payload in (f'{{"channel":"trade","type":"update","data":[{inner}]}}', f'{{"method":{inner}}}',
                        trade_frame(item(price=[])).replace("[]", inner)):
            out = handle(payload, source)
            frames += 1
            assert len(out) == 1 and isinstance(out[0], Rejected)
            assert out[0].code.split(":")[0] in ("invalid_json", "bad_type", "unknown_method"), out[0].reason[:60]
    source._recorder.close()
    assert len(list(read_recording(tmp_path / "rec.jsonl"))) == frames  # one line per frame, each readable


def test_a_one_megabyte_field_and_deep_frames_are_handled_quickly() -> None:
    big = trade_frame(item(pad="z" * 1_000_000, trade_id="big"))
    cases = [
        (KrakenV2Source(["BTC/USD"], "ws://127.0.0.1:9"), big, ["frame_too_large"]),  # the default 1 MB cap
        (KrakenV2Source(["BTC/USD"], "ws://127.0.0.1:9", max_frame_bytes=2_000_000), big, [None]),
        (None, trade_frame(item(trade_id="m" * 999_000)), [None]),
        (None, "[" * 10_000, ["invalid_json"]),
        (None, '{"channel":"trade","type":"update","data":[' + "[" * 10_000 + "]" * 10_000 + "]}", ["invalid_json"]),
        (None, '{"a":' * 10_000 + "1" + "}" * 10_000, ["invalid_json"]),
        (None, '"' + "\\u0000" * 150_000 + '"', ["not_an_object"]),
    ]
    for source, payload, codes in cases:
        started = time.perf_counter()
        out = handle(payload, source)
        elapsed = time.perf_counter() - started
        assert [r.code if isinstance(r, Rejected) else None for r in out] == codes
        assert elapsed < 1.0, (payload[:40], elapsed)


# ---- through the producer, on the real broker: every reject in the DLQ with its reason -------------


@hypothesis_settings(max_examples=3, derandomize=True, deadline=None, database=None, phases=[Phase.generate],
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                            HealthCheck.large_base_example, HealthCheck.data_too_large])
@given(frames=st.lists(FRAMES, min_size=20, max_size=40))
def test_fuzzed_frames_reach_kafka_and_every_reject_the_dlq(frames: list[str | bytes], settings: Settings,
                                                           kafka: LocalKafka) -> None:
    """Crafted and fuzzed frames among the bundled hour, over a real socket, through ProducerThread: every reject
    is in <topic>.dlq, in order, with its reason and raw text, and the counters add up (derandomized: the same
    frames in CI every time; no shrinking, each example is a broker run)."""
    crafted = [trade_frame(item(side="\ud800")),  # crashed TradeProducer.reject: the reason (DLQ key) was not UTF-8
               trade_frame(item(trade_id="²"), item(price=10**400), item(symbol="ß/usd")), "", b"\xff\xfe\x00",
               trade_frame(item(trade_id="id")).encode().replace(b'"id"', b'"\xffid"'),  # was a trade, id "\ufffdid"
               '{"channel":"trade","type":"update","data":[' + "[" * 10_000 + "]" * 10_000 + "]}"]
    # the wire carries bytes: a str with lone surrogates goes as its (invalid) UTF-8, in a binary frame
    payloads = [p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass") for p in crafted + frames]
    oracle = KrakenV2Source(["BTC/USD"], "ws://127.0.0.1:9")
    expected = [result for p in payloads for result in handle(p, oracle)]
    rejects = [r for r in expected if isinstance(r, Rejected)]
    trades = [t for t in expected if isinstance(t, Trade)]
    run = settings.with_(topic=f"{settings.topic}.{uuid.uuid4().hex[:6]}")  # a new topic per example
    with ReplayServer(raw_frames=dict(enumerate(payloads)), close_when_done=True) as server:  # type: ignore[arg-type]
        source = KrakenV2Source(["BTC/USD"], server.url, end_on_close=True)
        thread = ProducerThread(source, TradeProducer.from_settings(run), name="replay")
        run_to_end(thread)
    status = thread.status()
    assert status.error is None and status.delivery_errors == 0 and status.in_flight == 0
    assert status.rejected == status.dlq_sent == status.dlq_delivered == len(rejects)
    assert status.sent == status.delivered == SAMPLE_PRINTS + len(trades)
    assert status.received == status.rejected + status.sent

    dlq = read_topic(kafka.bootstrap, run.dlq_topic)
    assert [r.value["reason"] for r in dlq] == [r.reason for r in rejects]
    assert [r.value["raw"] for r in dlq] == [r.raw for r in rejects]
    assert [r.key for r in dlq] == [r.code.encode("utf-8", "backslashreplace").decode() for r in rejects]
    assert all(r.headers["reason"] == r.key and r.headers["source"] == "kraken" for r in dlq)
    assert dlq[0].value["reason"] == "unknown_side:\ud800"
    assert [r.value["reason"].split(" ")[0] for r in dlq[1:7]] == [
        "non_finite:price", "bad_symbol", "invalid_json", "invalid_utf8", "invalid_utf8", "invalid_json"]

    def fields(message: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(message[k] for k in ("symbol", "trade_id", "price", "qty", "side", "event_time"))

    sent = Counter(fields(r.value) for r in read_topic(kafka.bootstrap, run.topic))
    injected = Counter(fields(json.loads(t.to_json())) for t in trades)
    assert sent.total() == SAMPLE_PRINTS + len(trades) and not injected - sent  # every valid item is in Kafka


# ---- random bytes straight to the trades topic, through Bronze and Silver -------------------------

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


@dataclass
class Message:
    """One Kafka message of the end-to-end run and what Silver must make of it."""

    value: bytes | None
    partition: int
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None
    trade: tuple[str, str, str] | None = None  # (exchange, symbol, trade_id) of a message built valid
    price: float | None = None
    reason: str | None = None  # the quarantine reason it must get (a prefix); None: not predicted
    offset: int = -1


def crafted_messages() -> list[Message]:
    """Inputs with a known quarantine reason."""
    def bad(reason: str, **over: Any) -> Message:
        return Message(trade_json("bad", 10.0, 1.0, T0, **over).encode(), 0, reason=reason)

    def raw(reason: str, value: bytes | None) -> Message:
        return Message(value, 1, reason=reason)

    valid = trade_json("edge", 10.0, 1.0, T0)
    return [
        raw("empty_value", None), raw("empty_value", b""), raw("empty_value", b"   "),
        raw("invalid_json", b"not json"), raw("invalid_json", b"{"), raw("invalid_utf8", b"\xff\xfe\x00garbage"),
        raw("invalid_utf8", valid.replace('"edge"', '"ed\udcffge"').encode("utf-8", "surrogatepass")),
        raw("not_a_json_object", b"[1, 2]"), raw("not_a_json_object", b"42"), raw("not_a_json_object", b"null"),
        raw("not_a_json_object", b'"a string"'),
        raw("invalid_json", b"[" * 10_000), raw("invalid_json", ("[" * 10_000 + "]" * 10_000).encode()),
        raw("invalid_json", ('{"a":' * 5_000 + "1" + "}" * 5_000).encode()),
        raw("invalid_json", valid.replace('"price": 10.0', '"price": 1' + "0" * 1200).encode()),  # parser's limit
        bad("missing_field:price", price=...), bad("missing_field:trade_id", trade_id=" "),
        bad("non_finite:price", price="NaN"), bad("non_finite:price", price="Infinity"),
        bad("non_finite:price", price="-inf"), bad("bad_type:price", price=True),
        Message(valid.replace('"price": 10.0', '"price": 1e400').encode(), 0, reason="non_finite:price"),
        Message(valid.replace('"qty": 1.0', '"qty": 1' + "0" * 400).encode(), 0, reason="non_finite:qty"),
        bad("non_positive:price", price=-1.0), bad("non_positive:qty", qty=0.0), bad("price_too_large", price=2e12),
        bad("bad_symbol:BTC\u200b/USD", symbol="BTC\u200b/USD"),
        bad("bad_symbol:\u202eBTC/USD", symbol="\u202eBTC/USD"),
        bad("bad_symbol:btc/usd\n", symbol="btc/usd\n"), bad("bad_symbol:ß/usd", symbol="ß/usd"),
        bad("bad_symbol:BTC²/USD", symbol="BTC²/USD"), bad("bad_symbol:" + "A" * 17, symbol="A" * 17 + "/USD"),
        bad("unknown_side:hold", side="hold"), bad("unknown_side:buy\u200b", side="buy\u200b"),
        bad("bad_timestamp:yesterday", event_time="yesterday"),
    ]


def mix(rng: random.Random) -> list[Message]:
    """Valid trades (some resent: duplicates), adversarial JSON, random bytes and the crafted inputs, shuffled."""
    messages: list[Message] = []
    for n in range(150):
        symbol, price = rng.choice(["BTC/USD", "ETH/USD", "sol/eur"]), round(rng.uniform(0.01, 1e5), 2)
        pad = {"pad": "p" * 1_000_000} if n == 7 else {}  # a 1 MB field in a valid trade
        side = rng.choice(["buy", "sell"])
        value = trade_json(f"v{n}", price, rng.uniform(1e-8, 10), T0 + timedelta(seconds=n), side, symbol=symbol, **pad)
        messages.append(Message(value.encode(), rng.randrange(2), rng.choice([None, symbol.encode()]),
                                trade=("kraken", symbol.upper(), f"v{n}"), price=price))
    for _ in range(40):  # resent with another price: the earliest (partition, offset) must win
        first = rng.choice(messages[:150])
        assert first.trade is not None and first.value is not None
        value = first.value.replace(b'"price": ', b'"price": 7').replace(b'"pad": "', b'"pad": "q')
        messages.append(Message(value, rng.randrange(2), trade=first.trade, price=float(json.loads(value)["price"])))
    for n in range(50):  # a valid trade with fields spoiled, dropped or added (validity not predicted)
        fields = json.loads(trade_json(f"adv{n}", 10.0, 1.0, T0))
        for name in rng.sample(sorted(fields), rng.randint(1, 3)):
            roll = rng.random()
            if name == "trade_id":  # spoiled or still unique: two adversarial trades must not share a key
                fields[name] = rng.choice([None, "", " ", f"adv{n}\u200b", f"\ud800{n}", f"ADV{n}" * 500])
            elif roll < 0.2:
                del fields[name]
            else:
                fields[name] = rng.choice(NASTY_TEXT) if roll < 0.6 else rng.choice(
                    [None, True, 0, -1, 1e308, 2**64, [], {}, [1, "x"], {"a": None}, 1.5, "", "x" * 3000])
        text = json.dumps(fields, ensure_ascii=rng.random() < 0.5)
        messages.append(Message(text.encode("utf-8", "surrogatepass"), rng.randrange(2)))
    for n in range(60):  # random bytes, cut trade JSON, flipped bytes (mostly invalid UTF-8)
        base = bytearray(trade_json(f"rnd{n}", 10.0, 1.0, T0).encode())
        if n % 3 == 0:
            value = rng.randbytes(rng.randint(0, 200))
        elif n % 3 == 1:
            value = bytes(base[: rng.randrange(len(base))])
        else:
            for _ in range(rng.randint(1, 3)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            value = bytes(base)
        messages.append(Message(value, rng.randrange(2), key=rng.choice([None, rng.randbytes(4)]),
                                headers=[("h", rng.randbytes(3)), ("", b"")]))
    messages += crafted_messages()
    for m in messages:  # whatever else it is, a value that is not UTF-8 must be quarantined as such
        if m.value is not None and not _utf8(m.value):
            m.reason = "invalid_utf8"
    rng.shuffle(messages)
    return messages


def produce(bootstrap: str, topic: str, messages: list[Message]) -> None:
    """Each message to its partition, in order; sets its offset (per-partition order is kept: idempotence)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                         "message.max.bytes": 1_100_000})
    next_offset = [0, 0]
    for m in messages:
        producer.produce(topic, value=m.value, key=m.key, partition=m.partition, headers=m.headers)
        m.offset, next_offset[m.partition] = next_offset[m.partition], next_offset[m.partition] + 1
    assert producer.flush(60) == 0


def rows(path: Path) -> list[dict[str, Any]]:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


@pytest.mark.slow
def test_random_bytes_through_bronze_and_silver_reconcile(spark, settings: Settings, kafka: LocalKafka) -> None:
    from lakehouse_utils.layers.bronze import start_bronze
    from lakehouse_utils.layers.silver import start_silver

    messages = mix(random.Random(20261126))
    ensure_topic(kafka.bootstrap, settings.topic, partitions=2)
    produce(kafka.bootstrap, settings.topic, messages)
    counts = Counter(m.partition for m in messages)
    assert end_offsets(kafka.bootstrap, settings.topic) == {0: counts[0], 1: counts[1]}
    for start in (start_bronze, start_silver):  # each layer until drained
        query = start(spark, settings, trigger="available-now")
        assert query.awaitTermination(300) and query.exception() is None
    at = {(m.partition, m.offset): m for m in messages}

    # Bronze: every message once, offsets contiguous per partition, the value as sent
    bronze = rows(settings.bronze)
    assert len(bronze) == len(messages)
    for p in (0, 1):
        assert sorted(r["offset"] for r in bronze if r["partition"] == p) == list(range(counts[p]))
    for r in bronze:  # (invalid UTF-8 comes out with U+FFFD in place: a Parquet string must be UTF-8)
        sent = at[(r["partition"], r["offset"])].value
        assert r["value_raw"] == (None if sent is None else sent.decode("utf-8", "replace"))

    # Silver: one row per key, each a Bronze row; the earliest (partition, offset) of a key wins
    silver, quarantine = rows(settings.silver), rows(settings.quarantine)
    keys = [(r["exchange"], r["symbol"], r["trade_id"]) for r in silver]
    assert len(keys) == len(set(keys))
    by_key = {k: (r["partition"], r["offset"]) for k, r in zip(keys, silver, strict=True)}
    built_valid: dict[tuple[str, str, str], list[Message]] = {}
    for m in messages:
        if m.trade is not None:
            built_valid.setdefault(m.trade, []).append(m)
    for key, copies in built_valid.items():
        winner = min(copies, key=lambda m: (m.partition, m.offset))
        assert by_key[key] == (winner.partition, winner.offset), key
        assert next(r for r in silver if r["trade_id"] == key[2])["price"] == winner.price
    for r in silver:  # whatever got in is a sound trade
        assert 0 < r["price"] <= MAX_PRICE and math.isfinite(r["price"]) and 0 < r["qty"] and math.isfinite(r["qty"])
        assert r["side"] in SIDES and re.fullmatch(SYMBOL_RE, r["symbol"], re.ASCII) and r["event_time"] is not None

    # quarantine: every other row but the duplicates, once, with a reason; the crafted ones with theirs
    in_silver = set(by_key.values())
    quarantined = {(r["partition"], r["offset"]): r["reason"] for r in quarantine}
    assert len(quarantined) == len(quarantine) and not in_silver & set(quarantined)
    assert all(reason and reason.strip() for reason in quarantined.values())
    duplicates = {(m.partition, m.offset) for copies in built_valid.values() for m in copies} - in_silver
    assert set(at) - in_silver - set(quarantined) == duplicates  # nothing silently dropped
    assert len(silver) + len(duplicates) + len(quarantine) == len(messages)
    assert len(duplicates) == sum(len(c) - 1 for c in built_valid.values()) > 0
    crafted = {(m.partition, m.offset): m.reason for m in messages if m.reason is not None}
    wrong = {pos: (quarantined.get(pos), want) for pos, want in crafted.items()
             if not (quarantined.get(pos) or "").startswith(want)}
    assert not wrong
    print(f"\n{len(messages)} messages: {len(silver)} in Silver, {len(duplicates)} duplicates, "
          f"{len(quarantine)} quarantined: {Counter(r.split(':')[0] for r in quarantined.values())}")


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
