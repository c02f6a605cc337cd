"""Fetching trades from a venue's REST history: the engine every venue's client shares (paging, pacing, retries,
the cursor and the report).

A venue's client (``rest_kraken.KrakenRest``, ``rest_coinbase.CoinbaseRest``, ``rest_binance.BinanceRest``; by
name: ``backfill.rest_client``) fetches the trades of a cursor (``rest_cursor.RestCursor``): a range of trade ids
(a gap: the first and the last missing id, from ``gaps.py``) or of time (``since`` inclusive, ``until``
exclusive or None for "up to the newest"). ``client.fetch(cursor)`` returns a :class:`Backfill`; iterating it yields a
:class:`~lakehouse_utils.sources.trades.Trade` per trade (exactly what the venue's WebSocket adapter makes of the
same trade, ``ingest_time`` aside) in id order, or a ``Rejected`` for a row that does not parse, and leaves
``backfill.report`` (``rest_cursor.BackfillReport``) behind.

- **Exactly once, resumable.** The cursor moves on with every trade yielded (``next_id``: no lower id is yielded
  again) and with every page (``position``: where the venue's paging stands). ``cursor.to_json()`` saved after a
  trade was delivered and ``RestCursor.from_json`` later (another process, after kill -9) fetch exactly the rest.
- **Pacing.** At most one request per ``min_interval_s`` (:class:`RestSettings`, per venue; tests shorten it).
- **Errors.** 429: wait ``Retry-After`` (or the backoff when there is none) and retry; 5xx, timeouts and refused
  connections: retry after an exponential backoff; at most ``max_retries`` retries in a row. Past that, or on
  another 4xx, the fetch stops: ``report.error`` says why, and the ids not fetched are in ``report.unfilled``
  (logged as one line). 418 (Binance: the address is banned) stops at once and raises :class:`RestBanned`; the
  client then refuses every further request until the ban's ``Retry-After`` has passed.
- **Unfilled.** Trade ids count 1, 2, 3 ... (``gaps.CONSECUTIVE_IDS``): an id the venue did not serve inside the
  range (or, for a time range, between two trades fetched) is reported in ``report.unfilled``, never hidden.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from .rest_cursor import BackfillProgress, BackfillReport, RestCursor
from .rest_server import time_ns
from .symbols import venue_name
from .trades import Rejected, Trade

log = logging.getLogger(__name__)

Item = Trade | Rejected


class RestError(RuntimeError):
    """A REST fetch that cannot go on; ``report`` (when set) says what was fetched before."""

    def __init__(self, message: str, report: BackfillReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class RestBanned(RestError):
    """The venue banned this address (HTTP 418): stop every request to it until ``until`` (monotonic time)."""

    def __init__(self, message: str, until: float, report: BackfillReport | None = None) -> None:
        super().__init__(message, report)
        self.until = until


class _Failed(Exception):
    """Retries exhausted or a request refused: ends one fetch (the report says why)."""


@dataclass
class RestSettings:
    """How a client paces and retries (per venue defaults in each client; tests shorten the waits)."""

    min_interval_s: float = 1.0  # between two requests
    limit: int = 1000  # rows per page (each venue's maximum)
    max_retries: int = 5  # retries in a row before giving up
    backoff_s: float = 1.0  # the first retry's wait without Retry-After; doubles each time
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0  # a longer Retry-After is not waited for: the fetch stops
    timeout_s: float = 10.0  # per request


@dataclass
class Page:
    """One page as a venue's client read it: rows in id order, where paging goes next, and whether to go on."""

    rows: list[tuple[int | None, Item]]
    position: int
    more: bool


class RestClient:
    """The engine: a venue's client says how to locate the start, read one page and parse a row."""

    venue = "rest"
    defaults = RestSettings()

    def __init__(self, url: str, settings: RestSettings | None = None, **overrides: Any) -> None:
        self.url = url.rstrip("/")
        base = settings or self.defaults
        self.settings = RestSettings(**{**asdict(base), **overrides})
        self._last_request = 0.0
        self._banned_until = 0.0
        self._lock = threading.Lock()
        self.report: BackfillReport | None = None  # the running fetch's report (requests and retries count there)
        self.stop: threading.Event | None = None

    # --- what a venue's client says ------------------------------------------------------------------------

    def venue_symbol(self, symbol: str) -> str:
        """The venue's WebSocket name of ``symbol`` (what its trades carry as ``venue_symbol``)."""
        return venue_name(self.venue, symbol)

    def start(self, cursor: RestCursor) -> None:
        """Get ready to page (look up the newest trade, locate the start of a time range ...): sets ``position``."""
        raise NotImplementedError

    def page(self, cursor: RestCursor) -> Page:
        """Fetch and parse the page at ``cursor.position``."""
        raise NotImplementedError

    def body_error(self, body: Any) -> tuple[str, str] | None:
        """A 200 answer whose body says it failed: ("retry" | "rate" | "fail", message), or None."""
        return None

    # --- fetching ---------------------------------------------------------------------------------------------

    def fetch(self, cursor: RestCursor, progress: Callable[[BackfillProgress], None] | None = None,
              stop: threading.Event | None = None) -> Backfill:
        """The fetch of ``cursor``'s range (moves ``cursor`` on as it goes); iterate it for the trades."""
        if cursor.venue != self.venue:
            raise ValueError(f"a {cursor.venue} cursor given to the {self.venue} client")
        return Backfill(self, cursor, progress, stop)

    def get(self, path: str, params: dict[str, Any]) -> tuple[Any, dict[str, str]]:
        """GET ``path?params`` paced and retried as the settings say: the JSON body and the headers."""
        s, report = self.settings, self.report
        query = urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        retries = 0
        while True:
            if time.monotonic() < self._banned_until:
                raise RestBanned(f"{self.venue}: banned (HTTP 418) for {self._banned_until - time.monotonic():.0f}"
                                 " s more: no request sent", self._banned_until, report)
            self._pace()
            if report is not None:
                report.requests += 1
            status, headers, body, why = self._request(url)
            if status == 200:
                trouble = self.body_error(body)
                if trouble is None:
                    return body, headers
                kind, why = trouble
                if kind == "fail":
                    raise _Failed(f"{self.venue} refused {path}: {why}")
                status = 429 if kind == "rate" else 503  # said in the body (Kraken): as the status would
            if status == 418:
                wait = retry_after(headers) or 0.0
                self._banned_until = time.monotonic() + wait
                raise RestBanned(f"{self.venue} answered 418: this address is banned for {wait:.0f} s"
                                 f" (too many requests); stopped, nothing more is requested", self._banned_until,
                                 report)
            if status is not None and status != 429 and status < 500:
                raise _Failed(f"HTTP {status} for {path}: {why}")
            retries += 1
            if retries > s.max_retries:
                raise _Failed(f"{why} (HTTP {status or 'no answer'}) after {s.max_retries} retries")
            wait = retry_after(headers) if status == 429 else None
            if wait is None:
                wait = min(s.max_backoff_s, s.backoff_s * 2 ** (retries - 1))
            if wait > s.max_retry_after_s:
                raise _Failed(f"HTTP {status}: Retry-After {wait:.0f} s is longer than {s.max_retry_after_s:.0f} s")
            if report is not None:
                report.retries += 1
            log.warning("%s: %s (HTTP %s); retry %d/%d in %.2f s", self.venue, why, status, retries,
                        s.max_retries, wait)
            self._sleep(wait)

    def _request(self, url: str) -> tuple[int | None, dict[str, str], Any, str]:
        """One GET: (status or None when there was no answer, headers, parsed body, what went wrong)."""
        try:
            with urllib.request.urlopen(url, timeout=self.settings.timeout_s) as answer:  # noqa: S310 (http(s) only)
                text = answer.read()
                return answer.status, dict(answer.headers.items()), self.parse_json(text), "ok"
        except urllib.error.HTTPError as exc:
            text = exc.read()
            return exc.code, dict(exc.headers.items()), None, text.decode("utf-8", "replace")[:200]
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            return None, {}, None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        except ValueError as exc:  # a 200 whose body is not JSON
            return 502, {}, None, f"bad JSON: {exc}"

    def parse_json(self, text: bytes) -> Any:
        return json.loads(text)

    def _pace(self) -> None:
        with self._lock:
            wait = self._last_request + self.settings.min_interval_s - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            self._last_request = time.monotonic()

    def _sleep(self, seconds: float) -> None:
        if self.stop is not None:
            if self.stop.wait(seconds):
                raise _Failed("stopped")
        else:
            time.sleep(seconds)


def retry_after(headers: dict[str, str]) -> float | None:
    """``Retry-After`` in seconds (a number, or an HTTP date), or None."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class Backfill:
    """One fetch: iterate it for the trades; ``report`` and ``cursor`` say where it stands (see the module)."""

    def __init__(self, client: RestClient, cursor: RestCursor,
                 progress: Callable[[BackfillProgress], None] | None, stop: threading.Event | None) -> None:
        self.client, self.cursor, self.progress, self.stop = client, cursor, progress, stop
        self.report = BackfillReport(cursor.venue, cursor.symbol, cursor.describe())
        self._last_time: datetime | None = None

    def __iter__(self) -> Iterator[Item]:
        client, cursor, report = self.client, self.cursor, self.report
        client.report, client.stop = report, self.stop
        try:
            if not cursor.done:
                yield from self._pages()
            report.complete = cursor.done
        except _Failed as exc:
            report.error = str(exc)
        except RestBanned as exc:
            report.error, report.banned = str(exc), True
            self._close()
            log.error("%s", report.line())
            raise
        self._close()
        if report.unfilled or report.error:
            log.error("%s", report.line())
        else:
            log.info("%s", report.line())

    def _close(self) -> None:
        cursor, report = self.cursor, self.report
        if cursor.by_ids and not cursor.done and cursor.next_id is not None and cursor.last_id is not None \
                and cursor.next_id <= cursor.last_id and report.error:
            report.unfilled.append((cursor.next_id, cursor.last_id))

    def _pages(self) -> Iterator[Item]:
        client, cursor, report = self.client, self.cursor, self.report
        client.start(cursor)
        while not cursor.done:
            page = client.page(cursor)
            report.pages += 1
            finished = False
            for tid, item in page.rows:
                if isinstance(item, Rejected):
                    report.rejected += 1
                    yield item
                    continue
                if tid is None or (cursor.next_id is not None and tid < cursor.next_id):
                    continue  # yielded before (pages overlap, or a resumed fetch)
                ns = time_ns(item.event_time)
                if cursor.since_ns is not None and not cursor.by_ids and ns < cursor.since_ns:
                    continue
                if (cursor.last_id is not None and tid > cursor.last_id) or \
                        (cursor.until_ns is not None and ns >= cursor.until_ns):
                    finished = True
                    break
                if cursor.next_id is not None and tid > cursor.next_id:
                    report.unfilled.append((cursor.next_id, tid - 1))
                cursor.next_id, cursor.yielded = tid + 1, cursor.yielded + 1
                report.fetched += 1
                report.first_id = tid if report.first_id is None else report.first_id
                report.last_id, self._last_time = tid, item.event_time
                yield item
            cursor.position = page.position
            if finished or not page.more or (cursor.last_id is not None and cursor.next_id is not None
                                             and cursor.next_id > cursor.last_id):
                if cursor.by_ids and cursor.next_id is not None and cursor.last_id is not None \
                        and cursor.next_id <= cursor.last_id:
                    report.unfilled.append((cursor.next_id, cursor.last_id))  # the venue's history ends first
                    cursor.next_id = cursor.last_id + 1
                cursor.done = True
            if self.progress is not None:
                self.progress(BackfillProgress(report.pages, report.fetched, report.last_id, self._last_time))


def locate_id(probe: Callable[[int], int | None], since_ns: int, newest_id: int, window: int) -> int:
    """An id from which to page forward for the trades at ``since_ns`` or later: no earlier trade has a higher id,
    and it is at most ``window`` ids below the first one that is that late.

    ``probe(x)``: the time (ns) of the venue's trade nearest id ``x`` (None: no trade there, i.e. before the
    history); monotonic in ``x``. Gallops down from the newest id in steps of ``window``, ``2 window`` ..., then
    bisects.
    """
    hi, step = newest_id, window
    lo = hi - step
    while lo > 0:
        t = probe(lo)
        if t is None or t < since_ns:
            break
        hi, step = lo, step * 2
        lo = hi - step
    lo = max(lo, 0)
    while hi - lo > window:
        mid = (lo + hi) // 2
        t = probe(mid)
        if t is None or t < since_ns:
            lo = mid
        else:
            hi = mid
    return lo


# BackfillProgress, BackfillReport and RestCursor live in rest_cursor.py: named here too, for one import
__all__ = ["Backfill", "BackfillProgress", "BackfillReport", "Page", "RestBanned", "RestClient", "RestCursor",
           "RestError", "RestSettings", "locate_id", "retry_after"]
