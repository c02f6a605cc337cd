"""Kraken Spot WebSocket v2 trade adapter (synchronous, websocket-client).

``KrakenV2Source(pairs).stream(stop)`` connects, subscribes to the ``trade`` channel and
yields a :class:`Trade` per valid print and a :class:`Rejected` per bad input. It never
raises on bad input, reconnects with capped exponential backoff (and resubscribes), and
sends ``{"method":"ping"}`` when the connection is idle (the loop: ``ws.py``).

Kraken resends up to 50 recent trades in a ``snapshot`` frame after every (re)subscribe.
Those are still yielded (downstream dedups on trade_id); the ones at or below the highest
trade_id already yielded for the symbol are counted in ``stats["snapshot_repeats"]``, and ids
skipped between two connections in ``stats["missing_ids"]`` (``gaps.py``). Kraken's ``side`` is
the taker's (``taker.py``); the symbol as sent is kept as ``venue_symbol``.

Recording format (also read by :func:`read_recording`): see ``recording.py``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import websocket

from .recording import read_recording
from .trades import Rejected, Trade, parse_kraken_v2_trade
from .ws import WebSocketSource, clip

log = logging.getLogger(__name__)

KRAKEN_V2_URL = "wss://ws.kraken.com/v2"
EXCHANGE = "kraken"


class KrakenV2Source(WebSocketSource):
    """Trade stream from a Kraken v2 endpoint (live or a :class:`~lakehouse_utils.sources.replay.ReplayServer`)."""

    exchange = EXCHANGE
    default_url = KRAKEN_V2_URL

    def __init__(self, pairs: list[str], url: str = KRAKEN_V2_URL, **options: Any) -> None:
        super().__init__(pairs, url, **options)
        self._req_id = 0

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        self._req_id += 1
        return {**message, "req_id": self._req_id}

    def subscribe_messages(self) -> list[dict[str, Any]]:
        return [self._request({"method": "subscribe",
                               "params": {"channel": "trade", "symbol": self.pairs, "snapshot": True}})]

    def keepalive(self, ws: websocket.WebSocket) -> bool:
        return self.send(ws, self._request({"method": "ping"}))

    def handle_frame(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        if "method" in frame:
            return self._handle_method(frame, text, at)
        channel = frame.get("channel")
        if channel == "trade":
            return self._handle_trades(frame, text, at)
        if channel == "heartbeat":
            self.stats["heartbeats"] += 1
        elif channel == "status":
            log.info("status: %s", frame.get("data"))
        else:
            return [self.reject(f"unknown_channel:{clip(channel)}", text, at)]
        return []

    def _handle_method(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        method = frame.get("method")
        if method == "subscribe" and frame.get("success") is True:
            log.info("subscribed: %s", frame.get("result"))
        elif method == "subscribe":
            self.stats["subscribe_errors"] += 1
            log.error("subscribe failed: %s", frame.get("error"))
            return [self.reject(f"subscribe_error {clip(frame.get('error'), 200)}", text, at)]
        elif method == "pong":
            self.stats["pongs"] += 1
        else:
            return [self.reject(f"unknown_method:{clip(method)}", text, at)]
        return []

    def _handle_trades(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        kind, items = frame.get("type"), frame.get("data")
        if kind not in ("snapshot", "update"):
            return [self.reject(f"unknown_trade_type:{clip(kind)}", text, at)]
        if not isinstance(items, list):
            return [self.reject("bad_type:data", text, at)]
        return self.parse_items(items, self._parse, text, at, snapshot=kind == "snapshot")

    @staticmethod
    def _parse(item: Any, at: datetime) -> Trade:
        return parse_kraken_v2_trade(item, exchange=EXCHANGE, ingest_time=at)


__all__ = ["EXCHANGE", "KRAKEN_V2_URL", "KrakenV2Source", "read_recording"]
