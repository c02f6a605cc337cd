"""Missing trade ids: where a venue numbers its trades 1, 2, 3 ... per symbol, a skipped number is a lost trade.

Kraken v2, Coinbase (per product, both feeds) and Binance ``t`` (per symbol) ids are consecutive integers
(:data:`CONSECUTIVE_IDS`). :class:`IdGaps` follows a live source, id by id: it counts the ids skipped per
(exchange, symbol) and keeps their ranges (the latest :data:`MAX_RANGES` per symbol), and tells a repeat (an id
at or below the highest seen, e.g. a snapshot after a reconnect) from a new trade. An id that arrives late inside
a recorded gap fills it. :func:`id_ranges` finds the same ranges in a set of ids at once (``lakehouse check``
on Silver). Each new gap is handed to ``on_gap`` (a :class:`Gap`, with the times of the trades around it): the
gap fill (``kafka/gap_fill.py``) fetches it from the venue's REST history. The ids a fill or a backfill could not
fetch are appended to a ledger (:func:`record_unfilled`, :func:`read_unfilled`) that ``lakehouse check`` lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

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


def range_ids(ranges: Iterable[Range]) -> int:
    """How many ids the inclusive ranges ``[(first, last), ...]`` hold."""
    return sum(b - a + 1 for a, b in ranges)


def id_ranges(ids: Iterable[int] | np.ndarray) -> list[Range]:
    """The ranges of ids missing between the smallest and the largest of ``ids`` (repeats allowed)."""
    u = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64))
    if len(u) < 2:
        return []
    at = np.nonzero(np.diff(u) > 1)[0]
    return [(int(u[i]) + 1, int(u[i + 1]) - 1) for i in at]


class Gap(NamedTuple):
    """Ids ``first`` .. ``last`` of (exchange, symbol) skipped; ``after``: the time of the trade before them,
    ``before``: of the trade after them (None when not known)."""

    exchange: str
    symbol: str
    first: int
    last: int
    after: datetime | None
    before: datetime | None

    @property
    def ids(self) -> int:
        return self.last - self.first + 1


class IdGaps:
    """Per (exchange, symbol): the highest id seen, the ids skipped (counted, ranges kept), repeats told apart.

    It writes ``stats["missing_ids"]`` (all symbols) and ``stats["gaps"]`` (``{"exchange SYMBOL": [(first,
    last), ...]}``, a new dict on every change, so a reader on another thread never sees it half-written).
    """

    def __init__(self, stats: dict[str, Any], on_gap: Callable[[Gap], None] | None = None) -> None:
        self.stats = stats
        self.on_gap = on_gap  # told of each new gap (set it before the stream starts)
        self._highest: dict[tuple[str, str], int] = {}
        self._times: dict[tuple[str, str], datetime] = {}  # the time of the highest id's trade
        self._ranges: dict[tuple[str, str], list[list[int]]] = {}

    def see(self, exchange: str, symbol: str, trade_id: str, *, snapshot: bool = False,
            at: datetime | None = None) -> bool:
        """Record one id (``at``: its trade's time); False if it is a repeat (at or below the highest seen and in
        no gap)."""
        if exchange not in CONSECUTIVE_IDS:
            return True
        tid = numeric_id(trade_id)
        if tid is None:
            return True
        key = (exchange, symbol)
        highest = self._highest.get(key)
        if highest is None or tid == highest + 1:
            self._highest[key] = tid
            if at is not None:
                self._times[key] = at
            return True
        if tid > highest:
            self._add(key, highest + 1, tid - 1)
            self._highest[key] = tid
            before = self._times.get(key)
            if at is not None:
                self._times[key] = at
            if self.on_gap is not None:
                self.on_gap(Gap(exchange, symbol, highest + 1, tid - 1, before, at))
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


# ---- the ledger of ids that could not be filled --------------------------------------------------------------


def record_unfilled(path: Path, exchange: str, symbol: str, ranges: Iterable[Range], why: str, by: str) -> None:
    """Append one line per range to the ledger at ``path`` (``by``: "gap fill" | "backfill")."""
    ranges = list(ranges)
    if not ranges:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with path.open("a", encoding="utf-8") as out:
        for first, last in ranges:
            out.write(json.dumps({"exchange": exchange, "symbol": symbol, "first": int(first), "last": int(last),
                                  "why": why, "by": by, "at": at}, separators=(",", ":")) + "\n")


def read_unfilled(path: Path) -> list[dict[str, Any]]:
    """The ledger's ranges, oldest first (a line cut short by a kill is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


__all__ = ["CONSECUTIVE_IDS", "MAX_RANGES", "Gap", "IdGaps", "id_ranges", "numeric_id", "read_unfilled",
           "record_unfilled", "show_ranges"]
