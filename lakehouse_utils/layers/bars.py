"""Exact bar algebra in plain Python: fold bar fragments, roll 1-minute fragments up, decide finality.

A :class:`Bar` is the OHLCV state of one (exchange, symbol, bar_start) over some set of trades.  Two bars of
the same key over disjoint trades fold into the bar of their union (:meth:`Bar.fold`): high/low by max/min,
volumes and counts add up, open/close come from the first/last trade by the order key
``(event_time, len(trade_id), trade_id)`` (numeric ids compare as numbers).  Folding is associative and
commutative, so a 5-minute or 1-hour bar rolled up from 1-minute fragments (:func:`roll_up`) is the bar of
the same trades computed directly; only the float sums may differ in their last bits.

Times are integer microseconds since the epoch (UTC), so nothing here depends on a time zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

OrderKey = tuple[int, int, str]  # (event time us, len(trade_id), trade_id)
Key = tuple[str, str, int]  # (exchange, symbol, bar_start us)
US = 1_000_000


@dataclass(frozen=True, slots=True)
class Bar:
    exchange: str
    symbol: str
    start_us: int
    seconds: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    notional: float
    trades: int
    buy_volume: float
    sell_volume: float
    first: OrderKey
    last: OrderKey
    updated_us: int = 0

    @property
    def key(self) -> Key:
        return (self.exchange, self.symbol, self.start_us)

    @property
    def end_us(self) -> int:
        return self.start_us + self.seconds * US

    @property
    def vwap(self) -> float:
        return self.notional / self.volume if self.volume else float("nan")

    def fold(self, other: Bar) -> Bar:
        """This bar and ``other`` (same key, other trades) as one bar."""
        if other.key != self.key or other.seconds != self.seconds:
            raise ValueError(f"cannot fold {other.key} into {self.key}")
        a_first, b_last = other.first < self.first, other.last > self.last
        return replace(
            self,
            open=other.open if a_first else self.open,
            first=other.first if a_first else self.first,
            close=other.close if b_last else self.close,
            last=other.last if b_last else self.last,
            high=max(self.high, other.high),
            low=min(self.low, other.low),
            volume=self.volume + other.volume,
            notional=self.notional + other.notional,
            trades=self.trades + other.trades,
            buy_volume=self.buy_volume + other.buy_volume,
            sell_volume=self.sell_volume + other.sell_volume,
            updated_us=max(self.updated_us, other.updated_us),
        )

    def at(self, seconds: int) -> Bar:
        """This fragment re-keyed to the ``seconds`` bar that contains it (for a roll-up)."""
        step = seconds * US
        return replace(self, start_us=self.start_us - self.start_us % step, seconds=seconds)


def fold_all(bars: Iterable[Bar], into: dict[Key, Bar] | None = None) -> dict[Key, Bar]:
    """Fold ``bars`` by key into ``into`` (a new dict if None); returns it."""
    out = {} if into is None else into
    for b in bars:
        prev = out.get(b.key)
        out[b.key] = b if prev is None else prev.fold(b)
    return out


def roll_up(fragments: Iterable[Bar], seconds: int) -> dict[Key, Bar]:
    """Bars of ``seconds`` from finer fragments (e.g. 1-minute fragments -> 1-hour bars)."""
    return fold_all(f.at(seconds) for f in fragments)


def split_final(state: dict[Key, Bar], watermark_us: int | None) -> list[Bar]:
    """Remove and return the bars of ``state`` that the watermark has passed (``bar_end <= watermark``)."""
    if watermark_us is None:
        return []
    done = [k for k, b in state.items() if b.end_us <= watermark_us]
    return [state.pop(k) for k in done]
