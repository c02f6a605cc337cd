"""Missing trade ids: where a venue numbers its trades 1, 2, 3 ... per symbol, a skipped number is a lost trade.

Kraken v2, Coinbase (per product, both feeds) and Binance ``t`` (per symbol) ids are consecutive integers
(:data:`CONSECUTIVE_IDS`). :class:`IdGaps` follows a live source, id by id: it counts the ids skipped per
(exchange, symbol) and keeps their ranges (the latest :data:`MAX_RANGES` per symbol), and tells a repeat (an id
at or below the highest seen, e.g. a snapshot after a reconnect) from a new trade. An id that arrives late inside
a recorded gap fills it. :func:`id_ranges` finds the same ranges in a set of ids at once (``lakehouse check``
on Silver). Filling a gap (the venue's REST history) is not done here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

CONSECUTIVE_IDS = frozenset({"kraken", "coinbase", "binance"})  # exchanges whose trade ids count 1, 2, 3 ...
MAX_RANGES = 100  # ranges kept per symbol (the count of missing ids stays exact)
_MAX_DIGITS = 18  # an id longer than this is not a counter (and would not fit an int64)

Range = tuple[int, int]


def numeric_id(trade_id: str) -> int | None:
    """The id as an int when it is plain ASCII digits, else None."""
    if len(trade_id) > _MAX_DIGITS or not (trade_id.isascii() and trade_id.isdigit()):
        return None
    return int(trade_id)


def show_ranges(ranges: Iterable[Range], limit: int = 3) -> str:
    """``"101..103, 250"`` (the first ``limit``, then ``+N more``)."""
    ranges = list(ranges)
    text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in ranges[:limit])
    return text + (f" +{len(ranges) - limit} more" if len(ranges) > limit else "")


def id_ranges(ids: Iterable[int] | np.ndarray) -> list[Range]:
    """The ranges of ids missing between the smallest and the largest of ``ids`` (repeats allowed)."""
    u = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64))
    if len(u) < 2:
        return []
    at = np.nonzero(np.diff(u) > 1)[0]
    return [(int(u[i]) + 1, int(u[i + 1]) - 1) for i in at]


class IdGaps:
    """Per (exchange, symbol): the highest id seen, the ids skipped (counted, ranges kept), repeats told apart.

    It writes ``stats["missing_ids"]`` (all symbols) and ``stats["gaps"]`` (``{"exchange SYMBOL": [(first,
    last), ...]}``, a new dict on every change, so a reader on another thread never sees it half-written).
    """

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        self._highest: dict[tuple[str, str], int] = {}
        self._ranges: dict[tuple[str, str], list[list[int]]] = {}

    def see(self, exchange: str, symbol: str, trade_id: str, *, snapshot: bool = False) -> bool:
        """Record one id; False if it is a repeat (at or below the highest seen and in no gap)."""
        if exchange not in CONSECUTIVE_IDS:
            return True
        tid = numeric_id(trade_id)
        if tid is None:
            return True
        key = (exchange, symbol)
        highest = self._highest.get(key)
        if highest is None or tid == highest + 1:
            self._highest[key] = tid
            return True
        if tid > highest:
            self._add(key, highest + 1, tid - 1)
            self._highest[key] = tid
            return True
        if key in self._ranges and self._fill(key, tid):
            return True
        if snapshot:
            self.stats["snapshot_repeats"] += 1
        return False

    def _add(self, key: tuple[str, str], first: int, last: int) -> None:
        ranges = self._ranges.setdefault(key, [])
        ranges.append([first, last])
        del ranges[:-MAX_RANGES]
        self.stats["missing_ids"] += last - first + 1
        self._publish()

    def _fill(self, key: tuple[str, str], tid: int) -> bool:
        ranges = self._ranges[key]
        for i, (first, last) in enumerate(ranges):
            if first <= tid <= last:
                ranges[i : i + 1] = [r for r in ([first, tid - 1], [tid + 1, last]) if r[0] <= r[1]]
                self.stats["missing_ids"] -= 1
                self._publish()
                return True
        return False

    def _publish(self) -> None:
        self.stats["gaps"] = {f"{ex} {sym}": [(a, b) for a, b in ranges]
                              for (ex, sym), ranges in self._ranges.items() if ranges}


__all__ = ["CONSECUTIVE_IDS", "MAX_RANGES", "IdGaps", "id_ranges", "numeric_id", "show_ranges"]
