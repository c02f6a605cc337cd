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
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from math import cos as _cos
from math import exp as _exp
from math import log as _log
from math import sin as _sin
from math import sqrt as _sqrt
from math import tau as _TWOPI
from typing import Any

from .trades import Rejected, Trade, normalize_symbol, source_stats

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


def soak_rate(elapsed_s: float) -> float:
    """The soak's day in miniature, a factor on the base rate, the same in every five minutes (so any five of them
    compare): the third minute starts with a 15-second burst (x5), the fifth is quiet (2 %)."""
    minute = int(elapsed_s // 60) % 5
    if minute == 4:
        return 0.02
    if minute == 2 and elapsed_s % 60 < 15:
        return 5.0
    return 1.0


RATE_PROFILES: dict[str, Callable[[float], float] | None] = {"steady": None, "soak": soak_rate}


class SyntheticSource:
    """Reproducible fake trades with the same ``stream``/``stats`` API as KrakenV2Source."""

    def __init__(
        self,
        pairs: list[str] | None = None,
        seed: int = 42,
        rate: float | None = 50.0,
        start_prices: dict[str, float] | None = None,
        n_trades: int | None = None,
        profile: str = "steady",
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0 or None")
        if profile not in RATE_PROFILES:
            raise ValueError(f"unknown rate profile {profile!r}; choose {' | '.join(RATE_PROFILES)}")
        self.profile = RATE_PROFILES[profile]  # the rate over time (a factor on ``rate``); None: steady
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
        """Yield trades until ``stop`` is set or ``n_trades`` were produced.

        One loop, the random draws inlined (the same draws, in the same order, as ``rng.choice``,
        ``rng.gauss``, ``rng.randint`` and ``rng.expovariate`` would make): at speed "max" the source
        must keep up with a producer sending 100k trades/s.
        """
        rng = random.Random(self.seed)
        rand, bits = rng.random, rng.getrandbits
        normal = _normals(rand).__next__  # rng.gauss(0, 1), stream for stream
        pairs, rate, limit, stats = self.pairs, self.rate, self.n_trades, self.stats
        n_pairs = len(pairs)
        pair_bits = n_pairs.bit_length()
        prices = dict(self._start_prices)
        next_id = dict.fromkeys(pairs, 1)
        lambd = 1 / SIMULATED_MEAN_GAP_S
        clock_us = 0  # simulated time since SIMULATED_EPOCH
        started = time.monotonic()
        due, profile = started, self.profile
        made = stats["trades"]
        stats["connected"] = True
        try:
            for event in itertools.count():
                if stop.is_set():
                    return
                if rate is None:
                    gap = -_log(1.0 - rand()) / lambd  # rng.expovariate(lambd)
                    clock_us += _micros(gap if gap > 0.001 else 0.001)
                    now = SIMULATED_EPOCH + timedelta(0, clock_us // 1_000_000, clock_us % 1_000_000 // 1000 * 1000)
                else:
                    if profile is not None:  # the next order after 1 / (the rate now)
                        due += 1.0 / (rate * profile(due - started))
                    else:
                        due = started + event / rate
                    if stop.wait(max(0.0, due - time.monotonic())):
                        return
                    now = datetime.now(UTC)
                    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
                # One order: a single print, or a same-millisecond burst on one symbol and side.
                index = bits(pair_bits)  # rng.choice(pairs)
                while index >= n_pairs:
                    index = bits(pair_bits)
                pair = pairs[index]
                buy = _coin(bits) == 0  # rng.choice(("buy", "sell"))
                side = "buy" if buy else "sell"
                burst = rand() < BURST_PROBABILITY
                if burst:
                    count = 2 + _below5(bits)  # rng.randint(2, 6)
                    ord_type = "market"
                else:
                    count = 1
                    ord_type = "limit" if _coin(bits) == 0 else "market"  # rng.choice(("limit", "market"))
                for _ in range(count):
                    drift = abs(normal() * STEP_VOLATILITY)
                    if burst:
                        step = drift if buy else -drift
                    else:  # the drift draw above is unused here: kept so a seed gives the stream it always gave
                        step = normal() * STEP_VOLATILITY
                    prices[pair] *= _exp(step)
                    price = _tick(prices[pair])
                    notional = MEDIAN_NOTIONAL * _exp(normal() * SIZE_SIGMA)
                    qty = round(notional / price, 8)
                    trade_id = next_id[pair]
                    next_id[pair] = trade_id + 1
                    if limit is not None and made >= limit:
                        return
                    trade = Trade(EXCHANGE, pair, str(trade_id), price, qty if qty > 1e-8 else 1e-8, side, ord_type,
                                  now, now)
                    made += 1
                    stats["trades"] = made
                    stats["last_trade"] = trade
                    yield trade
        finally:
            stats["connected"] = False


def _micros(seconds: float) -> int:
    """Whole microseconds in ``seconds`` (>= 0), rounded half to even exactly as ``timedelta(seconds=...)`` does."""
    whole = int(seconds)
    return whole * 1_000_000 + round((seconds - whole) * 1e6)


def _normals(rand: Callable[[], float]) -> Iterator[float]:
    """The values ``rng.gauss(0, 1)`` returns, drawing ``rand()`` exactly as it does (two per pair)."""
    while True:
        x2pi = rand() * _TWOPI
        g2rad = _sqrt(-2.0 * _log(1.0 - rand()))
        yield _cos(x2pi) * g2rad
        yield _sin(x2pi) * g2rad


def _coin(bits: Callable[[int], int]) -> int:
    """``rng._randbelow(2)``: 0 or 1, by rejection on 2 bits as ``rng.choice`` of a pair draws it."""
    r = bits(2)
    while r >= 2:
        r = bits(2)
    return r


def _below5(bits: Callable[[int], int]) -> int:
    """``rng._randbelow(5)``, as ``rng.randint(2, 6)`` draws it."""
    r = bits(3)
    while r >= 5:
        r = bits(3)
    return r
