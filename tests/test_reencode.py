"""The bundled hour re-encoded in each venue's wire format keeps every trade (price, qty, time, taker side), with the
venue's ids and symbol names; and ``lakehouse ingest`` replays it through several venues at once."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.topics import end_offsets
from lakehouse_utils.ops import ingest
from lakehouse_utils.ops.cli import build_parser, settings_from
from lakehouse_utils.sources.recording import SAMPLE_RECORDING, read_recording
from lakehouse_utils.sources.reencode import (
    BINANCE_ID_BASE,
    COINBASE_ID_BASE,
    decimal_text,
    reencode,
    write_venue_recording,
)
from tests.test_producer import read_topic

OPPOSITE = {"buy": "sell", "sell": "buy"}


def hour() -> list[dict]:
    return [item for row in read_recording(SAMPLE_RECORDING) if row["frame"]["channel"] == "trade"
            for item in row["frame"]["data"]]


def prints(venue: str, rows: list[dict]) -> list[tuple]:
    """(id, price, qty, time, taker side, name) of every trade of a venue's recording, read by hand here."""
    out = []
    for row in rows:
        f = row["frame"]
        if venue == "coinbase":
            out.append((f["trade_id"], float(f["price"]), float(f["size"]), datetime.fromisoformat(f["time"]),
                        OPPOSITE[f["side"]], f["product_id"]))  # matches.side: the maker's
        elif venue == "coinbase-advanced":
            out += [(int(t["trade_id"]), float(t["price"]), float(t["size"]), datetime.fromisoformat(t["time"]),
                     OPPOSITE[t["side"].lower()], t["product_id"]) for e in f["events"] for t in e["trades"]]
        else:
            d = f["data"]
            out.append((d["t"], float(d["p"]), float(d["q"]),
                        datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=d["T"]),
                        "sell" if d["m"] else "buy", d["s"]))
    return out


@pytest.mark.parametrize(("venue", "base", "name"), [("coinbase", COINBASE_ID_BASE, "BTC-USD"),
                                                     ("coinbase-advanced", COINBASE_ID_BASE, "BTC-USD"),
                                                     ("binance", BINANCE_ID_BASE, "BTCUSDT")])
def test_each_venue_keeps_every_trade_of_the_hour(venue: str, base: int, name: str, tmp_path: Path) -> None:
    path = write_venue_recording(venue, tmp_path / f"{venue}.jsonl.gz")
    rows = list(read_recording(path))
    assert rows == reencode(venue)
    want = [(base + i["trade_id"], i["price"], i["qty"], datetime.fromisoformat(i["timestamp"]), i["side"], name)
            for i in hour()]
    assert prints(venue, rows) == want and len(want) == 2672
    assert [r["recv_ms"] for r in rows][:3] == [1561939203207, 1561939205259, 1561939205465]


def test_wire_details() -> None:
    match = reencode("coinbase")[0]["frame"]
    assert match["type"] == "match" and match["price"] == "10749.40" and match["size"] == "0.00400000"
    assert isinstance(match["trade_id"], int) and match["sequence"] < reencode("coinbase")[1]["frame"]["sequence"]
    event = reencode("binance")[0]["frame"]
    assert event["stream"] == "btcusdt@trade" and event["data"]["p"] == "10749.40000000"
    trade = reencode("coinbase-advanced")[0]["frame"]["events"][0]["trades"][0]
    assert trade["side"] in ("BUY", "SELL") and isinstance(trade["trade_id"], str)
    assert reencode("kraken") == list(read_recording(SAMPLE_RECORDING))


@pytest.mark.parametrize("value", [10749.4, 0.004, 1e-08, 5e-07, 123456789.123, 0.1 + 0.2, 11041.8])
def test_decimal_text_reads_back_to_the_same_float(value: float) -> None:
    text = decimal_text(value)
    assert float(text) == value and "e" not in text.lower() and len(text.split(".")[1]) >= 8


def test_ingest_replays_through_several_venues_at_once(kafka: LocalKafka, topic: str) -> None:
    args = build_parser().parse_args(["ingest", "--source", "replay", "--venues", "kraken,coinbase,binance",
                                      "--bootstrap", kafka.bootstrap, "--topic", topic])
    settings: Settings = settings_from(args)
    out = io.StringIO()
    assert ingest.run(args, settings, out) == 0, out.getvalue()
    text = out.getvalue()
    assert "ingest replay:kraken BTC/USD, replay:coinbase BTC/USD, replay:binance BTC/USDT" in text
    assert "  sent                 8,016" in text and "  missing ids              0  (no trade id skipped)" in text
    for name in ("replay:kraken", "replay:coinbase", "replay:binance"):
        assert f"  {name:<17} sent 2,672, delivered 2,672" in text
    assert end_offsets(kafka.bootstrap, topic) == {0: 3 * 2672}
    records = read_topic(kafka.bootstrap, topic)
    by_key = {key: [r for r in records if r.key == key] for key in {r.key for r in records}}
    assert sorted(by_key) == ["binance|BTC/USDT", "coinbase|BTC/USD", "kraken|BTC/USD"]
    names = {"kraken|BTC/USD": "BTC/USD", "coinbase|BTC/USD": "BTC-USD", "binance|BTC/USDT": "BTCUSDT"}
    for key, rows in by_key.items():  # each venue's trades in order, with the venue's own names
        ids = [int(r.value["trade_id"]) for r in rows]
        assert ids == sorted(ids) and len(rows) == 2672, key
        assert {r.value["venue_symbol"] for r in rows} == {names[key]}
        assert {r.headers["source"] for r in rows} == {"replay:" + key.split("|")[0]}


@pytest.mark.parametrize(("argv", "message"), [
    (["--source", "replay,kraken"], "only live venues run together"),
    (["--source", "kraken", "--venues", "binance"], "--venues picks the venues a replay goes through"),
    (["--venues", "kraken,binance", "--file", "x.jsonl"], "--file is the recording of one venue"),
    (["--source", "replay", "--venues", "bitstamp"], "unknown venue 'bitstamp'"),
])
def test_bad_source_choices_are_one_line(argv: list[str], message: str, kafka: LocalKafka, topic: str) -> None:
    args = build_parser().parse_args(["ingest", *argv, "--bootstrap", kafka.bootstrap, "--topic", topic])
    out = io.StringIO()
    assert ingest.run(args, settings_from(args), out) == 2
    assert message in out.getvalue() and "Traceback" not in out.getvalue()


def test_unknown_source_kind_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "--source", "bitstamp"])
    assert "unknown source 'bitstamp'" in capsys.readouterr().err
    args = build_parser().parse_args(["demo", "--source", "kraken, binance"])
    assert args.source == "kraken,binance" and args.venues is None


def test_the_producer_panel_runs_several_venues(settings: Settings, kafka: LocalKafka) -> None:
    from lakehouse_utils.kafka.group import ProducerGroup
    from lakehouse_utils.views.widgets import ProducerPanel

    panel = ProducerPanel(settings, default_source="replay", venues="coinbase, binance", pairs=[])
    group = panel.start()
    assert isinstance(group, ProducerGroup) and group.join(60)
    text = panel.stop()
    assert text.startswith("[finished] replay:coinbase+replay:binance: received=5344 sent=5344 delivered=5344")
    assert "| replay:coinbase 2672 | replay:binance 2672" in text
    assert end_offsets(kafka.bootstrap, settings.topic) == {0: 2 * 2672}
    with pytest.raises(ValueError, match="only live venues run together"):
        ProducerPanel(settings, default_source="replay,kraken")
    panel.close()
