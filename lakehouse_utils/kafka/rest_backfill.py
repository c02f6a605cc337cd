"""``lakehouse backfill``: a venue's trade history over REST, paged, into the trades topic, resumable after kill -9.

:func:`run_backfill` fetches the trades of a time range (``sources/backfill.py``: paging, pacing, 429 Retry-After,
bounded retries) and sends them to the trades topic with the header ``source=rest``, the way gap fill does; the
pipeline takes them on to Bronze, Silver and Gold. After every page it waits until the page's trades are
acknowledged by the broker, then saves the cursor (``RestCursor``) atomically (a temporary file renamed over the
old one) in ``<checkpoints>/backfill/``, one file per venue, pair and range as given. A run that finds an
unfinished cursor there resumes from it (after kill -9, at most the page that was being sent is sent again, and
Silver's dedup absorbs it); one that finds a finished cursor says so and sends nothing. A relative range (``--since
6h``) is pinned when the backfill starts; run again after it finished, it fetches only what came after it.

Ids the venue cannot serve are reported: a line, ``result.unfilled_ids``, and the ledger ``lakehouse check``
lists (``Settings.unfilled_gaps``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..sources.backfill import rest_client
from ..sources.gaps import range_ids, record_unfilled, show_ranges
from ..sources.rest import BackfillProgress, BackfillReport, RestCursor, RestError
from ..sources.rest_server import time_ns
from ..sources.trades import Trade, format_time, normalize_symbol
from .gap_fill import SOURCE, rest_options
from .trade_producer import TradeProducer

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class BackfillError(RuntimeError):
    """A page's trades could not all be delivered: the cursor stays before it."""


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``6h`` / ``30m`` / ``2d`` / ``90s`` before ``now``, or an ISO time (``Z`` or an offset; none means UTC)."""
    match = _RELATIVE.match(text)
    if match:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected a duration back from now (6h, 30m, 2d) or an ISO time, got {text!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def is_relative(text: str | None) -> bool:
    return text is not None and _RELATIVE.match(text) is not None


@dataclass
class BackfillResult:
    venue: str
    symbol: str
    range: str  # the range fetched, as absolute times
    path: Path  # the cursor file
    sent: int = 0  # trades sent by this run
    pages: int = 0
    resumed: bool = False  # an unfinished cursor was picked up
    already_done: bool = False  # the range was finished before: nothing sent
    done: bool = False  # the whole range is fetched and delivered
    total: int = 0  # trades of the range delivered, over every run
    unfilled: list[tuple[int, int]] = field(default_factory=list)
    error: str | None = None
    report: BackfillReport | None = None

    @property
    def unfilled_ids(self) -> int:
        return range_ids(self.unfilled)

    def line(self) -> str:
        head = f"backfill {self.venue} {self.symbol} {self.range}"
        if self.already_done:
            return f"{head}: already finished ({self.total:,} trades): nothing sent"
        text = (f"{head}: {'finished' if self.done else 'NOT finished'}{' (resumed)' if self.resumed else ''}; "
                f"{self.sent:,} trades sent in {self.pages} pages by this run, {self.total:,} in all")
        if self.unfilled:
            text += f"; {self.unfilled_ids:,} ids NOT filled ({show_ranges(self.unfilled, 5)})"
        if self.error:
            text += f"; stopped: {self.error} (run the same command again to resume)"
        return text


def cursor_path(settings: Settings, venue: str, symbol: str, since: str, until: str | None) -> Path:
    """The cursor file of a backfill of ``venue``'s ``symbol`` over the range as given (``6h`` stays ``6h``)."""
    name = re.sub(r"[^A-Za-z0-9.]+", "_", f"{venue}-{symbol}-{since}-{until or 'newest'}").strip("_")
    return settings.backfills / f"{name}.json"


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader (a restart after kill -9) sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(json.dumps(state, separators=(",", ":")))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _state(cursor: RestCursor, total: int, end_ns: int | None) -> dict[str, Any]:
    return {"cursor": json.loads(cursor.to_json()), "delivered": total, "end_ns": end_ns}


def _range(cursor: RestCursor) -> str:
    return cursor.describe().removeprefix("time ")


def _next_window(old: RestCursor, end_ns: int | None, since: datetime, until: datetime | None,
                 venue: str, symbol: str) -> RestCursor | None:
    """After a finished relative backfill: the new range less what the old one fetched (None: nothing new)."""
    old_end = old.until_ns if old.until_ns is not None else end_ns
    cursor = RestCursor.for_time(venue, symbol, since, until) if until is None or until > since else None
    if cursor is None or old_end is None or cursor.since_ns is None or cursor.since_ns > old_end:
        return cursor
    cursor.since_ns, cursor.next_id = old_end, old.next_id  # on from where the old one ended, no id twice
    if cursor.until_ns is not None and cursor.until_ns <= old_end:
        return None
    return cursor


def run_backfill(settings: Settings, venue: str, pair: str, since: str, until: str | None = None,
                 url: str | None = None, progress: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None) -> BackfillResult:
    """Backfill ``venue``'s ``pair`` from ``since`` to ``until`` (None: the newest) into the trades topic (see the
    module doc); ``url``: the REST API (default ``settings.rest_url``, else the venue's live one)."""
    symbol = normalize_symbol(pair)
    path = cursor_path(settings, venue, symbol, since, until)
    say = progress or (lambda _line: None)
    state = json.loads(path.read_text()) if path.exists() else None
    total, end_ns, resumed = 0, None, False
    if state is not None:
        cursor = RestCursor.from_json(json.dumps(state["cursor"]))
        total, end_ns = int(state.get("delivered", 0)), state.get("end_ns")
        if cursor.done and (is_relative(since) or until is None):
            new = _next_window(cursor, end_ns, parse_when(since), parse_when(until) if until else None, venue, symbol)
            if new is None:
                return BackfillResult(venue, symbol, _range(cursor), path, already_done=True, done=True, total=total)
            cursor, total = new, 0
        elif cursor.done:
            return BackfillResult(venue, symbol, _range(cursor), path, already_done=True, done=True, total=total)
        else:
            resumed = True
    else:
        cursor = RestCursor.for_time(venue, symbol, parse_when(since), parse_when(until) if until else None)
    save_state(path, _state(cursor, total, end_ns))  # pins a relative range before the first request
    result = BackfillResult(venue, symbol, _range(cursor), path, resumed=resumed, total=total)
    if resumed:
        say(f"resuming {result.range} at id {cursor.next_id} ({total:,} trades delivered before)")
    client = rest_client(venue, url or settings.rest_url, **rest_options(settings))
    producer = TradeProducer.from_settings(settings).start()
    last: list[Trade] = []

    def delivered(page: BackfillProgress) -> None:
        """After each page: wait for the broker's acks, then save the cursor (the page is in the topic)."""
        nonlocal end_ns
        errors = producer.delivery_errors
        while producer.flush(1.0):
            if stop is not None and stop.is_set():
                raise BackfillError("stopped before the page was delivered")
        if producer.delivery_errors > errors:
            raise BackfillError(f"{producer.delivery_errors - errors} trades of page {page.pages} not delivered "
                                f"({producer.last_error})")
        result.total = total + result.sent
        result.pages = page.pages
        if last:
            end_ns = time_ns(last[-1].event_time)
        save_state(path, _state(cursor, result.total, end_ns))
        when = format_time(page.last_time) if page.last_time else "-"
        say(f"backfill {venue} {symbol}: page {page.pages}, {result.sent:,} trades sent and delivered by this run "
            f"({result.total:,} in all), up to id {page.last_id} @ {when}")

    job = client.fetch(cursor, delivered, stop)
    try:
        for item in job:
            if isinstance(item, Trade):
                if not producer.send(item, SOURCE, stop):
                    break
                result.sent += 1
                last[:] = [item]
            elif not producer.reject(item, stop):
                break
    except (BackfillError, RestError) as exc:
        result.error = str(exc)
    finally:
        producer.close(30.0)
    report = result.report = job.report
    result.error = result.error or report.error
    result.done = cursor.done and result.error is None
    result.unfilled = list(report.unfilled)
    if result.unfilled:
        why = report.error or "the venue's history lacks them"
        log.error("BACKFILL GAP: %s %s ids %s (%d) cannot be fetched over REST: %s", venue, symbol,
                  show_ranges(result.unfilled, 5), result.unfilled_ids, why)
        record_unfilled(settings.unfilled_gaps, venue, symbol, result.unfilled, why, "backfill")
    return result


__all__ = ["BackfillError", "BackfillResult", "cursor_path", "is_relative", "parse_when", "run_backfill",
           "save_state"]
