"""REST backfill (issue 21, the REST side): each venue's REST replay server and client, over real HTTP on 127.0.0.1.

The servers serve the bundled hour re-encoded per venue; the trades a client fetches are compared with what the
venue's WebSocket adapter makes of the same hour through its WebSocket replay server. Waits are shortened
(``min_interval_s``, ``backoff_s``); the one real wait is a 1 s ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from lakehouse_utils.sources.backfill import fetch_gap, fetch_history, rest_client, rest_server
from lakehouse_utils.sources.reencode import BINANCE_ID_BASE, COINBASE_ID_BASE
from lakehouse_utils.sources.rest import BackfillProgress, RestBanned, RestClient, RestCursor
from lakehouse_utils.sources.rest_binance import BinanceRestServer
from lakehouse_utils.sources.rest_binance import parse_row as binance_row
from lakehouse_utils.sources.rest_kraken import KrakenRest, KrakenRestServer
from lakehouse_utils.sources.rest_kraken import parse_row as kraken_row
from lakehouse_utils.sources.rest_server import EPOCH, recorded_trades, time_ns
from lakehouse_utils.sources.trades import Trade
from lakehouse_utils.sources.venues import venue as ws_venue
from tests.venue_fixtures import collect, fixture, trades_of

VENUES = ["kraken", "coinbase", "binance"]
PAIR = {"kraken": "BTC/USD", "coinbase": "BTC/USD", "binance": "BTC/USDT"}
BASE = {"kraken": 0, "coinbase": COINBASE_ID_BASE, "binance": BINANCE_ID_BASE}
FAST = {"min_interval_s": 0.0, "limit": 100, "backoff_s": 0.01, "max_retries": 3}
FIXTURES = Path(__file__).parent / "fixtures" / "venues"


def client(venue: str, url: str, **settings: Any) -> RestClient:
    return rest_client(venue, url, **{**FAST, **settings})


def same(t: Trade) -> Trade:
    """The trade less its ingest time (the one field a fetch and a stream cannot share)."""
    return t._replace(ingest_time=EPOCH)


def ids(trades: list[Trade]) -> list[int]:
    return [int(t.trade_id) for t in trades]


@cache
def ws_trades(venue: str) -> dict[int, Trade]:
    """The bundled hour as the venue's WebSocket adapter streams it from its WebSocket replay server, by id."""
    v = ws_venue(venue)
    with v.replay(None, "max", close_when_done=True) as server:
        items = collect(v.source([PAIR[venue]], server.url), timeout=20, done=server.finished)
    return {int(t.trade_id): t for t in trades_of(items)}


@cache
def served(venue: str) -> list[Trade]:
    """The hour's trades as the REST servers hold them: one per id, in id order."""
    return list({int(t.trade_id): t for t in sorted(recorded_trades(venue), key=lambda t: int(t.trade_id))}.values())


# ---- the trades themselves ---------------------------------------------------------------------------------


@pytest.mark.parametrize("venue", VENUES)
def test_a_gap_fetched_over_rest_equals_the_ws_replay_of_the_same_ids(venue: str) -> None:
    first, last = BASE[venue] + 1201, BASE[venue] + 1500
    with rest_server(venue) as server:
        trades, report = fetch_gap(client(venue, server.url), PAIR[venue], first, last)
    ws = ws_trades(venue)
    assert len(ws) == 2671
    assert ids(trades) == list(range(first, last + 1))
    assert [same(t) for t in trades] == [same(ws[i]) for i in range(first, last + 1)]
    t = trades[0]
    assert (t.exchange, t.symbol, t.side in ("buy", "sell"), t.event_time.tzinfo) == (venue, PAIR[venue], True, UTC)
    assert (report.fetched, report.first_id, report.last_id, report.unfilled, report.error) == \
        (300, first, last, [], None)
    assert report.complete and report.pages >= 3  # 100 rows a page
    sides = {t.side for t in trades}
    assert sides == {"buy", "sell"}  # both taker sides come through the venue's wire rule


@pytest.mark.parametrize("venue", VENUES)
def test_history_by_time_pages_through_the_range(venue: str) -> None:
    hour = served(venue)
    by_id = {int(t.trade_id): t for t in hour}
    since, until = by_id[BASE[venue] + 501].event_time, by_id[BASE[venue] + 951].event_time
    want = [t for t in hour if since <= t.event_time < until]
    with rest_server(venue) as server:
        trades, report = fetch_history(client(venue, server.url), PAIR[venue], since, until)
        log = list(server.requests)
    assert [same(t) for t in trades] == [same(t) for t in want]
    assert ids(trades) == list(range(ids(want)[0], ids(want)[-1] + 1))  # consecutive: nothing skipped
    assert 440 <= report.fetched == len(want) and report.unfilled == [] and report.complete
    assert report.pages >= 5
    pages = [r for r in log if r.rows > 1]
    assert len(pages) == report.pages and all(r.status == 200 for r in log)
    key = {"kraken": "since", "coinbase": "after", "binance": "fromId"}[venue]
    positions = [int(r.params[key]) for r in pages]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)  # paging moves forward


def test_kraken_time_cursor_is_exclusive_and_ns() -> None:
    """Kraken's ``since`` is exclusive, in ns; ``last`` is the last row's time in ns as a string."""
    hour = served("kraken")
    with KrakenRestServer() as server:
        answer = server.answer("/0/public/Trades", {"pair": "XBTUSD", "since": str(time_ns(hour[9].event_time)),
                                                    "count": "5"})
        default = server.answer("/0/public/Trades", {"pair": "XXBTZUSD"})
    rows = answer.body["result"]["XXBTZUSD"]
    later = [t for t in hour if t.event_time > hour[9].event_time][:5]
    assert [r[6] for r in rows] == ids(later)
    assert answer.body["result"]["last"] == str(time_ns(later[-1].event_time))
    assert len(default.body["result"]["XXBTZUSD"]) == 1000 and default.body["result"]["XXBTZUSD"][-1][6] == 2671


# ---- the venues' real pages ------------------------------------------------------------------------------


def test_kraken_real_page_parses_and_the_server_writes_its_shape() -> None:
    text = (FIXTURES / "kraken_rest_trades.json").read_bytes()
    page = KrakenRest("http://127.0.0.1:9").parse_json(text)
    rows = page["result"]["XBTUSDT"]
    at = datetime.now(UTC)
    trades = [kraken_row(r, "BTC/USDT", at) for r in rows]
    first = trades[0]
    assert (first.trade_id, first.price, first.qty, first.side, first.ord_type, first.symbol) == \
        ("10218208", 105433.6, 0.00027625, "buy", "limit", "BTC/USDT")
    assert first.event_time == datetime.fromtimestamp(1762795433, UTC) + timedelta(microseconds=971744)  # cut
    assert [t.ord_type for t in trades[:3]] == ["limit", "market", "market"] and trades[4].side == "sell"
    assert page["result"]["last"] == "1762820035982277754" and trades[-1].trade_id == "10219207"
    with KrakenRestServer() as server:
        ours = server.answer("/0/public/Trades", {"pair": "XBTUSD", "count": "3"}).body
    assert set(ours) == set(page) and ours["error"] == [] and set(ours["result"]) == {"XXBTZUSD", "last"}
    assert [type(v) for v in ours["result"]["XXBTZUSD"][0]] == [type(v) for v in json.loads(text)["result"][
        "XBTUSDT"][0]][:2] + [float, str, str, str, int]
    assert ours["result"]["last"].isdigit()


def test_binance_real_page_parses_and_the_server_writes_its_shape() -> None:
    real = fixture("binance_rest_historical_trades.json")
    at = datetime.now(UTC)
    trades = [binance_row(r, "BTCUSDT", at) for r in real]
    assert ids(trades) == list(range(1111471896, 1111471896 + len(real)))
    assert [t.side for t in trades[:2]] == ["sell", "buy"]  # isBuyerMaker true: the taker sold
    assert trades[0].price == 60814.78 and trades[0].event_time == datetime(2021, 10, 22, 22, 53, 39, 887000, UTC)
    with BinanceRestServer() as server:
        ours = server.answer("/api/v3/historicalTrades", {"symbol": "BTCUSDT", "limit": "2"}).body
    assert [sorted(r) for r in ours] == [sorted(real[0])] * 2
    assert [type(ours[0][k]) for k in sorted(real[0])] == [type(real[0][k]) for k in sorted(real[0])]


def test_coinbase_pages_newest_first_with_cursor_headers() -> None:
    base = COINBASE_ID_BASE
    with rest_server("coinbase") as server:
        older = server.answer("/products/BTC-USD/trades", {"after": str(base + 500), "limit": "3"})
        newer = server.answer("/products/BTC-USD/trades", {"before": str(base + 500), "limit": "3"})
        newest = server.answer("/products/BTC-USD/trades", {"limit": "2"})
        unknown = server.answer("/products/ETH-EUR/trades", {})
    assert [r["trade_id"] for r in older.body] == [base + 499, base + 498, base + 497]
    assert (older.headers["CB-BEFORE"], older.headers["CB-AFTER"]) == (str(base + 499), str(base + 497))
    assert [r["trade_id"] for r in newer.body] == [base + 503, base + 502, base + 501]
    assert [r["trade_id"] for r in newest.body] == [base + 2671, base + 2670]
    assert unknown.status == 404 and unknown.body == {"message": "NotFound"}
    ws = ws_trades("coinbase")[base + 499]
    assert older.body[0]["side"] != ws.side  # the maker's side on the wire, the taker's in the Trade


# ---- rate limits, retries, bans ---------------------------------------------------------------------------


@pytest.mark.parametrize("venue", VENUES)
def test_429_waits_for_retry_after_and_the_fetch_completes(venue: str) -> None:
    first, last = BASE[venue] + 1001, BASE[venue] + 1200
    with rest_server(venue, fail_429=1, retry_after_s=1) as server:
        trades, report = fetch_gap(client(venue, server.url), PAIR[venue], first, last)
        log = list(server.requests)
    assert ids(trades) == list(range(first, last + 1)) and report.unfilled == [] and report.complete
    assert [r.status for r in log].count(429) == 1 and log[0].status == 429
    assert log[1].at - log[0].at >= 1.0  # Retry-After: 1 was honoured (backoff_s alone is 0.01)
    assert report.retries == 1 and report.requests == len(log)


def test_requests_keep_the_minimum_interval() -> None:
    hour = served("kraken")
    with rest_server("kraken") as server:
        c = client("kraken", server.url, min_interval_s=0.15)
        trades, report = fetch_gap(c, "BTC/USD", 1001, 1250, after=hour[999].event_time)
        log = list(server.requests)
    assert ids(trades) == list(range(1001, 1251))
    assert len(log) == report.requests >= 3
    assert int(log[0].params["since"]) == time_ns(hour[999].event_time) - 1  # the hint: no lookup needed
    assert all(b.at - a.at >= 0.14 for a, b in zip(log, log[1:], strict=False))


@pytest.mark.parametrize("venue", VENUES)
def test_5xx_is_retried_then_the_fetch_completes(venue: str) -> None:
    first, last = BASE[venue] + 1, BASE[venue] + 150
    with rest_server(venue, fail_5xx=2) as server:
        trades, report = fetch_gap(client(venue, server.url), PAIR[venue], first, last)
        statuses = server.statuses()
    assert ids(trades) == list(range(first, last + 1)) and report.complete and report.error is None
    assert statuses[:3] == [503, 503, 200] and report.retries == 2


@pytest.mark.parametrize("venue", VENUES)
def test_5xx_past_the_retry_bound_stops_and_reports_the_rest_unfilled(venue: str, caplog: Any) -> None:
    first, last = BASE[venue] + 1001, BASE[venue] + 1400
    after = served(venue)[999].event_time  # the time of the trade before the gap (Kraken starts paging there)
    with rest_server(venue) as server:
        def break_after_the_first_page(p: BackfillProgress) -> None:
            server.faults.fail_5xx = 99

        with caplog.at_level(logging.ERROR, logger="lakehouse_utils.sources.rest"):
            trades, report = fetch_gap(client(venue, server.url, max_retries=2), PAIR[venue], first, last,
                                       after, progress=break_after_the_first_page)
        statuses = server.statuses()
    assert 90 <= len(trades) <= 100 and ids(trades) == list(range(first, first + len(trades)))
    assert report.unfilled == [(first + len(trades), last)] and not report.complete
    assert report.error is not None and "503" in report.error and "after 2 retries" in report.error
    assert statuses[-3:] == [503, 503, 503] and report.retries == 2
    assert f"cannot fill {last - first + 1 - len(trades)} ids" in caplog.text


def test_binance_418_stops_at_once_and_says_so() -> None:
    with rest_server("binance", ban_418=True, retry_after_s=120) as server:
        c = client("binance", server.url)
        with pytest.raises(RestBanned, match=r"418.*banned for 120 s") as banned:
            fetch_gap(c, "BTC/USDT", BINANCE_ID_BASE + 1, BINANCE_ID_BASE + 300)
        assert banned.value.report is not None and banned.value.report.banned
        assert banned.value.report.unfilled == [(BINANCE_ID_BASE + 1, BINANCE_ID_BASE + 300)]
        with pytest.raises(RestBanned, match="no request sent"):
            fetch_gap(c, "BTC/USDT", BINANCE_ID_BASE + 1, BINANCE_ID_BASE + 300)
        assert server.statuses() == [418]  # one request, no retry, none after the ban


def test_slow_answers_within_the_timeout_are_waited_for_and_past_it_retried_then_reported() -> None:
    with rest_server("binance", delay_s=0.2) as server:
        trades, report = fetch_gap(client("binance", server.url, timeout_s=2), "BTC/USDT", BINANCE_ID_BASE + 1,
                                   BINANCE_ID_BASE + 50)
        assert len(trades) == 50 and report.complete
        late, failed = fetch_gap(client("binance", server.url, timeout_s=0.05, max_retries=1), "BTC/USDT",
                                 BINANCE_ID_BASE + 1, BINANCE_ID_BASE + 50)
    assert late == [] and failed.unfilled == [(BINANCE_ID_BASE + 1, BINANCE_ID_BASE + 50)]
    assert failed.error is not None and "timed out" in failed.error and failed.retries == 1


def test_a_venue_error_in_the_body_is_not_retried_and_is_reported() -> None:
    with rest_server("kraken") as server:
        trades, report = fetch_gap(client("kraken", server.url), "ETH/USD", 1, 10, after=datetime(2019, 7, 1,
                                                                                                   tzinfo=UTC))
        assert server.statuses() == [200]
    assert trades == [] and report.unfilled == [(1, 10)] and "EQuery:Unknown asset pair" in (report.error or "")


# ---- what cannot be filled --------------------------------------------------------------------------------


@pytest.mark.parametrize("venue", VENUES)
def test_ids_the_venue_cannot_serve_are_reported_unfilled(venue: str) -> None:
    b = BASE[venue]
    with rest_server(venue, missing_ids=(b + 1100, b + 1149), serve_until=b + 1280) as server:
        trades, report = fetch_gap(client(venue, server.url), PAIR[venue], b + 1001, b + 1300)
    assert ids(trades) == [*range(b + 1001, b + 1100), *range(b + 1150, b + 1281)]
    assert report.unfilled == [(b + 1100, b + 1149), (b + 1281, b + 1300)] and report.unfilled_ids == 70
    assert report.fetched == 230 and report.complete and report.error is None
    assert f"cannot fill 70 ids: {b + 1100}..{b + 1149}, {b + 1281}..{b + 1300}" in report.line()


# ---- cursor, resume, progress -----------------------------------------------------------------------------


def test_cursor_round_trips_through_json() -> None:
    cursor = RestCursor.for_time("coinbase", "btc/usd", datetime(2019, 7, 1, tzinfo=UTC),
                                 datetime(2019, 7, 1, 0, 30, tzinfo=UTC))
    cursor.position, cursor.next_id, cursor.yielded = 68_000_101, 68_000_150, 49
    again = RestCursor.from_json(cursor.to_json())
    assert again == cursor and again.symbol == "BTC/USD" and not again.by_ids
    assert RestCursor.from_json(RestCursor.for_ids("binance", "BTC/USDT", 5, 9).to_json()).describe() == "ids 5..9"
    with pytest.raises(ValueError, match="version 1"):
        RestCursor.from_json('{"venue": "kraken"}')


@pytest.mark.parametrize("venue", VENUES)
@pytest.mark.parametrize("mode", ["ids", "time"])
def test_a_fetch_resumed_from_a_saved_cursor_yields_exactly_the_rest(venue: str, mode: str) -> None:
    b, hour = BASE[venue], served(venue)
    by_id = {int(t.trade_id): t for t in hour}
    if mode == "ids":
        cursor = RestCursor.for_ids(venue, PAIR[venue], b + 1001, b + 1300)
        want = list(range(b + 1001, b + 1301))
    else:
        since, until = by_id[b + 1001].event_time, by_id[b + 1301].event_time
        cursor = RestCursor.for_time(venue, PAIR[venue], since, until)
        want = [int(t.trade_id) for t in hour if since <= t.event_time < until]
    with rest_server(venue) as server:
        job = client(venue, server.url).fetch(cursor)
        before: list[Trade] = []
        saved = ""
        for trade in job:
            before.append(trade)  # type: ignore[arg-type]
            saved = cursor.to_json()  # the checkpoint, written once the trade is delivered
            if len(before) == 137:
                break  # kill -9: nothing after the checkpoint survives
        resumed = RestCursor.from_json(saved)
        rest_job = client(venue, server.url).fetch(resumed)
        after = list(rest_job)
    got = ids(before) + ids(after)  # type: ignore[arg-type]
    assert got == want and len(set(got)) == len(got)
    assert ids(after)[0] == want[137] and rest_job.report.fetched == len(want) - 137  # type: ignore[arg-type]
    assert resumed.done and resumed.yielded == len(want) and rest_job.report.unfilled == []
    assert list(client(venue, "http://127.0.0.1:9").fetch(resumed)) == []  # a finished cursor asks nothing


def test_progress_reports_pages_trades_and_position() -> None:
    seen: list[BackfillProgress] = []
    b = COINBASE_ID_BASE
    with rest_server("coinbase") as server:
        trades, report = fetch_gap(client("coinbase", server.url), "BTC/USD", b + 1, b + 250, progress=seen.append)
    assert [p.pages for p in seen] == [1, 2, 3] and [p.trades for p in seen] == [100, 200, 250]
    assert seen[-1].last_id == report.last_id == b + 250 and seen[-1].last_time == trades[-1].event_time
