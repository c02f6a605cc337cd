"""Coinbase Exchange's REST trade history, ``GET /products/{product_id}/trades?limit=&after=&before=``: the replay
server and the client.

The answer is a list, **newest first**, of ``{"time", "trade_id", "price", "size", "side"}`` (``side``: the
maker order's side, as on the ``matches`` channel, ``taker.py``); the headers ``CB-BEFORE`` (the page's newest
id) and ``CB-AFTER`` (its oldest id) are the cursors. ``after=X``: the ``limit`` trades just older than id X (ids
below X); ``before=X``: the ``limit`` trades just newer than X (ids above X); neither: the newest. ``limit``
1..1000 (default 1000); an unknown product is a 404 ``{"message": "NotFound"}``. Public endpoints allow 10
requests a second (``min_interval_s = 0.1``).

The client pages forward with ``after`` only (the documented cursor): ``after = position + limit`` returns the ids
``position .. position + limit - 1``. It looks the newest id up first (a page of one) and stops there; a time
range's first id is found by galloping and bisecting ids with one-row pages (``rest.locate_id``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .coinbase import MATCH
from .reencode import decimal_text
from .rest import Page, RestClient, RestCursor, RestSettings, locate_id
from .rest_server import Answer, RestReplayServer, int_param, time_ns
from .taker import coinbase_wire_side
from .trades import Rejected, Trade, TradeError, format_time, iso_time

MAX_LIMIT = 1000


def path_of(product: str) -> str:
    return f"/products/{product}/trades"


def _row(t: Trade) -> dict[str, Any]:
    return {"time": format_time(t.event_time), "trade_id": int(t.trade_id), "price": decimal_text(t.price),
            "size": decimal_text(t.qty), "side": coinbase_wire_side(t.side)}


class CoinbaseRestServer(RestReplayServer):
    """Coinbase Exchange's ``/products/{id}/trades`` serving a recording (default: the bundled hour)."""

    venue = "coinbase"

    def answer(self, path: str, params: dict[str, str]) -> Answer:
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "trades":
            return Answer(404, {"message": "NotFound"})
        book = self.symbols.get(parts[1])
        if book is None:
            return Answer(404, {"message": "NotFound"})
        limit = int_param(params, "limit", MAX_LIMIT) or 0
        if not 1 <= limit <= MAX_LIMIT:
            return Answer(400, {"message": f"limit must be 1..{MAX_LIMIT}"})
        after, before = int_param(params, "after"), int_param(params, "before")
        if after is not None:
            end = book.index_of_id(after)  # ids below `after`
            rows = book.trades[max(0, end - limit):end]
        elif before is not None:
            start = book.index_of_id(before + 1)  # ids above `before`
            rows = book.trades[start:start + limit]
        else:
            rows = book.trades[-limit:]
        rows = rows[::-1]  # newest first
        headers = {"CB-BEFORE": rows[0].trade_id, "CB-AFTER": rows[-1].trade_id} if rows else {}
        return Answer(200, [_row(t) for t in rows], headers, rows=len(rows))

    def rate_limited(self, retry_after_s: int) -> Answer:
        return Answer(429, {"message": "Public rate limit exceeded"}, {"Retry-After": str(retry_after_s)})


def parse_row(row: Any, product: str, at: datetime) -> Trade:
    """One REST trade as the Trade the ``matches`` adapter makes of the same trade (a TradeError if bad)."""
    if not isinstance(row, dict):
        raise TradeError(f"bad_type:item {type(row).__name__}")
    return MATCH.parse({**row, "product_id": product}, at)


class CoinbaseRest(RestClient):
    """Trades from Coinbase Exchange's ``/products/{id}/trades`` (live ``https://api.exchange.coinbase.com``)."""

    venue = "coinbase"
    defaults = RestSettings(min_interval_s=0.1, limit=MAX_LIMIT)

    def __init__(self, url: str, settings: RestSettings | None = None, **overrides: Any) -> None:
        super().__init__(url, settings, **overrides)
        self._end = 0  # the last id this fetch pages to

    def _rows(self, cursor: RestCursor, after: int | None, limit: int) -> list[Any]:
        body, _ = self.get(path_of(self.venue_symbol(cursor.symbol)), {"after": after, "limit": limit})
        return body if isinstance(body, list) else []

    def _probe(self, cursor: RestCursor, x: int) -> int | None:
        """The time (ns) of the newest trade with an id <= x (None: there is none)."""
        rows = self._rows(cursor, x + 1, 1)
        return time_ns(iso_time(rows[0]["time"])) if rows else None

    def start(self, cursor: RestCursor) -> None:
        newest = self._rows(cursor, None, 1)
        newest_id = int(newest[0]["trade_id"]) if newest else 0
        self._end = newest_id if cursor.last_id is None else min(cursor.last_id, newest_id)
        if cursor.position is not None:
            return
        if cursor.by_ids:
            cursor.position = cursor.next_id
        elif not newest or time_ns(iso_time(newest[0]["time"])) < (cursor.since_ns or 0):
            cursor.position = newest_id + 1  # nothing that late yet
        else:
            cursor.position = locate_id(lambda x: self._probe(cursor, x), cursor.since_ns or 0, newest_id,
                                        self.settings.limit)

    def page(self, cursor: RestCursor) -> Page:
        position = cursor.position or 0
        nxt = position + self.settings.limit
        if position > self._end:
            return Page([], position, more=False)
        product, at = self.venue_symbol(cursor.symbol), datetime.now(UTC)
        out: list[tuple[int | None, Trade | Rejected]] = []
        for row in reversed(self._rows(cursor, nxt, self.settings.limit)):
            try:
                trade = parse_row(row, product, at)
            except TradeError as exc:
                out.append((None, Rejected(exc.reason, str(row), "coinbase-rest", at)))
                continue
            out.append((int(trade.trade_id), trade))
        return Page(out, nxt, more=nxt <= self._end)


__all__ = ["MAX_LIMIT", "CoinbaseRest", "CoinbaseRestServer", "parse_row", "path_of"]
