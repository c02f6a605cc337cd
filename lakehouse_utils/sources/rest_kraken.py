"""Kraken's REST trade history, ``GET /0/public/Trades?pair=XBTUSD&since=<ns>&count=<n>``: the replay server and
the client.

The answer (as a real page, ``tests/fixtures/venues/kraken_rest_trades.json``)::

    {"error": [], "result": {"XXBTZUSD": [["10749.40000", "0.00400000", 1561939203.172, "s", "l", "", 1], ...],
                             "last": "1561939203172000000"}}

A row is ``[price, volume, time (s, a JSON number), side "b"/"s" (the taker's), order type "l"/"m", misc,
trade id]``; ``last`` is the last row's time in ns, as a string. ``since`` (ns) is exclusive: the rows strictly
later; without it, the newest ``count`` trades. ``count`` is 1..1000 (default 1000). Errors are a 200 whose
``error`` list is not empty (``EQuery:Unknown asset pair``, ``EAPI:Rate limit exceeded``), as Kraken says them.
The bundled hour was recorded without order types: its rows say ``""`` there, and read back as None.

The client pages by time: the next ``since`` is the last row's time less 1 ns, so trades sharing that instant
are never skipped (the ones already yielded are dropped by id). A gap by ids needs a start time: the cursor's
hint (the time of the trade before the gap) or, without one, a gallop back in time from the newest trade.
Kraken allows about one request a second for this endpoint (``min_interval_s = 1.0``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from .reencode import decimal_text
from .rest import Page, RestClient, RestCursor, RestSettings
from .rest_server import EPOCH, Answer, RestReplayServer, int_param, time_ns
from .trades import (
    Rejected,
    Trade,
    TradeError,
    decimal_field,
    format_time,
    normalize_symbol,
    parse_kraken_v2_trade,
    shown,
)

PATH = "/0/public/Trades"
MAX_COUNT = 1000
_LEGACY = {"BTC": "XBT", "DOGE": "XDG"}  # Kraken REST's asset codes
_FIAT = {"USD", "EUR", "GBP", "JPY", "CAD", "CHF", "AUD"}
_SIDES = {"b": "buy", "s": "sell"}
_ORDER_TYPES = {"l": "limit", "m": "market", "": None}
_GALLOP_S = 60  # the first step back in time when a gap's start must be looked up


def rest_pair(symbol: str) -> str:
    """Kraken REST's ``altname`` of a pair: ``BTC/USD`` -> ``XBTUSD``."""
    base, quote = normalize_symbol(symbol).split("/")
    return _LEGACY.get(base, base) + _LEGACY.get(quote, quote)


def result_key(symbol: str) -> str:
    """The key Kraken files the rows under: ``XXBTZUSD`` for the old fiat pairs, else the altname (``XBTUSDT``)."""
    base, quote = normalize_symbol(symbol).split("/")
    base = _LEGACY.get(base, base)
    if quote in _FIAT and len(base) == 3 and base in ("XBT", "ETH", "LTC", "XRP", "XDG", "XLM", "ETC", "XMR"):
        return f"X{base}Z{quote}"
    return rest_pair(symbol)


def _kraken_row(t: Trade) -> list[Any]:
    seconds, micros = divmod(time_ns(t.event_time) // 1000, 1_000_000)
    order = {"limit": "l", "market": "m"}.get(t.ord_type or "", "")
    return [decimal_text(t.price, 5), decimal_text(t.qty, 8), float(f"{seconds}.{micros:06d}"),
            t.side[0], order, "", int(t.trade_id)]


class KrakenRestServer(RestReplayServer):
    """Kraken's ``/0/public/Trades`` serving a recording (default: the bundled hour)."""

    venue = "kraken"

    def _pair(self, name: str) -> str | None:
        for served in self.symbols:
            if name.upper() in {served, served.replace("/", ""), rest_pair(served), result_key(served)}:
                return served
        return None

    def answer(self, path: str, params: dict[str, str]) -> Answer:
        if path != PATH:
            return Answer(404, {"error": ["EGeneral:Unknown method"]})
        served = self._pair(params.get("pair", ""))
        if served is None:
            return Answer(200, {"error": ["EQuery:Unknown asset pair"]})
        count = min(MAX_COUNT, max(1, int_param(params, "count", MAX_COUNT) or MAX_COUNT))
        since = int_param(params, "since")
        book = self.symbols[served]
        if since is None:
            start = max(0, len(book.trades) - count)
        else:
            start = book.index_after_ns(since)
        rows = book.trades[start:start + count]
        last = str(time_ns(rows[-1].event_time)) if rows else str(since if since is not None else 0)
        body = {"error": [], "result": {result_key(served): [_kraken_row(t) for t in rows], "last": last}}
        return Answer(200, body, rows=len(rows))

    def rate_limited(self, retry_after_s: int) -> Answer:
        return Answer(429, {"error": ["EAPI:Rate limit exceeded"]}, {"Retry-After": str(retry_after_s)})


def parse_row(row: Any, venue_symbol: str, at: datetime) -> Trade:
    """One Kraken REST row as the Trade the v2 WebSocket adapter makes of the same trade (a TradeError if bad)."""
    if not isinstance(row, list) or len(row) < 7:
        raise TradeError(f"bad_type:row {type(row).__name__}")
    price, volume, when, side, order, _, trade_id = row[:7]
    if isinstance(when, float):
        when = Decimal(repr(when))  # the shortest text of the float: the digits Kraken wrote
    if not isinstance(when, Decimal | int) or isinstance(when, bool):
        raise TradeError(f"bad_type:time {shown(when)}")
    if side not in _SIDES:
        raise TradeError(f"unknown_side:{str(side)[:20]}")
    micros = int(Decimal(when) * 1_000_000)  # cut to the microsecond, as the v2 feed's timestamps are
    item = {"symbol": venue_symbol, "side": _SIDES[side], "trade_id": trade_id,
            "price": decimal_field({"price": price}, "price"), "qty": decimal_field({"qty": volume}, "qty"),
            "ord_type": _ORDER_TYPES.get(order, order),
            "timestamp": format_time(EPOCH + timedelta(microseconds=micros))}
    return parse_kraken_v2_trade(item, exchange="kraken", ingest_time=at)


class KrakenRest(RestClient):
    """Trades from Kraken's ``/0/public/Trades`` (live ``https://api.kraken.com`` or a KrakenRestServer)."""

    venue = "kraken"
    defaults = RestSettings(min_interval_s=1.0, limit=MAX_COUNT)

    def parse_json(self, text: bytes) -> Any:
        return json.loads(text, parse_float=Decimal)  # times exactly as sent

    def body_error(self, body: Any) -> tuple[str, str] | None:
        errors = body.get("error") if isinstance(body, dict) else ["EGeneral:not an object"]
        if not errors:
            return None
        text = "; ".join(map(str, errors))
        if "Rate limit" in text or "Too many requests" in text:
            return "rate", text
        if text.startswith(("EService:Unavailable", "EService:Busy")):
            return "retry", text
        return "fail", text

    def _rows(self, cursor: RestCursor, since: int | None, count: int) -> list[Any]:
        body, _ = self.get(PATH, {"pair": rest_pair(cursor.symbol), "since": since, "count": count})
        result = body.get("result") or {}
        rows = next((v for k, v in result.items() if k != "last" and isinstance(v, list)), [])
        return rows

    def start(self, cursor: RestCursor) -> None:
        if cursor.position is not None:
            return
        if cursor.since_ns is not None:
            cursor.position = cursor.since_ns - 1
            return
        cursor.position = self._gallop(cursor, cursor.next_id or 0)

    def _gallop(self, cursor: RestCursor, first: int) -> int:
        """A ``since`` (ns) at or before the trade ``first``: back from the newest trade, twice as far each time."""
        newest = self._rows(cursor, None, 1)
        if not newest:
            return 0
        newest_ns = int(Decimal(newest[-1][2]) * 1_000_000) * 1000
        if int(newest[-1][6]) < first:
            return newest_ns  # the venue has not got there yet: nothing to page
        step, seen = _GALLOP_S * 10**9, None
        while True:
            since = newest_ns - step
            rows = self._rows(cursor, since, 1)
            head = int(rows[0][6]) if rows else None
            if head is None or head <= first or head == seen:
                return since
            seen, step = head, step * 2

    def page(self, cursor: RestCursor) -> Page:
        since = cursor.position
        rows = self._rows(cursor, since, self.settings.limit)
        name, at = self.venue_symbol(cursor.symbol), datetime.now(UTC)
        out: list[tuple[int | None, Trade | Rejected]] = []
        last_ns = since or 0
        for row in rows:
            try:
                trade = parse_row(row, name, at)
            except TradeError as exc:
                out.append((None, Rejected(exc.reason, str(row), "kraken-rest", at)))
                continue
            out.append((int(trade.trade_id), trade))
            last_ns = time_ns(trade.event_time)
        position = last_ns - 1
        if since is not None and position <= since:  # a whole page at one instant: step past it
            position = last_ns
        return Page(out, position, more=len(rows) >= self.settings.limit)


__all__ = ["PATH", "KrakenRest", "KrakenRestServer", "parse_row", "rest_pair", "result_key"]
