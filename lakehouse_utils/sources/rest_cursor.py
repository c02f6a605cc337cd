"""What a REST fetch hands over and takes back: the resumable :class:`RestCursor`, the :class:`BackfillReport` and
the :class:`BackfillProgress` a progress callback gets (``rest.py`` does the fetching).

A cursor is plain data (JSON through :meth:`RestCursor.to_json` / :meth:`RestCursor.from_json`, a ``"version"``
inside) so that a backfill can save it in its checkpoint directory after every delivered trade and pick up there
after kill -9.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import NamedTuple

from .gaps import range_ids, show_ranges
from .rest_server import ns_time, time_ns
from .trades import format_time, normalize_symbol

Range = tuple[int, int]


@dataclass
class RestCursor:
    """Where a fetch stands (JSON-able, to resume it): see the module's docstring.

    ``next_id``: no trade with a lower id is yielded (ids mode: the first id wanted); ``last_id``: the last id wanted
    (ids mode); ``since_ns`` / ``until_ns``: times wanted (ns since the epoch, ``until`` exclusive; in ids mode
    ``since_ns`` is an optional hint: the time of the last trade before the gap); ``position``: the venue's paging
    position (Kraken: its ``since`` in ns; Coinbase, Binance: the next id to ask for); ``yielded``: trades yielded so
    far; ``done``: the whole range was fetched.
    """

    venue: str
    symbol: str
    next_id: int | None = None
    last_id: int | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    position: int | None = None
    yielded: int = 0
    done: bool = False

    @classmethod
    def for_ids(cls, venue: str, symbol: str, first: int, last: int, after: datetime | None = None) -> RestCursor:
        """The trades ``first`` .. ``last`` (inclusive); ``after``: the time of the trade before ``first``, if known
        (Kraken pages by time, so it saves looking the id up)."""
        if first > last:
            raise ValueError(f"empty id range {first}..{last}")
        return cls(venue, normalize_symbol(symbol), next_id=first, last_id=last,
                   since_ns=None if after is None else time_ns(after))

    @classmethod
    def for_time(cls, venue: str, symbol: str, since: datetime, until: datetime | None = None) -> RestCursor:
        """The trades at ``since`` or later and before ``until`` (None: up to the newest)."""
        if until is not None and until <= since:
            raise ValueError(f"empty time range {format_time(since)}..{format_time(until)}")
        return cls(venue, normalize_symbol(symbol), since_ns=time_ns(since),
                   until_ns=None if until is None else time_ns(until))

    @property
    def by_ids(self) -> bool:
        return self.last_id is not None

    def to_json(self) -> str:
        return json.dumps({"version": 1, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RestCursor:
        data = json.loads(text)
        if data.pop("version", None) != 1:
            raise ValueError(f"not a version 1 REST cursor: {text[:80]!r}")
        return cls(**data)

    def describe(self) -> str:
        if self.by_ids:
            return f"ids {self.next_id}..{self.last_id}"
        until = "newest" if self.until_ns is None else format_time(ns_time(self.until_ns))
        since = "?" if self.since_ns is None else format_time(ns_time(self.since_ns))
        return f"time {since}..{until}"


@dataclass
class BackfillReport:
    """What one fetch did: the range asked for, trades fetched, pages and requests, retries, ids not filled."""

    venue: str
    symbol: str
    requested: str
    fetched: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    rejected: int = 0
    first_id: int | None = None
    last_id: int | None = None
    unfilled: list[Range] = field(default_factory=list)
    complete: bool = False  # the whole range was gone through (unfilled ids may remain: the venue lacks them)
    error: str | None = None
    banned: bool = False

    @property
    def unfilled_ids(self) -> int:
        return range_ids(self.unfilled)

    def line(self) -> str:
        """One line for a log or a progress display."""
        text = (f"{self.venue} {self.symbol} {self.requested}: {self.fetched} trades"
                f" ({self.first_id}..{self.last_id}) in {self.pages} pages, {self.requests} requests,"
                f" {self.retries} retries")
        if self.unfilled:
            text += f"; cannot fill {self.unfilled_ids} ids: {show_ranges(self.unfilled)}"
        if self.error:
            text += f"; stopped: {self.error}"
        return text


class BackfillProgress(NamedTuple):
    """Handed to the progress callback after every page."""

    pages: int
    trades: int
    last_id: int | None
    last_time: datetime | None


__all__ = ["BackfillProgress", "BackfillReport", "Range", "RestCursor"]
