"""Seeded synthetic trade source (no network), for demos and tests.

Each symbol follows a geometric random walk from a realistic start price; sizes are
lognormal (about $1,000 notional at the median); sometimes a burst of 2-6 trades hits the
same symbol and side within the same millisecond, walking the price like a market order
sweeping the book. trade_ids are sequential integers per symbol, starting at 1.

Clock: with ``rate`` (trades/s, bursts count as one event) the source paces itself in real
time and stamps ``event_time``/``ingest_time`` with the wall clock. With ``rate=None`` it
runs as fast as possible on a simulated clock that starts at ``SIMULATED_EPOCH`` and advances
by seeded exponential gaps (mean 20 ms, at least 1 ms), so the whole output, timestamps included, is
reproducible for a given seed.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from lakehouse_utils.trades import Rejected, Trade, normalize_symbol, source_stats

EXCHANGE = "synthetic"
SIMULATED_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_START_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
DEFAULT_START_PRICE = 100.0
STEP_VOLATILITY = 0.00005  # log-price stdev per trade (~2%/h at 50 trades/s)
MEDIAN_NOTIONAL = 1_000.0  # quote currency
SIZE_SIGMA = 1.2
BURST_PROBABILITY = 0.05
SIMULATED_MEAN_GAP_S = 0.02


def _tick(price: float) -> float:
    """Round to 6 significant digits (60000.1, 3000.12, 150.123); never 0 for price > 0."""
    return float(f"{price:.6g}")


class SyntheticSource:
    """Reproducible fake trades with the same ``stream``/``stats`` API as KrakenV2Source."""

    def __init__(
        self,
        pairs: list[str] | None = None,
        seed: int = 42,
        rate: float | None = 50.0,
        start_prices: dict[str, float] | None = None,
        n_trades: int | None = None,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0 or None")
        self.pairs = [normalize_symbol(p) for p in (pairs or ["BTC/USD", "ETH/USD"])]
        self.seed = seed
        self.rate = rate
        self.n_trades = n_trades
        given = {normalize_symbol(k): v for k, v in (start_prices or {}).items()}
        self._start_prices = {p: given.get(p, self._default_price(p)) for p in self.pairs}
        self.stats: dict[str, Any] = source_stats()

    @staticmethod
    def _default_price(pair: str) -> float:
        return DEFAULT_START_PRICES.get(pair.split("/")[0], DEFAULT_START_PRICE)

    def stream(self, stop: threading.Event) -> Iterator[Trade | Rejected]:
        """Yield trades until ``stop`` is set or ``n_trades`` were produced."""
        rng = random.Random(self.seed)
        prices = dict(self._start_prices)
        next_id = dict.fromkeys(self.pairs, 1)
        clock = SIMULATED_EPOCH
        started = time.monotonic()
        self.stats["connected"] = True
        try:
            for event in itertools.count():
                if stop.is_set():
                    return
                if self.rate is None:
                    gap = max(0.001, rng.expovariate(1 / SIMULATED_MEAN_GAP_S))
                    clock += timedelta(seconds=gap)
                    now = clock
                else:
                    if stop.wait(max(0.0, started + event / self.rate - time.monotonic())):
                        return
                    now = datetime.now(UTC)
                now = now.replace(microsecond=now.microsecond // 1000 * 1000)
                for trade in self._event(rng, prices, next_id, now):
                    if self.n_trades is not None and self.stats["trades"] >= self.n_trades:
                        return
                    self.stats["trades"] += 1
                    self.stats["last_trade"] = trade
                    yield trade
        finally:
            self.stats["connected"] = False

    def _event(
        self, rng: random.Random, prices: dict[str, float], next_id: dict[str, int], now: datetime
    ) -> list[Trade]:
        """One order: a single print, or a same-millisecond burst on one symbol and side."""
        pair = rng.choice(self.pairs)
        side = rng.choice(("buy", "sell"))
        burst = rng.random() < BURST_PROBABILITY
        count = rng.randint(2, 6) if burst else 1
        ord_type = "market" if burst else rng.choice(("limit", "market"))
        trades = []
        for _ in range(count):
            drift = abs(rng.gauss(0, STEP_VOLATILITY)) * (1 if side == "buy" else -1)
            step = drift if burst else rng.gauss(0, STEP_VOLATILITY)
            prices[pair] *= math.exp(step)
            price = _tick(prices[pair])
            notional = MEDIAN_NOTIONAL * math.exp(rng.gauss(0, SIZE_SIGMA))
            qty = max(round(notional / price, 8), 1e-8)
            trades.append(
                Trade(
                    exchange=EXCHANGE,
                    symbol=pair,
                    trade_id=str(next_id[pair]),
                    price=price,
                    qty=qty,
                    side=side,
                    ord_type=ord_type,
                    event_time=now,
                    ingest_time=now,
                )
            )
            next_id[pair] += 1
        return trades
