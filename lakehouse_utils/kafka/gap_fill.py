"""Gap fill: the trade ids a live source skipped, fetched from the venue's REST history and sent to the same topic.

A source's :class:`~lakehouse_utils.sources.gaps.IdGaps` tells :class:`GapFiller` of every new gap (ids skipped
between two trades: a reconnect whose snapshot does not reach back far enough, or a jump in the feed); a reconnect's
gap is known, both ends, at the first trade after it. The filler fetches the ids over REST (``sources/backfill.py``:
paged, paced, 429 Retry-After, bounded retries) on a thread of its own with a producer of its own, so the websocket
keeps being read while it waits for the venue, and sends the trades to the trades topic with the header
``source=rest``: Bronze keeps them, Silver's exact dedup on (exchange, symbol, trade_id) absorbs any overlap with
what the stream delivered.

Gold has one watermark: a gap's trades must reach the topic before the stream's event time runs ``hold_s`` past
the gap (the watermark is two minutes behind), else Gold counts them late. :meth:`GapFiller.hold` (called by the
producer thread before each live trade) makes a live trade that much later wait until the pending fills are
delivered. Live, a fill takes a request or two, so the stream rarely waits; a replay at full speed waits for each.
A fill that takes longer than ``max_hold_s`` of wall time (a venue answering 429 with long ``Retry-After``s) no
longer holds the stream: a line says so, and its trades may then count as late in Gold (``lakehouse check``).

Ids the venue cannot serve (or a fill that fails past its retries, a ban, a stop) are reported, never hidden: a
logged line naming the ids and why, counted (``ids_unfilled``, ``unfilled`` per symbol in the producer's status)
and appended to the ledger ``lakehouse check`` lists (``Settings.unfilled_gaps``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..sources.backfill import CLIENTS, rest_client, rest_server
from ..sources.gaps import Gap, range_ids, record_unfilled, show_ranges
from ..sources.rest import RestClient, RestCursor, RestError
from ..sources.trades import Trade
from .trade_producer import TradeProducer

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

SOURCE = "rest"  # the ``source`` header of the trades a fill sends
_FLUSH_POLL_S = 0.5


class GapFiller:
    """Fills the gaps of one source (one venue) on a thread of its own (see the module doc)."""

    def __init__(self, client: RestClient, producer: TradeProducer, *, hold_s: float = 60.0,
                 max_hold_s: float = 120.0, ledger: Path | None = None) -> None:
        self.client, self.producer, self.ledger = client, producer, ledger
        self.hold_for = timedelta(seconds=hold_s)
        self.max_hold_s = max_hold_s
        self._released: set[Gap] = set()  # gaps that held the stream for max_hold_s: it goes on without them
        self.gaps_found = 0
        self.ids_filled = 0
        self.ids_unfilled = 0
        self.unfilled: dict[str, list[tuple[int, int]]] = {}  # "exchange SYMBOL" -> ranges not filled
        self._todo: queue.Queue[Gap | None] = queue.Queue()
        self._open: list[Gap] = []  # found, not yet delivered (read without the lock on the hot path)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- wiring ---------------------------------------------------------------------------------------------

    def attach(self, source: Any) -> bool:
        """Be told of ``source``'s gaps (a source following ids has ``.gaps``, an IdGaps); False if it has none."""
        gaps = getattr(source, "gaps", None)
        if gaps is None or not hasattr(gaps, "on_gap"):
            return False
        gaps.on_gap = self.submit
        return True

    def start(self, stop: threading.Event | None = None) -> GapFiller:
        """Create the topics if missing and start the thread; ``stop`` (the producer thread's) ends a fill early."""
        self.producer.start()
        if stop is not None:
            self._stop = stop
        self._thread = threading.Thread(target=self._run, name=f"gap-fill-{self.client.venue}", daemon=True)
        self._thread.start()
        return self

    def submit(self, gap: Gap) -> None:
        """A new gap (called on the source's thread): queued for the filler's thread."""
        with self._cond:
            self._open.append(gap)
            self.gaps_found += 1
        log.warning("%s %s: %d trade ids missed (%d..%d); filling them over REST", gap.exchange, gap.symbol,
                    gap.ids, gap.first, gap.last)
        self._todo.put(gap)

    def hold(self, event_time: datetime, stop: threading.Event) -> bool:
        """Return once no pending gap is more than ``hold_s`` earlier than ``event_time`` (True), or on stop."""
        if not self._open:
            return True
        deadline = time.monotonic() + self.max_hold_s
        with self._cond:
            while not stop.is_set() and (waiting := [g for g in self._open if self._behind(g, event_time)]):
                if time.monotonic() >= deadline:
                    self._released.update(waiting)
                    log.warning("gap fill of %s still running after %.0f s: the live stream goes on without waiting "
                                "(its trades may be late for Gold)", ", ".join(f"{g.exchange} {g.symbol} "
                                f"{g.first}..{g.last}" for g in waiting), self.max_hold_s)
                    break
                self._cond.wait(0.1)
        return not stop.is_set()

    def _behind(self, gap: Gap, event_time: datetime) -> bool:
        """Is ``event_time`` more than ``hold_s`` past ``gap`` (the time of the trade before it, else after it)?"""
        start = gap.after or gap.before
        return start is not None and event_time > start + self.hold_for and gap not in self._released

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued fills (cut short if the stop is set), then flush and close the producer."""
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        self.producer.close(timeout)

    def counters(self) -> dict[str, Any]:
        with self._cond:
            return {"gaps_found": self.gaps_found, "ids_filled": self.ids_filled, "ids_unfilled": self.ids_unfilled,
                    "unfilled": {k: list(v) for k, v in self.unfilled.items()},
                    "delivery_errors": self.producer.delivery_errors}

    # ---- the thread -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while (gap := self._todo.get()) is not None:
            try:
                self._fill(gap)
            except Exception as exc:  # the filler must not die: the gap is reported and the next one tried
                log.exception("gap fill of %s %s %d..%d failed", gap.exchange, gap.symbol, gap.first, gap.last)
                self._unfilled(gap, [(gap.first, gap.last)], f"{type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self._open.remove(gap)
                    self._released.discard(gap)
                    self._cond.notify_all()

    def _fill(self, gap: Gap) -> None:
        cursor = RestCursor.for_ids(self.client.venue, gap.symbol, gap.first, gap.last, gap.after)
        job = self.client.fetch(cursor, stop=self._stop)
        sent = 0
        try:
            for item in job:
                if isinstance(item, Trade) and self.producer.send(item, SOURCE, self._stop):
                    sent += 1
        except RestError as exc:  # a ban (418): the report holds the rest as unfilled
            log.error("%s", exc)
        self._deliver()
        report = job.report
        with self._cond:
            self.ids_filled += sent
        ranges = list(report.unfilled)
        if sent < report.fetched and not ranges:  # stopped while sending: the unsent ids are not filled
            ranges = [(gap.first, gap.last)]
        if ranges:
            self._unfilled(gap, ranges, report.error or "the venue's history lacks them")
        else:
            log.info("%s %s: gap %d..%d filled over REST: %d trades (%s)", gap.exchange, gap.symbol, gap.first,
                     gap.last, sent, report.line())

    def _deliver(self) -> None:
        """Wait until the fill's trades are in the topic (the held live trades go after them)."""
        while self.producer.flush(_FLUSH_POLL_S) and not self._stop.is_set():
            time.sleep(0)

    def _unfilled(self, gap: Gap, ranges: list[tuple[int, int]], why: str) -> None:
        key = f"{gap.exchange} {gap.symbol}"
        count = range_ids(ranges)
        with self._cond:
            self.ids_unfilled += count
            self.unfilled.setdefault(key, []).extend(ranges)
        log.error("GAP NOT FILLED: %s ids %s (%d of the %d missed) cannot be fetched over REST: %s", key,
                  show_ranges(ranges, 5), count, gap.ids, why)
        if self.ledger is not None:
            record_unfilled(self.ledger, gap.exchange, gap.symbol, ranges, why, "gap fill")


def rest_options(settings: Settings) -> dict[str, Any]:
    """The client settings the Settings override (page size, pacing); the venue's defaults otherwise."""
    values = {"limit": settings.rest_page_size, "min_interval_s": settings.rest_min_interval_s}
    return {k: v for k, v in values.items() if v is not None}


def _noop() -> None:
    return None


def make_filler(settings: Settings, kind: str, venue: str,
                recording: Any = None) -> tuple[GapFiller | None, Callable[[], None]]:
    """The gap fill of a producer thread reading ``venue`` (``kind``: the venue itself, live, or ``replay``) and
    what stops it; None when gap fill is off or the venue has no REST history here. The REST API is
    ``settings.rest_url``, else the venue's live one; a replay's is a local REST replay server of ``recording``
    (None: the bundled hour), so a replay's gaps are filled from the same trades."""
    if not settings.gap_fill or venue not in CLIENTS or kind not in (venue, "replay"):
        return None, _noop
    url, cleanup = settings.rest_url, _noop
    if url is None and kind == "replay":
        server = rest_server(venue, recording).start()
        url, cleanup = server.url, server.stop
    try:
        client = rest_client(venue, url, **rest_options(settings))
        filler = GapFiller(client, TradeProducer.from_settings(settings), hold_s=settings.gap_fill_hold_s,
                           ledger=settings.unfilled_gaps)
    except BaseException:
        cleanup()
        raise
    return filler, cleanup


__all__ = ["SOURCE", "GapFiller", "make_filler", "rest_options"]
