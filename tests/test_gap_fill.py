"""Gap fill (issue 21, part 1): a source that misses trades (its WebSocket replay server drops the connection while
the recording goes on) fetches the skipped ids from the venue's REST replay server and sends them to the same
topic with the header ``source=rest``; ids the REST server cannot serve are reported (a line, the counts, the
ledger ``lakehouse check`` lists), never hidden. Real broker, real WebSocket and HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from deltalake import DeltaTable

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.gap_fill import GapFiller
from lakehouse_utils.kafka.group import make_producers
from lakehouse_utils.kafka.producer import ProducerThread, TradeProducer
from lakehouse_utils.kafka.rest_backfill import parse_when, run_backfill
from lakehouse_utils.kafka.source_kinds import make_source
from lakehouse_utils.kafka.topics import last_messages
from lakehouse_utils.layers.gold_tables import bars_path
from lakehouse_utils.ops.check import check
from lakehouse_utils.ops.demo import run_demo
from lakehouse_utils.sources.backfill import rest_client, rest_server
from lakehouse_utils.sources.gaps import Gap, read_unfilled
from lakehouse_utils.sources.reencode import BINANCE_ID_BASE, COINBASE_ID_BASE
from lakehouse_utils.sources.rest_server import recorded_trades
from tests.test_venues_demo import FRAMES, expected_bars
from tests.test_venues_demo import recorded_trades as venue_trades

PAIR = {"kraken": "BTC/USD", "coinbase": "BTC/USD", "binance": "BTC/USDT"}
BASE = {"kraken": 0, "coinbase": COINBASE_ID_BASE, "binance": BINANCE_ID_BASE}
# 336.5 s into the bundled hour, the busiest minute: 299 trades happen in the 60 s the client is away
DROP = (336.5, 60.0)
AWAY = 299
HOUR_IDS = 2671


def topic_by_source(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """The topic's trades, by their ``source`` header."""
    out: dict[str, list[dict[str, Any]]] = {}
    for m in last_messages(settings, settings.topic, 10 * HOUR_IDS):
        out.setdefault(m.headers["source"], []).append(m.json())
    return out


def ids(trades: list[dict[str, Any]], venue: str) -> set[int]:
    return {int(t["trade_id"]) - BASE[venue] for t in trades}


@pytest.mark.parametrize("venue", ["kraken", "binance"])
def test_a_dropped_connection_is_filled_over_rest_with_the_header_source_rest(settings: Settings, venue: str) -> None:
    thread = make_producers(settings, "replay", None, venues=venue, drop=DROP)
    assert isinstance(thread, ProducerThread) and thread.filler is not None
    thread.start()
    assert thread.join(120)
    status = thread.status()
    assert status.ok and status.end_reason == "source ended", status.line()
    by_source = topic_by_source(settings)
    live, rest = ids(by_source[thread.name], venue), ids(by_source["rest"], venue)
    (first, last), = status.gaps[f"{venue} {PAIR[venue]}"]
    # Kraken re-sends the last 50 trades on subscribe: the gap is what the client missed less those
    missed = AWAY - (50 if venue == "kraken" else 0)
    assert last - first + 1 == missed > 50
    assert rest == set(range(first - BASE[venue], last - BASE[venue] + 1))  # the gap, exactly, nothing else
    assert live | rest == set(range(1, HOUR_IDS + 1)) and not live & rest
    assert (status.gaps_found, status.ids_filled, status.ids_unfilled, status.unfilled) == (1, missed, 0, {})
    assert f"gaps=1 filled={missed} unfilled=0" in status.line()
    # the REST trades are the recording's: same values as the venue's WebSocket adapter makes of them
    want = {int(t.trade_id): t for t in recorded_trades(venue)}
    for t in by_source["rest"]:
        w = want[int(t["trade_id"])]
        assert (t["price"], t["qty"], t["side"], t["symbol"], t["exchange"]) == \
            (w.price, w.qty, w.side, w.symbol, venue)
    assert not settings.unfilled_gaps.exists()


def test_a_gap_the_rest_server_cannot_serve_is_reported_counted_and_listed_by_check(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    venue = "binance"
    lacking = (BASE[venue] + 500, BASE[venue] + 519)  # inside the gap (427..725): the venue's history lacks them
    source, stop_ws = make_source("replay", None, venue=venue, drop=DROP)
    with rest_server(venue, missing_ids=lacking) as server:
        filler = GapFiller(rest_client(venue, server.url, min_interval_s=0.0), TradeProducer.from_settings(settings),
                           ledger=settings.unfilled_gaps)
        thread = ProducerThread(source, TradeProducer.from_settings(settings), name="replay:binance",
                                cleanup=stop_ws, filler=filler)
        with caplog.at_level(logging.ERROR, logger="lakehouse_utils.kafka.gap_fill"):
            thread.start()
            assert thread.join(120)
    status = thread.status()
    key = f"{venue} {PAIR[venue]}"
    assert (status.gaps_found, status.ids_filled, status.ids_unfilled) == (1, AWAY - 20, 20)
    assert status.unfilled == {key: [lacking]}
    assert "unfilled=20" in status.line()
    said = [r.getMessage() for r in caplog.records if "GAP NOT FILLED" in r.getMessage()]
    assert said == [f"GAP NOT FILLED: {key} ids {lacking[0]}..{lacking[1]} (20 of the {AWAY} missed) cannot be "
                    "fetched over REST: the venue's history lacks them"]
    rest = ids(topic_by_source(settings)["rest"], venue)
    assert len(rest) == AWAY - 20 and not rest & set(range(500, 520))
    ledger = read_unfilled(settings.unfilled_gaps)
    assert [(g["exchange"], g["symbol"], g["first"], g["last"], g["by"]) for g in ledger] == \
        [(venue, PAIR[venue], *lacking, "gap fill")]
    report = check(settings)  # no tables yet: the unfilled ids are listed all the same
    assert report.facts["unfilled_gaps"] == [{**ledger[0], "ids": 20}]
    assert f"unfilled   {key} {lacking[0]}..{lacking[1]} (20 ids" in report.summary()


def test_gap_fill_off_sends_nothing_over_rest(settings: Settings) -> None:
    off = settings.with_(gap_fill=False)
    thread = make_producers(off, "replay", None, venues="coinbase", drop=DROP)
    assert isinstance(thread, ProducerThread) and thread.filler is None
    thread.start()
    assert thread.join(120)
    status = thread.status()
    # Coinbase's last_match on subscribe re-sends the newest trade: the one missed id it brings back
    assert status.missing_ids == AWAY - 1 and status.gaps_found == 0
    assert set(topic_by_source(off)) == {"replay:coinbase"}
    assert not Path(off.unfilled_gaps).exists()


@pytest.mark.slow
def test_three_venues_each_missing_a_minute_end_with_gold_equal_to_the_bars_of_the_whole_recordings(
        kafka: LocalKafka, tmp_path: Path) -> None:
    """``lakehouse demo --venues kraken,coinbase,binance --drop 336.5:60``: each venue's WebSocket replay drops the
    connection for the busiest minute of the hour (299 trades; Kraken's snapshot brings back 50, Coinbase's
    last_match 1); gap fill fetches the rest over REST and Gold equals the bars of each whole recording."""
    topic = f"fill.{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path / "data", bootstrap=kafka.bootstrap, topic=topic, spark_ui=False,
                        alerts_topic=f"{topic}.alerts")
    result = run_demo(settings, venues="kraken,coinbase,binance", start_broker=False, until_drained=True, drop=DROP)
    assert result.drained and result.counts.late == 0 and result.counts.silver == 3 * HOUR_IDS
    missed = {"kraken": AWAY - 50, "coinbase": AWAY - 1, "binance": AWAY}
    parts = {p["source"].split(":")[1]: p for p in result.producer["parts"]}
    for venue, n in missed.items():
        p = parts[venue]
        assert (p["missing_ids"], p["gaps_found"], p["ids_filled"], p["ids_unfilled"]) == (n, 1, n, 0), venue
    assert result.producer["ids_filled"] == sum(missed.values())
    assert "| producer ids_filled | 846 |" in (settings.reports / "summary.md").read_text()
    for tf, freq in FRAMES.items():
        gold = DeltaTable(str(bars_path(settings, tf))).to_pandas()
        gold["bar_start"] = pd.to_datetime(gold["bar_start"], utc=True)
        for venue in missed:
            want = expected_bars(venue_trades(venue, Path(result.recordings[venue])), freq)
            got = gold[gold["exchange"] == venue].set_index("bar_start").sort_index()
            assert list(got.index) == list(want.index), (venue, tf)
            for col in ("open", "high", "low", "close", "trades"):
                assert got[col].tolist() == want[col].tolist(), (venue, tf, col)
            for col in ("volume", "buy_volume", "sell_volume"):
                assert got[col].to_numpy() == pytest.approx(want[col].to_numpy(), rel=1e-9), (venue, tf, col)
    verdict = check(settings)
    assert verdict.ok, verdict.summary()
    assert {k: g["missing"] for k, g in verdict.facts["trade_id_gaps"].items()} == {
        "binance BTC/USDT": 0, "coinbase BTC/USD": 0, "kraken BTC/USD": 0}
    assert verdict.facts["unfilled_gaps"] == []


# ---- lakehouse backfill's engine, in process (the CLI and kill -9: test_backfill_cli.py) -------------------------


def test_parse_when_reads_durations_back_from_now_and_iso_times() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert parse_when("6h", now) == datetime(2026, 1, 2, 6, 0, tzinfo=UTC)
    assert parse_when("90m", now) == parse_when("1.5h", now) == datetime(2026, 1, 2, 10, 30, tzinfo=UTC)
    assert parse_when("2d", now) == datetime(2025, 12, 31, 12, 0, tzinfo=UTC)
    assert parse_when("2019-07-01T00:10:00Z") == parse_when("2019-07-01T00:10:00") == \
        datetime(2019, 7, 1, 0, 10, tzinfo=UTC)
    assert parse_when("2019-07-01T02:10:00+02:00") == datetime(2019, 7, 1, 0, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="6h, 30m, 2d"):
        parse_when("yesterday")


def test_a_relative_backfill_run_again_fetches_only_what_came_after(settings: Settings) -> None:
    fast = settings.with_(rest_min_interval_s=0.0)
    since = f"{(datetime.now(UTC) - datetime(2019, 6, 30, tzinfo=UTC)).days}d"  # the day before the bundled hour
    with rest_server("kraken", serve_until=1000) as server:  # the venue's history ends at id 1000 (for now)
        first = run_backfill(fast, "kraken", "BTC/USD", since, url=server.url)
    assert (first.done, first.sent, first.total, first.unfilled) == (True, 1000, 1000, [])
    with rest_server("kraken") as server:  # later: the whole hour
        second = run_backfill(fast, "kraken", "BTC/USD", since, url=server.url)
        third = run_backfill(fast, "kraken", "BTC/USD", since, url=server.url)
    assert (second.done, second.resumed, second.sent) == (True, False, HOUR_IDS - 1000)
    assert (third.done, third.sent) == (True, 0)
    sent = [int(m.json()["trade_id"]) for m in last_messages(settings, settings.topic, 2 * HOUR_IDS)]
    assert sorted(sent) == list(range(1, HOUR_IDS + 1))  # each id once over the three runs


def test_a_backfill_reports_the_ids_the_venue_lacks(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    lacking = (BASE["coinbase"] + 1100, BASE["coinbase"] + 1109)
    fast = settings.with_(rest_min_interval_s=0.0, rest_page_size=300)
    with rest_server("coinbase", missing_ids=lacking) as server, caplog.at_level(logging.ERROR):
        result = run_backfill(fast, "coinbase", "BTC/USD", "2019-07-01T00:00:00Z", "2019-07-01T01:00:00Z",
                              url=server.url)
    assert (result.done, result.sent, result.unfilled) == (True, HOUR_IDS - 10, [lacking])
    assert "10 ids NOT filled" in result.line()
    assert any("BACKFILL GAP: coinbase BTC/USD ids" in r.getMessage() for r in caplog.records)
    (entry,) = read_unfilled(fast.unfilled_gaps)
    assert (entry["first"], entry["last"], entry["by"]) == (*lacking, "backfill")
    assert "(10 ids, not filled by backfill at" in check(fast).summary()


def test_a_fill_slower_than_max_hold_s_lets_the_live_stream_go_on_and_still_fills(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    hour = {int(t.trade_id): t for t in recorded_trades("kraken")}
    gap = Gap("kraken", "BTC/USD", 101, 150, hour[100].event_time, hour[151].event_time)
    stop = threading.Event()
    with rest_server("kraken", delay_s=2.0) as server:  # every answer takes 2 s at least
        filler = GapFiller(rest_client("kraken", server.url, min_interval_s=0.0),
                           TradeProducer.from_settings(settings), hold_s=60.0, max_hold_s=0.3).start(stop)
        filler.submit(gap)
        assert filler.hold(hour[151].event_time, stop)  # within hold_s of the gap: no wait
        with caplog.at_level(logging.WARNING, logger="lakehouse_utils.kafka.gap_fill"):
            assert filler.hold(hour[100].event_time + timedelta(minutes=5), stop)  # waited max_hold_s, went on
        assert filler._open == [gap]  # the fill goes on (its first answer is 2 s away)
        filler.close()
    assert any("still running after 0 s: the live stream goes on" in r.getMessage() for r in caplog.records)
    assert (filler.gaps_found, filler.ids_filled, filler.ids_unfilled) == (1, 50, 0)
    assert sorted(int(m.json()["trade_id"]) for m in last_messages(settings, settings.topic, 100)) == \
        list(range(101, 151))
