"""A local REST server that serves a recording's trades the way a venue's history API does: what every venue's
REST replay server shares.

:class:`RestReplayServer` answers HTTP GETs on 127.0.0.1 (port 0: a free port) from a background
``ThreadingHTTPServer``. It holds the trades of a recording (``recording.py``: the same recordings the WebSocket
replay servers play; by default the bundled hour re-encoded for the venue, ``reencode.py``), parsed with the
venue's own WebSocket parser, one per trade id, in id order. A venue's server (``rest_kraken.py``,
``rest_coinbase.py``, ``rest_binance.py``) turns a request into a page (:meth:`RestReplayServer.answer`): its
paging, limits and wire format.

Fault hooks (constructor arguments, or set later on ``server.faults`` from a test, e.g. in a progress callback):
``fail_429=N`` the next N requests get 429 with ``Retry-After: <retry_after_s>``; ``fail_5xx=N`` the next N get
``status_5xx`` (503); ``ban_418=True`` every request gets 418 (Binance's ban) with ``Retry-After``; ``delay_s``
slows every answer. History hooks: ``serve_until=ID`` serves no trade above that id (the venue's history ends
there), ``missing_ids=(first, last)`` (or a list of such) are trades the venue cannot serve, so a client reports
them as unfilled. Every request is logged (:attr:`RestReplayServer.requests`: path, params, status, time, rows).
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .binance import parse_trade as parse_binance_trade
from .coinbase import parse_match
from .recording import Recording, entries
from .reencode import reencode
from .trades import Trade, TradeError, parse_kraken_v2_trade

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
Range = tuple[int, int]


def time_ns(ts: datetime) -> int:
    """Nanoseconds since the epoch of a (microsecond) UTC time, exactly."""
    return (ts - EPOCH) // _US * 1000


def ns_time(ns: int) -> datetime:
    """The UTC time of ``ns`` nanoseconds since the epoch, cut to the microsecond."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def recorded_trades(venue: str, recording: Recording | None = None) -> list[Trade]:
    """The trades of a venue's WebSocket recording (default: the bundled hour re-encoded for ``venue``), each as
    that venue's adapter parses it; frames that are not trades (status, heartbeats) and bad items are left out.
    The bundled hour's are parsed once per process (a Trade is immutable)."""
    if recording is None:
        return list(_bundled_trades(venue))
    return _parse(venue, entries(recording))


@cache
def _bundled_trades(venue: str) -> tuple[Trade, ...]:
    return tuple(_parse(venue, reencode(venue)))


def _parse(venue: str, rows: list[dict[str, Any]]) -> list[Trade]:
    at = datetime.now(UTC)
    out: list[Trade] = []
    for row in rows:
        frame = row.get("frame")
        if not isinstance(frame, dict):
            continue
        if venue == "kraken" and frame.get("channel") == "trade":
            items, parse = frame.get("data") or [], lambda i: parse_kraken_v2_trade(i, ingest_time=at)
        elif venue == "coinbase" and frame.get("type") in ("match", "last_match"):
            items, parse = [frame], lambda i: parse_match(i, at)
        elif venue == "binance" and isinstance(frame.get("data"), dict) and frame["data"].get("e") == "trade":
            items, parse = [frame["data"]], lambda i: parse_binance_trade(i, at)
        else:
            continue
        for item in items:
            try:
                out.append(parse(item))
            except TradeError:
                continue
    return out


@dataclass
class RestFaults:
    """What goes wrong next (counters count down as requests consume them); change them at any time."""

    fail_429: int = 0
    fail_5xx: int = 0
    ban_418: bool = False
    delay_s: float = 0.0
    retry_after_s: int = 1
    status_5xx: int = 503


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server answered: ``at`` is ``time.monotonic()`` when it arrived."""

    path: str
    params: dict[str, str]
    status: int
    at: float
    rows: int


@dataclass
class Answer:
    """A venue's answer to one request: status, JSON body, extra headers, and how many trades it holds."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    rows: int = 0


class SymbolTrades:
    """One symbol's served trades, in id order, with their ids and times for bisection."""

    def __init__(self, trades: list[Trade]) -> None:
        self.trades = trades
        self.ids = [int(t.trade_id) for t in trades]
        self.ns = [time_ns(t.event_time) for t in trades]

    def index_of_id(self, trade_id: int) -> int:
        """The index of the first trade whose id is >= ``trade_id``."""
        return bisect.bisect_left(self.ids, trade_id)

    def index_after_ns(self, ns: int) -> int:
        """The index of the first trade strictly later than ``ns``."""
        return bisect.bisect_right(self.ns, ns)


class RestReplayServer:
    """A venue's REST history API look-alike on a background thread (subclasses speak the venue's API)."""

    venue = "rest"

    def __init__(self, recording: Recording | list[Trade] | None = None, host: str = "127.0.0.1", port: int = 0, *,
                 fail_429: int = 0, fail_5xx: int = 0, ban_418: bool = False, delay_s: float = 0.0,
                 retry_after_s: int = 1, status_5xx: int = 503, serve_until: int | None = None,
                 missing_ids: Range | Iterable[Range] | None = None) -> None:
        self.host, self.port, self.url = host, port, ""
        self.faults = RestFaults(fail_429, fail_5xx, ban_418, delay_s, retry_after_s, status_5xx)
        if recording and isinstance(recording, list) and isinstance(recording[0], Trade):
            trades: list[Trade] = list(recording)  # type: ignore[arg-type]
        else:
            trades = recorded_trades(self.venue, recording)  # type: ignore[arg-type]
        gaps = [missing_ids] if isinstance(missing_ids, tuple) else list(missing_ids or [])
        self.missing: list[Range] = [(int(a), int(b)) for a, b in gaps]
        self.serve_until = serve_until
        self.symbols = self._by_symbol(trades)
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _by_symbol(self, trades: list[Trade]) -> dict[str, SymbolTrades]:
        """Served trades per venue symbol name: one per id, in id order, less the ones the hooks withhold."""
        by_name: dict[str, dict[int, Trade]] = {}
        for t in trades:
            tid = int(t.trade_id)
            if self.serve_until is not None and tid > self.serve_until:
                continue
            if any(a <= tid <= b for a, b in self.missing):
                continue
            by_name.setdefault(t.venue_symbol or t.symbol, {}).setdefault(tid, t)
        return {name: SymbolTrades([ids[i] for i in sorted(ids)]) for name, ids in by_name.items()}

    # --- what a venue's server says ------------------------------------------------------------------------

    def answer(self, path: str, params: dict[str, str]) -> Answer:
        """The venue's answer to ``GET path?params`` (no faults: those come first, here)."""
        raise NotImplementedError

    def rate_limited(self, retry_after_s: int) -> Answer:
        """The venue's 429 (a subclass may say it its own way)."""
        return Answer(429, {"error": "rate limit exceeded"}, {"Retry-After": str(retry_after_s)})

    def banned(self, retry_after_s: int) -> Answer:
        """418: an address banned for ignoring 429s (Binance)."""
        return Answer(418, {"code": -1003, "msg": "Way too many requests; IP banned."},
                      {"Retry-After": str(retry_after_s)})

    # --- serving -----------------------------------------------------------------------------------------------

    def handle(self, target: str) -> tuple[Answer, dict[str, str], str]:
        """Apply the faults, then the venue's answer; log the request."""
        at = time.monotonic()
        split = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        with self._lock:
            faults = self.faults
            if faults.ban_418:
                result = self.banned(faults.retry_after_s)
            elif faults.fail_429 > 0:
                faults.fail_429 -= 1
                result = self.rate_limited(faults.retry_after_s)
            elif faults.fail_5xx > 0:
                faults.fail_5xx -= 1
                result = Answer(faults.status_5xx, {"message": "service unavailable"})
            else:
                result = None
            delay = faults.delay_s
        if delay:
            time.sleep(delay)
        if result is None:
            try:
                result = self.answer(split.path, params)
            except (ValueError, KeyError) as exc:
                result = Answer(400, {"message": f"bad request: {exc}"})
        with self._lock:
            self.requests.append(LoggedRequest(split.path, params, result.status, at, result.rows))
        return result, params, split.path

    def start(self) -> RestReplayServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                result, _, _ = server.handle(self.path)
                body = json.dumps(result.body, separators=(",", ":")).encode()
                self.send_response(result.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in result.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
                return  # the request log is server.requests

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name=f"{self.venue}-rest",
                                        daemon=True)  # polls for shutdown every 50 ms (stop() waits for one)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> RestReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers for the venues' servers -------------------------------------------------------------------

    def trades_of(self, name: str) -> SymbolTrades | None:
        return self.symbols.get(name)

    def statuses(self) -> list[int]:
        """The statuses answered so far, in order."""
        with self._lock:
            return [r.status for r in self.requests]


def int_param(params: dict[str, str], name: str, default: int | None = None) -> int | None:
    """An integer query parameter (ValueError, i.e. a 400, if it is not one)."""
    text = params.get(name)
    if text is None or text == "":
        return default
    return int(text)


__all__ = ["EPOCH", "Answer", "LoggedRequest", "RestFaults", "RestReplayServer", "SymbolTrades", "int_param",
           "ns_time", "recorded_trades", "time_ns"]
