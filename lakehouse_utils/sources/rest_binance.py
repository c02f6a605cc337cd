"""Binance Spot's REST trade history, ``GET /api/v3/historicalTrades?symbol=BTCUSDT&fromId=&limit=``: the replay
server and the client.

The answer is a list, oldest first, of ``{"id", "price", "qty", "quoteQty", "time" (ms), "isBuyerMaker",
"isBestMatch"}`` (``tests/fixtures/venues/binance_rest_historical_trades.json``): ``isBuyerMaker`` true means the
taker sold (``taker.py``). ``fromId``: from that id on; without it, the newest ``limit`` trades. ``limit`` 1..1000
(default 500). No API key since 2023-07; each request weighs 25 of the 6,000 a minute an address may use
(``X-MBX-USED-WEIGHT-1M`` says how much is used), so the client waits ``60 * 25 / 6000 = 0.25`` s between two. 429:
back off for ``Retry-After``; 418: the address is banned (for ``Retry-After`` seconds): stop.

The client pages with ``fromId`` (the next id after the page's last); a time range's first id is found by
galloping and bisecting ids with one-row pages (``rest.locate_id``).
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .fields import TradeFields
from .reencode import decimal_text
from .rest import Page, RestClient, RestCursor, RestSettings, locate_id
from .rest_server import Answer, RestReplayServer, int_param, time_ns
from .taker import binance_buyer_is_maker, binance_taker
from .trades import Rejected, Trade, TradeError, millis_time

PATH = "/api/v3/historicalTrades"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
WEIGHT = 25  # per request
WEIGHT_PER_MINUTE = 6000

HISTORICAL = TradeFields("binance", "symbol", "id", "price", "qty", "isBuyerMaker", "time", binance_taker,
                         lambda value: millis_time(value, "time"))


def _row(t: Trade) -> dict[str, Any]:
    price, qty = decimal_text(t.price), decimal_text(t.qty)
    return {"id": int(t.trade_id), "price": price, "qty": qty,
            "quoteQty": str((Decimal(price) * Decimal(qty)).quantize(Decimal("1e-8"))),
            "time": time_ns(t.event_time) // 1_000_000, "isBuyerMaker": binance_buyer_is_maker(t.side),
            "isBestMatch": True}


class BinanceRestServer(RestReplayServer):
    """Binance Spot's ``/api/v3/historicalTrades`` serving a recording (default: the bundled hour)."""

    venue = "binance"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._weights: deque[float] = deque()

    def _used_weight(self) -> int:
        now = time.monotonic()
        self._weights.append(now)
        while self._weights and self._weights[0] < now - 60:
            self._weights.popleft()
        return WEIGHT * len(self._weights)

    def answer(self, path: str, params: dict[str, str]) -> Answer:
        if path != PATH:
            return Answer(404, {"code": -1, "msg": "Not found."})
        headers = {"X-MBX-USED-WEIGHT-1M": str(self._used_weight())}
        book = self.symbols.get(params.get("symbol", ""))
        if book is None:
            return Answer(400, {"code": -1121, "msg": "Invalid symbol."}, headers)
        limit = int_param(params, "limit", DEFAULT_LIMIT) or 0
        if not 1 <= limit <= MAX_LIMIT:
            return Answer(400, {"code": -1100, "msg": f"Illegal characters found in parameter 'limit'; legal "
                                                     f"range is 1..{MAX_LIMIT}."}, headers)
        from_id = int_param(params, "fromId")
        start = max(0, len(book.trades) - limit) if from_id is None else book.index_of_id(from_id)
        rows = book.trades[start:start + limit]
        return Answer(200, [_row(t) for t in rows], headers, rows=len(rows))

    def rate_limited(self, retry_after_s: int) -> Answer:
        return Answer(429, {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 request weight "
                                                  "per 1 MINUTE."}, {"Retry-After": str(retry_after_s)})


def parse_row(row: Any, symbol_name: str, at: datetime) -> Trade:
    """One REST trade as the Trade the ``@trade`` adapter makes of the same trade (a TradeError if bad)."""
    if not isinstance(row, dict):
        raise TradeError(f"bad_type:item {type(row).__name__}")
    return HISTORICAL.parse({**row, "symbol": symbol_name}, at)


class BinanceRest(RestClient):
    """Trades from Binance Spot's ``/api/v3/historicalTrades`` (live ``https://api.binance.com``)."""

    venue = "binance"
    defaults = RestSettings(min_interval_s=60 * WEIGHT / WEIGHT_PER_MINUTE, limit=MAX_LIMIT)

    def _rows(self, cursor: RestCursor, from_id: int | None, limit: int) -> list[Any]:
        body, _ = self.get(PATH, {"symbol": self.venue_symbol(cursor.symbol), "fromId": from_id, "limit": limit})
        return body if isinstance(body, list) else []

    def _probe(self, cursor: RestCursor, x: int) -> int | None:
        """The time (ns) of the first trade with an id >= x (None: there is none)."""
        rows = self._rows(cursor, x, 1)
        return int(rows[0]["time"]) * 1_000_000 if rows else None

    def start(self, cursor: RestCursor) -> None:
        if cursor.position is not None:
            return
        if cursor.by_ids:
            cursor.position = cursor.next_id
            return
        newest = self._rows(cursor, None, 1)
        if not newest or int(newest[-1]["time"]) * 1_000_000 < (cursor.since_ns or 0):
            cursor.position = int(newest[-1]["id"]) + 1 if newest else 0  # nothing that late yet
            return
        cursor.position = locate_id(lambda x: self._probe(cursor, x), cursor.since_ns or 0, int(newest[-1]["id"]),
                                    self.settings.limit)

    def page(self, cursor: RestCursor) -> Page:
        position = cursor.position or 0
        rows = self._rows(cursor, position, self.settings.limit)
        name, at = self.venue_symbol(cursor.symbol), datetime.now(UTC)
        out: list[tuple[int | None, Trade | Rejected]] = []
        nxt = position
        for row in rows:
            try:
                trade = parse_row(row, name, at)
            except TradeError as exc:
                out.append((None, Rejected(exc.reason, str(row), "binance-rest", at)))
                continue
            out.append((int(trade.trade_id), trade))
            nxt = max(nxt, int(trade.trade_id) + 1)
        return Page(out, nxt, more=len(rows) >= self.settings.limit)


__all__ = ["HISTORICAL", "MAX_LIMIT", "PATH", "BinanceRest", "BinanceRestServer", "parse_row"]
