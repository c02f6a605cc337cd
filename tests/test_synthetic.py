"""SyntheticSource: determinism, validity, bursts and pacing."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter
from datetime import UTC

import pytest

from lakehouse_utils.sources.synthetic import SIMULATED_EPOCH, SyntheticSource
from lakehouse_utils.sources.trades import Trade


def run(source: SyntheticSource, timeout: float = 10.0) -> list[Trade]:
    stop = threading.Event()
    watchdog = threading.Timer(timeout, stop.set)
    watchdog.start()
    try:
        items = list(source.stream(stop))
    finally:
        watchdog.cancel()
    assert all(isinstance(i, Trade) for i in items)
    return items  # type: ignore[return-value]


def test_same_seed_same_stream() -> None:
    first = run(SyntheticSource(seed=7, rate=None, n_trades=2000))
    second = run(SyntheticSource(seed=7, rate=None, n_trades=2000))
    assert len(first) == 2000
    assert [t.to_json() for t in first] == [t.to_json() for t in second]


def test_a_seed_gives_the_stream_it_always_gave() -> None:
    """Pinned: the stream (timestamps included) of seed 42 as the first implementation drew it."""
    source = SyntheticSource(["BTC/USD", "ETH/USD", "SOL/USD"], seed=42, rate=None, n_trades=20_000)
    text = "\n".join(t.to_json() for t in run(source))
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "da2cc390b4aa1f6c4eb14b232afa94ff5c76e675b7c493dcf9a49168fc209bda")


def test_different_seed_different_stream() -> None:
    a = run(SyntheticSource(seed=1, rate=None, n_trades=200))
    b = run(SyntheticSource(seed=2, rate=None, n_trades=200))
    assert [t.price for t in a] != [t.price for t in b]


def test_every_trade_is_valid() -> None:
    pairs = ["BTC/USD", "ETH/USD", "SOL/USD", "xbt/eur", "FOO/USD"]
    trades = run(SyntheticSource(pairs=pairs, seed=3, rate=None, n_trades=5000))
    assert len(trades) == 5000
    assert {t.symbol for t in trades} == {"BTC/USD", "ETH/USD", "SOL/USD", "BTC/EUR", "FOO/USD"}
    for t in trades:
        assert math.isfinite(t.price) and t.price > 0
        assert math.isfinite(t.qty) and t.qty > 0
        assert t.side in ("buy", "sell") and t.ord_type in ("limit", "market")
        assert t.exchange == "synthetic"
        assert t.event_time.tzinfo == UTC and t.event_time.microsecond % 1000 == 0
        assert t.event_time >= SIMULATED_EPOCH


def test_trade_ids_are_sequential_per_symbol_and_time_moves_forward() -> None:
    trades = run(SyntheticSource(seed=5, rate=None, n_trades=3000))
    for symbol in ("BTC/USD", "ETH/USD"):
        ids = [int(t.trade_id) for t in trades if t.symbol == symbol]
        assert ids == list(range(1, len(ids) + 1))
    times = [t.event_time for t in trades]
    assert times == sorted(times)


def test_realistic_start_prices_and_overrides() -> None:
    trades = run(SyntheticSource(["BTC/USD", "ETH/USD", "SOL/USD", "ABC/USD"], seed=9, rate=None, n_trades=400))
    first = {}
    for t in trades:
        first.setdefault(t.symbol, t.price)
    assert first["BTC/USD"] == pytest.approx(60_000, rel=0.01)
    assert first["ETH/USD"] == pytest.approx(3_000, rel=0.01)
    assert first["SOL/USD"] == pytest.approx(150, rel=0.01)
    assert first["ABC/USD"] == pytest.approx(100, rel=0.01)
    custom = run(SyntheticSource(["BTC/USD"], seed=9, rate=None, n_trades=1, start_prices={"XBT/USD": 25_000}))
    assert custom[0].price == pytest.approx(25_000, rel=0.01)


def test_bursts_share_a_millisecond() -> None:
    trades = run(SyntheticSource(seed=11, rate=None, n_trades=5000))
    per_instant = Counter((t.symbol, t.event_time) for t in trades)
    bursts = [n for n in per_instant.values() if n > 1]
    assert len(bursts) > 20
    assert max(bursts) <= 6


def test_rate_paces_in_real_time_and_stats_track() -> None:
    source = SyntheticSource(seed=1, rate=100.0, n_trades=60)
    started = time.monotonic()
    trades = run(source)
    elapsed = time.monotonic() - started
    assert len(trades) == 60
    assert 0.2 < elapsed < 3.0  # ~60 trades in events of 1-6 trades at 100 events/s
    assert source.stats["trades"] == 60 and source.stats["last_trade"] == trades[-1]
    assert source.stats["connected"] is False


def test_stop_ends_an_endless_stream() -> None:
    source = SyntheticSource(seed=1, rate=200.0)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    trades = list(source.stream(stop))
    assert time.monotonic() - started < 1.5
    assert len(trades) > 10


def test_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        SyntheticSource(rate=0)
