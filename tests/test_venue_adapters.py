"""Each venue's adapter on the venues' real frames (tests/fixtures/venues), served by its replay server over a
real local WebSocket: symbols, the taker side, ids, timestamps, snapshots, unknown symbols."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from lakehouse_utils.sources.binance import BinanceSource
from lakehouse_utils.sources.binance_replay import BinanceReplayServer
from lakehouse_utils.sources.coinbase import CoinbaseAdvancedSource, CoinbaseExchangeSource, parse_market_trade
from lakehouse_utils.sources.coinbase_replay import CoinbaseAdvancedReplayServer, CoinbaseReplayServer
from lakehouse_utils.sources.kraken import KrakenV2Source
from lakehouse_utils.sources.replay import ReplayServer
from lakehouse_utils.sources.symbols import UnknownSymbol, common_symbol, table, venue_name
from lakehouse_utils.sources.taker import ADVANCED_SIDE_IS, advanced_taker, binance_taker, coinbase_taker
from lakehouse_utils.sources.trades import TradeError, iso_time
from tests.venue_fixtures import collect, fixture, frames, rejects_of, trades_of, txt_recording

OPPOSITE = {"buy": "sell", "sell": "buy"}


def at_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


# ---- Coinbase Exchange: matches ----------------------------------------------------------------------------------


def test_coinbase_exchange_real_matches() -> None:
    recorded = [f for f in frames("coinbase_exchange_ws.txt") if f["type"] in ("match", "last_match")]
    assert len(recorded) == 107 and sum(f["type"] == "last_match" for f in recorded) == 10
    products = sorted({f["product_id"] for f in recorded})
    with CoinbaseReplayServer(txt_recording("coinbase_exchange_ws.txt"), close_when_done=True) as server:
        source = CoinbaseExchangeSource([p.replace("-", "/") for p in products], server.url, end_on_close=True)
        items = collect(source)
        assert server.subscribe_requests == 1
    trades = trades_of(items)
    assert rejects_of(items) == [] and len(trades) == 107
    for trade, frame in zip(trades, recorded, strict=True):
        assert trade.exchange == "coinbase"
        assert trade.symbol == frame["product_id"].replace("-", "/") and trade.venue_symbol == frame["product_id"]
        assert trade.side == OPPOSITE[frame["side"]]  # matches.side is the maker's: the taker is the other side
        assert trade.trade_id == str(frame["trade_id"])
        assert (trade.price, trade.qty) == (float(frame["price"]), float(frame["size"]))
        assert trade.event_time == datetime.fromisoformat(frame["time"])  # to the microsecond
        assert trade.ord_type is None
    assert {t.symbol for t in trades} >= {"SKL/USD", "DASH/BTC", "BAND/GBP", "NMR/EUR"}
    # one last_match per product on subscribe: counted as snapshot trades; the ids are consecutive per product
    assert source.stats["snapshot_trades"] == 10 and source.stats["snapshot_repeats"] == 0
    assert source.stats["missing_ids"] == 0 and source.stats["gaps"] == {}
    assert source.stats["subscribe_errors"] == 0


def test_coinbase_unknown_product_and_bad_values_are_rejected() -> None:
    recording = txt_recording("coinbase_exchange_ws.txt")
    match = next(r["frame"] for r in recording if r["frame"]["type"] == "match")
    injected = {
        3: json.dumps({**match, "product_id": "BTC-USD-PERP", "trade_id": 1}),
        4: json.dumps({**match, "price": 14.7}),  # a number where Coinbase sends a decimal string
        5: json.dumps({**match, "side": "hold"}),
        6: json.dumps({"type": "ticker", "product_id": "SKL-USD"}),
    }
    with CoinbaseReplayServer(recording, raw_frames=injected, close_when_done=True) as server:
        source = CoinbaseExchangeSource(["SKL/USD"], server.url, end_on_close=True)
        items = collect(source)
    assert [r.reason.split(" ")[0] for r in rejects_of(items)] == [
        "unknown_symbol:coinbase:BTC-USD-PERP", "bad_type:price", "unknown_side:hold", "unknown_type:ticker"]
    assert json.loads(rejects_of(items)[0].raw)["product_id"] == "BTC-USD-PERP"  # the trade as sent, for replay
    assert {t.symbol for t in trades_of(items)} == {"SKL/USD"}


# ---- Coinbase Advanced Trade: market_trades ------------------------------------------------------------------------


def test_coinbase_advanced_real_market_trades() -> None:
    frame = fixture("coinbase_advanced_ws_market_trades.json")
    with CoinbaseAdvancedReplayServer([{"recv_ms": 1, "frame": frame}], close_when_done=True) as server:
        source = CoinbaseAdvancedSource(["BTC/USD"], server.url, end_on_close=True)
        items = collect(source)
        assert server.subscribe_requests == 2  # market_trades, and heartbeats (kept alive)
    trades = trades_of(items)
    sent = frame["events"][0]["trades"]
    assert rejects_of(items) == [] and len(trades) == 2
    for trade, item in zip(trades, sent, strict=True):
        assert (trade.exchange, trade.symbol, trade.venue_symbol) == ("coinbase", "BTC/USD", "BTC-USD")
        assert trade.trade_id == item["trade_id"] and trade.price == float(item["price"])
        assert trade.qty == float(item["size"]) and trade.event_time == datetime.fromisoformat(item["time"])
        assert trade.side == advanced_taker(item["side"])
    assert ADVANCED_SIDE_IS == "maker" and [t.side for t in trades] == ["sell", "buy"]  # BUY, SELL as sent
    assert source.stats["snapshot_trades"] == 0 and source.stats["missing_ids"] == 0


def test_coinbase_advanced_side_rule_against_the_real_ticker_page() -> None:
    """The evidence for ADVANCED_SIDE_IS = "maker": the page's SELL prints are at its best ask (a resting sell
    order was hit: the taker bought)."""
    page = fixture("coinbase_advanced_rest_ticker.json")
    at_ask = [t for t in page["trades"] if t["price"] == page["best_ask"]]
    assert len(at_ask) == 2 and {t["side"] for t in at_ask} == {"SELL"}
    now = datetime(2026, 4, 7, tzinfo=UTC)
    assert {parse_market_trade(t, now).side for t in at_ask} == {"buy"}
    ids = sorted(int(parse_market_trade(t, now).trade_id) for t in page["trades"])
    assert ids == [995098661, 995098662, 995098663]  # newest first on the page, consecutive


# ---- Binance Spot: <symbol>@trade ---------------------------------------------------------------------------------


def test_binance_real_trade_frame() -> None:
    frame = fixture("binance_ws_trade.json")
    with BinanceReplayServer([{"recv_ms": 1, "frame": frame}], close_when_done=True) as server:
        source = BinanceSource(["ETH/USDT"], server.url, end_on_close=True)
        items = collect(source)
    [trade] = trades_of(items)
    data = frame["data"]
    assert (trade.exchange, trade.symbol, trade.venue_symbol) == ("binance", "ETH/USDT", "ETHUSDT")
    assert trade.trade_id == "705291099" and (trade.price, trade.qty) == (4149.74, 0.4387)
    assert data["m"] is True and trade.side == "sell"  # the buyer was the maker: the taker sold
    assert trade.event_time == at_ms(data["T"]) == datetime(2021, 12, 12, 23, 17, 42, 243000, tzinfo=UTC)
    assert source.streams == ["ethusdt@trade"]


def binance_frames_from_rest_page(symbol: str = "BTCUSDT") -> list[dict]:
    """The real historicalTrades page as the trade stream sends the same trades (same id, price, qty, time, m)."""
    return [{"stream": f"{symbol.lower()}@trade",
             "data": {"e": "trade", "E": t["time"], "s": symbol, "t": t["id"], "p": t["price"], "q": t["qty"],
                      "T": t["time"], "m": t["isBuyerMaker"], "M": t["isBestMatch"]}}
            for t in fixture("binance_rest_historical_trades.json")]


def test_binance_real_ids_and_sides_with_a_missing_id() -> None:
    page = fixture("binance_rest_historical_trades.json")
    events = binance_frames_from_rest_page()
    dropped = events.pop(4)["data"]["t"]  # one trade the stream never sent
    with BinanceReplayServer([{"recv_ms": i, "frame": f} for i, f in enumerate(events)],
                             close_when_done=True) as server:
        source = BinanceSource(["BTC/USDT"], server.url, end_on_close=True)
        trades = trades_of(collect(source))
    assert [t.side for t in trades] == ["sell" if r["isBuyerMaker"] else "buy" for r in page if r["id"] != dropped]
    assert source.stats["missing_ids"] == 1 and source.stats["gaps"] == {"binance BTC/USDT": [(dropped, dropped)]}


def test_binance_unknown_symbol_is_rejected_not_guessed() -> None:
    frame = fixture("binance_ws_trade.json")
    foo = {**frame, "stream": "foobar@trade", "data": {**frame["data"], "s": "FOOBAR"}}
    with BinanceReplayServer([{"recv_ms": 1, "frame": frame}], raw_frames={0: json.dumps(foo)},
                             close_when_done=True) as server:
        source = BinanceSource(["ETH/USDT"], server.url, end_on_close=True)
        items = collect(source)
    [rejected] = rejects_of(items)
    assert rejected.reason == "unknown_symbol:binance:FOOBAR" and rejected.source == "binance"
    assert json.loads(rejected.raw)["s"] == "FOOBAR" and len(trades_of(items)) == 1
    with pytest.raises(ValueError, match="binance has no symbol for FOO/BAR"):
        BinanceSource(["FOO/BAR"], server.url)  # asked for: refused when made, with what to add


# ---- Kraken v2 ---------------------------------------------------------------------------------------------------


def test_kraken_real_update_frame() -> None:
    frame = fixture("kraken_ws_trade_update.json")
    with ReplayServer([{"recv_ms": 1, "frame": frame}], close_when_done=True) as server:
        source = KrakenV2Source(["BTC/USD"], server.url, end_on_close=True)
        trades = trades_of(collect(source))
    assert [(t.trade_id, t.side, t.price, t.qty, t.ord_type) for t in trades] == [
        ("10218208", "buy", 105944.2, 0.00027625, "limit"), ("10218209", "sell", 105910.5, 0.0001246, "market")]
    assert {(t.exchange, t.symbol, t.venue_symbol) for t in trades} == {("kraken", "BTC/USD", "BTC/USD")}
    assert trades[1].event_time == datetime(2023, 10, 6, 17, 35, 56, 123456, tzinfo=UTC)
    assert source.stats["missing_ids"] == 0


# ---- the symbol scheme and the side rules --------------------------------------------------------------------------


def test_symbols_of_the_real_frames() -> None:
    binance = {f["data"]["s"] for f in frames("binance_ws_aggtrade.txt")}
    binance.add(fixture("binance_ws_trade.json")["data"]["s"])
    assert {s: common_symbol("binance", s) for s in sorted(binance)} == {
        "ETHUSDT": "ETH/USDT", "LRCBTC": "LRC/BTC", "NKNUSDT": "NKN/USDT", "OMGBUSD": "OMG/BUSD"}
    coinbase = {f["product_id"] for f in frames("coinbase_exchange_ws.txt") if "product_id" in f}
    assert all(common_symbol("coinbase", p) == p.replace("-", "/") for p in coinbase)
    assert common_symbol("kraken", "XBT/USDT") == "BTC/USDT" and common_symbol("kraken", "XDG/USD") == "DOGE/USD"
    assert common_symbol("binance", "btcusdt") == "BTC/USDT"  # stream names are lower case
    assert (venue_name("binance", "btc/usdt"), venue_name("coinbase", "XBT/USD"), venue_name("kraken", "xbt/eur")) == (
        "BTCUSDT", "BTC-USD", "BTC/EUR")
    assert all(s == s.upper() and "/" in common for s, common in table("binance").items())


@pytest.mark.parametrize(("venue", "name", "reason"), [
    ("binance", "FOOBAR", "unknown_symbol:binance:FOOBAR"),
    ("binance", "btcusd", "unknown_symbol:binance:BTCUSD"),  # not listed on Binance: no guess at USD vs USDT
    ("coinbase", "BTCUSD", "unknown_symbol:coinbase:BTCUSD"),
    ("coinbase", "BTC-USD-PERP", "unknown_symbol:coinbase:BTC-USD-PERP"),
    ("coinbase", 42, "unknown_symbol:coinbase:42"),
])
def test_unknown_symbols_are_not_guessed(venue: str, name: object, reason: str) -> None:
    with pytest.raises(UnknownSymbol) as info:
        common_symbol(venue, name)
    assert info.value.reason == reason and isinstance(info.value, TradeError)


def test_side_rules() -> None:
    assert [coinbase_taker("buy"), coinbase_taker("sell")] == ["sell", "buy"]
    assert [binance_taker(True), binance_taker(False)] == ["sell", "buy"]
    with pytest.raises(TradeError, match="bad_type:m"):
        binance_taker("true")
    with pytest.raises(TradeError, match="unknown_side:buy"):
        advanced_taker("buy")  # Advanced Trade sends BUY / SELL


def test_iso_times_past_the_microsecond_are_cut() -> None:
    assert iso_time("2026-04-07T00:28:58.544778123Z") == datetime(2026, 4, 7, 0, 28, 58, 544778, tzinfo=UTC)
    assert iso_time("2021-04-17T16:43:30Z") == datetime(2021, 4, 17, 16, 43, 30, tzinfo=UTC)
