"""Each venue's replay server speaks that venue's protocol (handshake, acks, snapshot, keep-alive), and each adapter
gets through a disconnect -> reconnect -> resubscribe: the trades a snapshot re-sends are repeats, never gaps or new
trades, and the ones a reconnect skipped are counted as missing ids. Real local WebSockets, no mocks."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from lakehouse_utils.sources.binance import BinanceSource
from lakehouse_utils.sources.binance_replay import BinanceReplayServer
from lakehouse_utils.sources.coinbase import CoinbaseAdvancedSource, CoinbaseExchangeSource
from lakehouse_utils.sources.coinbase_replay import CoinbaseAdvancedReplayServer, CoinbaseReplayServer
from lakehouse_utils.sources.kraken import KrakenV2Source
from lakehouse_utils.sources.reencode import BINANCE_ID_BASE, COINBASE_ID_BASE
from lakehouse_utils.sources.replay import ReplayServer
from tests.venue_fixtures import collect, trades_of

DISTINCT = 2671  # distinct trades in the bundled hour (one printed twice: 2,672 prints)


def client(url: str) -> ClientConnection:
    return connect(url, proxy=None, compression=None, open_timeout=5)


def receive(ws: ClientConnection, n: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
    return [json.loads(ws.recv(timeout)) for _ in range(n)]


def until(ws: ClientConnection, wanted: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The first message for which ``wanted(message)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(max(0.1, deadline - time.monotonic())))
        if wanted(message):
            return message


def ids_of(trades: list) -> list[int]:
    return [int(t.trade_id) for t in trades]


def assert_accounted(source: Any, trades: list, base: int) -> None:
    """Every trade of the hour arrived or is counted missing (none both); repeats are only snapshot re-sends."""
    got = set(ids_of(trades))
    missing = {i for ranges in source.stats["gaps"].values() for a, b in ranges for i in range(a, b + 1)}
    assert not got & missing
    assert got | missing == set(range(base + 1, base + DISTINCT + 1))
    assert source.stats["missing_ids"] == len(missing)


# ---- Coinbase Exchange ------------------------------------------------------------------------------------------


def test_coinbase_exchange_handshake_acks_errors_and_heartbeats() -> None:
    with CoinbaseReplayServer() as server:
        with client(server.url) as ws:
            ws.send(json.dumps({"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["matches"]}))
            error = receive(ws)[0]
            assert error == {"type": "error", "message": "Failed to subscribe",
                             "reason": "ETH-USD is not a valid product"}
            ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"],
                                "channels": ["matches", {"name": "heartbeat", "product_ids": ["BTC-USD"]}]}))
            ack = receive(ws)[0]
            assert ack == {"type": "subscriptions", "channels": [{"name": "heartbeat", "product_ids": ["BTC-USD"]},
                                                                  {"name": "matches", "product_ids": ["BTC-USD"]}]}
            first = receive(ws)[0]  # no last_match: nothing happened before this first connection
            assert first["type"] == "match" and first["trade_id"] == COINBASE_ID_BASE + 1
            beat = until(ws, lambda m: m["type"] == "heartbeat")  # once the hour is over
            assert beat["product_id"] == "BTC-USD" and beat["last_trade_id"] == COINBASE_ID_BASE + DISTINCT
        # a second connection gets the product's last match on subscribe
        with client(server.url) as ws:
            ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["matches"]}))
            ack, last = receive(ws, 2)
            assert ack["type"] == "subscriptions" and last["type"] == "last_match"
            assert last["trade_id"] == COINBASE_ID_BASE + DISTINCT and server.snapshot_trades_sent == 1


def test_coinbase_closes_a_connection_that_does_not_subscribe_within_the_limit() -> None:
    for server in (CoinbaseReplayServer(subscribe_timeout=0.3), CoinbaseAdvancedReplayServer(subscribe_timeout=0.3)):
        with server, client(server.url) as ws:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(5)
            assert 0.25 < time.monotonic() - started < 3 and closed.value.rcvd.code == 1008
            assert server.subscribe_timeouts == 1


@pytest.mark.parametrize(("skip", "missing", "repeats"), [(0, 0, 1), (5, 4, 0)])
def test_coinbase_exchange_reconnect_resubscribes_and_counts_last_match(skip: int, missing: int,
                                                                       repeats: int) -> None:
    """Dropped after 500 matches; ``skip`` matches happen while away. On resubscribe the feed sends the product's
    last match only: a repeat when nothing happened, else the newest trade, which leaves the others missing."""
    with CoinbaseReplayServer(drop_after=500, skip_on_drop=skip, close_when_done=True) as server:
        source = CoinbaseExchangeSource(["BTC/USD"], server.url, backoff_initial=0.05, end_on_close=True)
        trades = trades_of(collect(source))
        assert server.connections == 2 and server.subscribe_requests == 2
    assert source.stats["reconnects"] == 1
    assert source.stats["snapshot_trades"] == 1 and source.stats["snapshot_repeats"] == repeats
    assert source.stats["missing_ids"] == missing
    if missing:
        assert source.stats["gaps"] == {"coinbase BTC/USD": [(COINBASE_ID_BASE + 501, COINBASE_ID_BASE + 504)]}
    assert_accounted(source, trades, COINBASE_ID_BASE)
    assert len(trades) == 2672 - skip + 1  # the hour (one print twice), less what was skipped, plus the last_match


# ---- Coinbase Advanced Trade --------------------------------------------------------------------------------------


def test_coinbase_advanced_handshake_snapshot_and_heartbeats() -> None:
    with CoinbaseAdvancedReplayServer(snapshot_size=3) as server:
        with client(server.url) as ws:
            ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"}))
            ack, snapshot = receive(ws, 2)
            assert ack["channel"] == "subscriptions"
            assert ack["events"] == [{"subscriptions": {"market_trades": ["BTC-USD"]}}]
            assert snapshot["channel"] == "market_trades" and snapshot["events"] == [{"type": "snapshot", "trades": []}]
            ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
            ack = until(ws, lambda m: m["channel"] == "subscriptions")
            assert ack["events"][0]["subscriptions"] == {"heartbeats": ["heartbeats"], "market_trades": ["BTC-USD"]}
            beat = until(ws, lambda m: m["channel"] == "heartbeats")
            assert set(beat["events"][0]) == {"current_time", "heartbeat_counter"}
        with client(server.url) as ws:  # the snapshot of a later connection: the last trades, newest first
            ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"}))
            _, snapshot = receive(ws, 2)
            ids = [int(t["trade_id"]) for t in snapshot["events"][0]["trades"]]
            assert ids == [COINBASE_ID_BASE + DISTINCT - i for i in range(3)]


def test_coinbase_advanced_closes_an_idle_connection_without_heartbeats() -> None:
    with CoinbaseAdvancedReplayServer(idle_close_s=0.5) as server, client(server.url) as ws:
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"}))
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(10)
        assert server.finished.is_set() and server.idle_closes == 1


@pytest.mark.parametrize(("skip", "missing", "repeats"), [(0, 0, 50), (10, 0, 40), (80, 30, 0)])
def test_coinbase_advanced_reconnect_snapshot_overlap(skip: int, missing: int, repeats: int) -> None:
    """The snapshot after a reconnect holds the last 50 trades, newest first: those already seen are repeats, the
    ones that happened while away are new; beyond 50 the rest is missing."""
    with CoinbaseAdvancedReplayServer(drop_after=500, skip_on_drop=skip, close_when_done=True) as server:
        source = CoinbaseAdvancedSource(["BTC/USD"], server.url, backoff_initial=0.05, end_on_close=True)
        trades = trades_of(collect(source))
        # heartbeats, then market_trades, on each connection: both answered before the replay starts
        assert server.connections == 2 and server.channel_subscribes == {"heartbeats": 2, "market_trades": 2}
    assert source.stats["snapshot_trades"] == 50 and source.stats["snapshot_repeats"] == repeats
    assert source.stats["missing_ids"] == missing
    if missing:
        assert source.stats["gaps"] == {"coinbase BTC/USD": [(COINBASE_ID_BASE + 501, COINBASE_ID_BASE + 530)]}
    assert_accounted(source, trades, COINBASE_ID_BASE)
    assert len(trades) - repeats == 2672 - missing  # every print once, but the repeats and the missing


# ---- Binance ------------------------------------------------------------------------------------------------------


def test_binance_subscribe_list_errors_and_pings() -> None:
    with BinanceReplayServer(ping_interval=0.2) as server, client(server.url) as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7}))
        assert receive(ws)[0] == {"result": None, "id": 7}
        first = receive(ws)[0]
        assert first["stream"] == "btcusdt@trade" and first["data"]["t"] == BINANCE_ID_BASE + 1
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        assert until(ws, lambda m: m.get("id") == 8) == {"result": ["btcusdt@trade"], "id": 8}
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 9}))
        assert until(ws, lambda m: m.get("id") == 9)["error"]["code"] == 2
        ws.send(json.dumps({"method": "PING", "id": 10}))
        assert "unknown method" in until(ws, lambda m: m.get("id") == 10)["error"]["msg"]
        time.sleep(0.7)
        assert server.pongs >= 2  # the client answered the server's pings


def raw_connection(url: str) -> socket.socket:
    """A WebSocket connection that completes the handshake and then never answers anything (no pong)."""
    host, port = url.removeprefix("ws://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101")
    return sock


def test_binance_closes_a_connection_that_does_not_answer_its_ping() -> None:
    with BinanceReplayServer(ping_interval=0.2, pong_timeout=0.3) as server:
        sock = raw_connection(server.url)
        try:
            deadline = time.monotonic() + 5
            while server.pong_timeouts == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.pong_timeouts == 1 and server.pongs == 0
        finally:
            sock.close()


def test_binance_source_answers_pings_and_reconnects_at_the_server_limit() -> None:
    """Paced (the hour in ~2 s): the server pings every 0.2 s and ends each connection after 0.6 s, as Binance
    ends one after 24 h; the source answers the pings and resubscribes each time. Trades in flight when a
    connection ends are lost (Binance sends no snapshot): every trade arrived or is counted missing."""
    with BinanceReplayServer(speed=1800, ping_interval=0.2, max_connection_s=0.6, close_when_done=True) as server:
        source = BinanceSource(["BTC/USDT"], server.url, backoff_initial=0.01, backoff_max=0.05)
        trades = trades_of(collect(source, done=server.finished, timeout=30))
        assert server.expired >= 1 and server.connections == server.subscribe_requests >= 2
        assert server.pongs >= 1 and source.stats["server_pings"] >= 1
    assert source.stats["reconnects"] == server.connections - 1 and source.stats["snapshot_repeats"] == 0
    assert len(set(ids_of(trades))) == len(trades) - 1  # the one print the hour holds twice
    assert_accounted(source, trades, BINANCE_ID_BASE)


def test_binance_source_renews_its_connection_before_the_limit_and_on_server_shutdown() -> None:
    with BinanceReplayServer(speed=1800, shutdown_after=300, close_when_done=True) as server:
        source = BinanceSource(["BTC/USDT"], server.url, max_connection_s=0.8, end_on_close=True)
        trades = trades_of(collect(source, timeout=30))
        assert server.connections >= 3 and server.expired == 0  # the source moved before the server closed anything
    assert source.stats["server_shutdowns"] == 1 and source.stats["renewals"] >= 2
    assert source.stats["renewals"] == source.stats["reconnects"] == server.connections - 1
    assert_accounted(source, trades, BINANCE_ID_BASE)


def test_binance_reconnect_counts_the_trades_it_skipped() -> None:
    with BinanceReplayServer(drop_after=500, skip_on_drop=7, close_when_done=True) as server:
        source = BinanceSource(["BTC/USDT"], server.url, backoff_initial=0.05, end_on_close=True)
        trades = trades_of(collect(source))
        assert server.connections == 2 and server.trades_skipped == [str(BINANCE_ID_BASE + i) for i in range(501, 508)]
    assert source.stats["missing_ids"] == 7 and source.stats["snapshot_trades"] == 0
    assert source.stats["gaps"] == {"binance BTC/USDT": [(BINANCE_ID_BASE + 501, BINANCE_ID_BASE + 507)]}
    assert len(trades) == 2672 - 7
    assert_accounted(source, trades, BINANCE_ID_BASE)


# ---- Kraken -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("skip", "missing", "repeats"), [(10, 0, 40), (80, 30, 0)])
def test_kraken_reconnect_snapshot_overlap_and_skipped_ids(skip: int, missing: int, repeats: int) -> None:
    with ReplayServer(drop_after=500, skip_on_drop=skip, close_when_done=True) as server:
        source = KrakenV2Source(["BTC/USD"], server.url, backoff_initial=0.05, end_on_close=True)
        trades = trades_of(collect(source))
    assert source.stats["snapshot_trades"] == 50 and source.stats["snapshot_repeats"] == repeats
    assert source.stats["missing_ids"] == missing
    assert source.stats["gaps"] == ({"kraken BTC/USD": [(501, 530)]} if missing else {})
    assert_accounted(source, trades, 0)
