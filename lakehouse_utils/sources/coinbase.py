"""Coinbase trade adapters: the Exchange feed's ``matches`` channel and Advanced Trade's ``market_trades``.

Both are one venue, ``exchange = "coinbase"``: one matching engine, the same products (``BTC-USD`` ->
``BTC/USD``, the name kept as ``venue_symbol``) and the same trade ids, consecutive per product. Run together,
they send the same trades twice, which Silver keeps once.

- :class:`CoinbaseExchangeSource` (``wss://ws-feed.exchange.coinbase.com``) subscribes to ``matches`` (and
  ``heartbeat``, one a second per product, which keeps an idle connection busy). On every subscribe the feed
  sends one ``last_match`` per product: a trade that may already be in Kafka (a snapshot: counted in
  ``snapshot_trades``, and in ``snapshot_repeats`` when its id was seen). ``side`` is the maker order's side:
  the taker is the other one (``taker.py``).
- :class:`CoinbaseAdvancedSource` (``wss://advanced-trade-ws.coinbase.com``) subscribes to ``heartbeats``
  (first: without it the server closes an idle connection), then ``market_trades``. A ``snapshot`` event of
  recent trades comes first. ``side`` (``BUY``/``SELL``) is read per ``taker.ADVANCED_SIDE_IS`` (the maker's: see
  there).

Both feeds want the subscribe within 5 s of connecting: it is sent right after the handshake. Ids skipped
between connections are counted per product (``gaps.py``). Prices and sizes are decimal strings.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from .fields import TradeFields
from .symbols import venue_name
from .taker import advanced_taker, coinbase_taker
from .trades import Rejected, Trade, iso_time
from .ws import WebSocketSource, clip

log = logging.getLogger(__name__)

EXCHANGE = "coinbase"
EXCHANGE_FEED_URL = "wss://ws-feed.exchange.coinbase.com"
ADVANCED_TRADE_URL = "wss://advanced-trade-ws.coinbase.com"


MATCH = TradeFields(EXCHANGE, "product_id", "trade_id", "price", "size", "side", "time", coinbase_taker, iso_time)
MARKET_TRADE = TradeFields(EXCHANGE, "product_id", "trade_id", "price", "size", "side", "time", advanced_taker,
                           iso_time)


def parse_match(item: Any, ingest_time: datetime) -> Trade:
    """A Coinbase Exchange ``match`` / ``last_match`` (its ``side`` is the maker's)."""
    return MATCH.parse(item, ingest_time)


def parse_market_trade(item: Any, ingest_time: datetime) -> Trade:
    """A trade of a Coinbase Advanced Trade ``market_trades`` event (``side`` per taker.ADVANCED_SIDE_IS)."""
    return MARKET_TRADE.parse(item, ingest_time)


class _CoinbaseSource(WebSocketSource):
    exchange = EXCHANGE

    def __init__(self, pairs: list[str], url: str | None = None, **options: Any) -> None:
        super().__init__(pairs, url, **options)
        self.products = [venue_name(EXCHANGE, p) for p in self.pairs]

    def _error(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        """An ``error`` message (a refused subscribe, an unknown product)."""
        self.stats["subscribe_errors"] += 1
        detail = f"{frame.get('message', '')} {frame.get('reason', '')}".strip()
        log.error("coinbase error: %s", detail)
        return [self.reject(f"subscribe_error {clip(detail, 200)}", text, at)]


class CoinbaseExchangeSource(_CoinbaseSource):
    """Trades from the Coinbase Exchange feed's ``matches`` channel (live, or a CoinbaseReplayServer)."""

    default_url = EXCHANGE_FEED_URL

    def subscribe_messages(self) -> list[dict[str, Any]]:
        return [{"type": "subscribe", "product_ids": self.products, "channels": ["matches", "heartbeat"]}]

    def handle_frame(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        kind = frame.get("type")
        if kind == "match":
            return self.parse_items([frame], parse_match, text, at)
        if kind == "last_match":
            return self.parse_items([frame], parse_match, text, at, snapshot=True)
        if kind == "heartbeat":
            self.stats["heartbeats"] += 1
        elif kind == "subscriptions":
            log.info("subscribed: %s", frame.get("channels"))
        elif kind == "error":
            return self._error(frame, text, at)
        else:
            return [self.reject(f"unknown_type:{clip(kind)}", text, at)]
        return []


class CoinbaseAdvancedSource(_CoinbaseSource):
    """Trades from Coinbase Advanced Trade's ``market_trades`` channel (live, or a CoinbaseAdvancedReplayServer)."""

    default_url = ADVANCED_TRADE_URL

    def subscribe_messages(self) -> list[dict[str, Any]]:
        # heartbeats first: the connection is kept alive before any trade flows, and the feed (or a replay that
        # sends its whole recording and closes) has both requests before it starts sending
        return [{"type": "subscribe", "channel": "heartbeats"},
                {"type": "subscribe", "product_ids": self.products, "channel": "market_trades"}]

    def handle_frame(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        channel = frame.get("channel")
        if channel == "market_trades":
            return self._market_trades(frame, text, at)
        if channel == "heartbeats":
            self.stats["heartbeats"] += 1
        elif channel == "subscriptions":
            log.info("subscribed: %s", frame.get("events"))
        elif frame.get("type") == "error":
            return self._error(frame, text, at)
        else:
            return [self.reject(f"unknown_channel:{clip(channel)}", text, at)]
        return []

    def _market_trades(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        events = frame.get("events")
        if not isinstance(events, list):
            return [self.reject("bad_type:events", text, at)]
        out: list[Trade | Rejected] = []
        for event in events:
            kind = event.get("type") if isinstance(event, dict) else None
            trades = event.get("trades") if isinstance(event, dict) else None
            if kind not in ("snapshot", "update"):
                out.append(self.reject(f"unknown_event_type:{clip(kind)}", text, at))
            elif not isinstance(trades, list):
                out.append(self.reject("bad_type:trades", text, at))
            else:
                out += self.parse_items(trades, parse_market_trade, text, at, snapshot=kind == "snapshot")
        return out


__all__ = ["ADVANCED_TRADE_URL", "EXCHANGE", "EXCHANGE_FEED_URL", "MARKET_TRADE", "MATCH", "CoinbaseAdvancedSource",
           "CoinbaseExchangeSource", "parse_market_trade", "parse_match"]
