"""Binance Spot trade adapter: ``<symbol>@trade`` on the combined stream (``wss://stream.binance.com:9443/stream``).

``BinanceSource(pairs).stream(stop)`` connects, sends ``SUBSCRIBE`` for ``btcusdt@trade`` ... and yields a
:class:`Trade` per print (``exchange = "binance"``). Binance's names have no separator, so ``BTCUSDT`` is looked
up in the bundled symbol table (``symbols.py``): a name it does not hold is not guessed, its trade goes to the
dead-letter topic as ``unknown_symbol:binance:<NAME>``, and a pair it does not hold is refused when the source is
made. ``m`` = "is the buyer the market maker?": ``m=true`` means the taker sold (``taker.py``).

Keep-alive: the server pings every 20 s and closes a connection that does not answer within a minute; pongs
are sent at once (``ws.FrameReader``). A connection lives at most 24 h: the source renews its own after
``max_connection_s`` (23 h 50 min by default), and at once when the server announces ``serverShutdown``. Binance
sends no snapshot, so the trades of the instant between two connections are lost: ``t`` is consecutive per
symbol, and the ids skipped are counted (``stats["missing_ids"]``, ``gaps.py``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from .fields import TradeFields
from .symbols import venue_name
from .taker import binance_taker
from .trades import Rejected, Trade, millis_time
from .ws import WebSocketSource, clip

log = logging.getLogger(__name__)

EXCHANGE = "binance"
BINANCE_URL = "wss://stream.binance.com:9443/stream"
MAX_CONNECTION_S = 23 * 3600 + 50 * 60  # renew 10 minutes before Binance's 24 h limit


def stream_name(name: str) -> str:
    """The trade stream of a Binance symbol name: ``BTCUSDT`` -> ``btcusdt@trade``."""
    return f"{name.lower()}@trade"


TRADE = TradeFields(EXCHANGE, "s", "t", "p", "q", "m", "T", binance_taker, lambda value: millis_time(value, "T"))


def parse_trade(data: Any, ingest_time: datetime) -> Trade:
    """The ``data`` of a ``trade`` event: ``s`` symbol, ``t`` id, ``p`` price, ``q`` qty, ``m``, ``T`` time (ms)."""
    return TRADE.parse(data, ingest_time)


class BinanceSource(WebSocketSource):
    """Trades from Binance Spot's combined stream (live, or a BinanceReplayServer)."""

    exchange = EXCHANGE
    default_url = BINANCE_URL

    def __init__(self, pairs: list[str], url: str | None = None, *,
                 max_connection_s: float | None = MAX_CONNECTION_S, **options: Any) -> None:
        super().__init__(pairs, url, max_connection_s=max_connection_s, **options)
        self.streams = [stream_name(venue_name(EXCHANGE, p)) for p in self.pairs]
        self.stats["server_shutdowns"] = 0
        self._request_id = 0

    def subscribe_messages(self) -> list[dict[str, Any]]:
        self._request_id += 1
        return [{"method": "SUBSCRIBE", "params": self.streams, "id": self._request_id}]

    def handle_frame(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        if "stream" in frame and "data" in frame:
            data = frame["data"]
        elif "id" in frame and ("result" in frame or "error" in frame):
            return self._answer(frame, text, at)
        else:
            data = frame  # a bare event (serverShutdown may come outside the envelope)
        event = data.get("e") if isinstance(data, dict) else None
        if event == "trade":
            return self.parse_items([data], parse_trade, text, at)
        if event == "serverShutdown":
            self.stats["server_shutdowns"] += 1
            self.renew("the server announced serverShutdown")
            return []
        return [self.reject(f"unknown_event:{clip(event)}", text, at)]

    def _answer(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        if frame.get("error") is None:
            log.info("subscribed (request %s): %s", frame.get("id"), self.streams)
            return []
        self.stats["subscribe_errors"] += 1
        log.error("subscribe failed: %s", frame.get("error"))
        return [self.reject(f"subscribe_error {clip(frame.get('error'), 200)}", text, at)]


__all__ = ["BINANCE_URL", "EXCHANGE", "MAX_CONNECTION_S", "BinanceSource", "parse_trade", "stream_name"]
