"""Local WebSocket servers that replay a recording as Coinbase would send it: the Exchange feed and Advanced Trade.

Both speak the subset the adapters (``coinbase.py``) use, on top of ``replay_server.py`` (pacing, the test hooks,
one client at a time, the position shared across connections):

- **Subscribe within 5 s** (``subscribe_timeout``): a connection that has not subscribed by then is closed, as
  Coinbase does. A product the recording does not hold is refused with an ``error`` message, the whole request
  with it.
- :class:`CoinbaseReplayServer` (Exchange feed) answers ``{"type": "subscribe", "product_ids", "channels"}`` with
  ``subscriptions``, then sends one ``last_match`` per product: the latest trade that happened before (none on
  the first connection), then the recorded ``match`` frames. With ``heartbeat`` subscribed, an idle connection
  gets one ``heartbeat`` per product a second (with the product's last trade id).
- :class:`CoinbaseAdvancedReplayServer` answers each ``{"type": "subscribe", "channel"}`` with a
  ``subscriptions`` message; for ``market_trades`` it then sends a ``snapshot`` event with the product's last
  ``snapshot_size`` trades, newest first. With ``heartbeats`` subscribed an idle connection gets one
  ``heartbeats`` message a second; without it a connection idle for ``idle_close_s`` is closed.

Default recording: the bundled real hour re-encoded in the feed's format (``reencode.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Coroutine
from typing import Any

from .recording import Recording
from .reencode import reencode
from .replay_server import ReplayServerBase
from .replay_wire import Connection, now_text
from .symbols import common_symbol

SUBSCRIBE_TIMEOUT_S = 5.0
IDLE_CLOSE_S = 60.0


class _CoinbaseReplay(ReplayServerBase):
    reencoded_as = ""
    ws_ping_interval = None  # Coinbase keeps connections alive with heartbeats, not pings

    def __init__(self, recording: Recording | None = None, speed: float | str = "max", *,
                 subscribe_timeout: float = SUBSCRIBE_TIMEOUT_S, **options: Any) -> None:
        super().__init__(recording, speed, **options)
        self.subscribe_timeout = subscribe_timeout
        self.subscribe_timeouts = 0  # connections closed for not subscribing in time
        self._sequence = itertools.count(1)

    def default_recording(self) -> Recording:
        return reencode(self.reencoded_as)

    def item_symbol(self, item: Any) -> str | None:
        symbol = item.get("product_id") if isinstance(item, dict) else None
        return symbol if isinstance(symbol, str) else None

    def item_id(self, item: Any) -> str | None:
        return str(item["trade_id"]) if isinstance(item, dict) and "trade_id" in item else None

    @property
    def pairs(self) -> list[str]:
        return [common_symbol("coinbase", s) for s in self.symbols]

    def connection_tasks(self, conn: Connection) -> list[Coroutine[Any, Any, None]]:
        return [self._close_unless_subscribed(conn)]

    async def _close_unless_subscribed(self, conn: Connection) -> None:
        await asyncio.sleep(self.subscribe_timeout)
        if not conn.subscribed and not conn.channels:
            self.subscribe_timeouts += 1
            await conn.ws.close(1008, "no subscribe message within 5 seconds")

    def malformed(self, message: str | bytes) -> str:
        return json.dumps({"type": "error", "message": "Malformed JSON"})

    async def _refuse(self, conn: Connection, reason: str) -> None:
        await conn.send(json.dumps({"type": "error", "message": "Failed to subscribe", "reason": reason}))

    def _unknown(self, products: Any) -> str | None:
        """Why ``products`` cannot be subscribed to (None: it can)."""
        if not isinstance(products, list) or not products:
            return "product_ids must be a non-empty list"
        bad = [p for p in products if not self.knows(p)]
        return f"{bad[0]} is not a valid product" if bad else None


class CoinbaseReplayServer(_CoinbaseReplay):
    """Coinbase Exchange feed look-alike (``matches``, ``heartbeat``) serving a recording."""

    venue = "coinbase"
    reencoded_as = "coinbase"

    def trade_items(self, frame: Any) -> list[Any] | None:
        if isinstance(frame, dict) and frame.get("type") in ("match", "last_match"):
            return [frame]
        return None

    def with_items(self, frame: Any, items: list[Any]) -> Any:
        return items[0]

    async def answer(self, conn: Connection, request: dict[str, Any]) -> None:
        if request.get("type") != "subscribe":
            await self._refuse(conn, f"unsupported message type {request.get('type')!r}")
            return
        self.subscribe_requests += 1
        products, channels = request.get("product_ids"), request.get("channels")
        names = [c.get("name") if isinstance(c, dict) else c for c in channels] if isinstance(channels, list) else []
        why = self._unknown(products) or (None if names else "channels must be a non-empty list")
        if why is None and not set(names) <= {"matches", "heartbeat"}:
            why = f"channel {sorted(set(names) - {'matches', 'heartbeat'})[0]} is not served here"
        if why is not None:
            await self._refuse(conn, why)
            return
        conn.channels |= set(names)
        if "matches" in names:
            conn.subscribed |= set(products)
        subscribed = sorted(conn.subscribed)
        await conn.send(json.dumps({"type": "subscriptions", "channels": [
            {"name": name, "product_ids": subscribed} for name in sorted(conn.channels)]}))
        if "matches" in names:
            for product in products:
                last = self.recent(product)[-1:]
                self.snapshot_trades_sent += len(last)
                for item in last:
                    await conn.send(json.dumps({**item, "type": "last_match"}))

    def idle_frames(self, conn: Connection) -> list[str]:
        if "heartbeat" not in conn.channels:
            return []
        return [json.dumps({"type": "heartbeat", "sequence": next(self._sequence),
                            "last_trade_id": int((self.recent(p)[-1:] or [{"trade_id": 0}])[0]["trade_id"]),
                            "product_id": p, "time": now_text()}) for p in sorted(conn.subscribed)]


class CoinbaseAdvancedReplayServer(_CoinbaseReplay):
    """Coinbase Advanced Trade look-alike (``market_trades``, ``heartbeats``) serving a recording."""

    venue = "coinbase-advanced"
    reencoded_as = "coinbase-advanced"

    def __init__(self, recording: Recording | None = None, speed: float | str = "max", *,
                 idle_close_s: float = IDLE_CLOSE_S, **options: Any) -> None:
        super().__init__(recording, speed, **options)
        self.idle_close_s = idle_close_s
        self.idle_closes = 0  # connections closed for idling without heartbeats
        self.channel_subscribes: dict[str, int] = {}  # subscribe requests answered, by channel
        self._heartbeat_counter = itertools.count(1)

    def trade_items(self, frame: Any) -> list[Any] | None:
        if not (isinstance(frame, dict) and frame.get("channel") == "market_trades"):
            return None
        events = frame.get("events")
        return [t for e in events if isinstance(e, dict) and isinstance(e.get("trades"), list)
                for t in e["trades"]] if isinstance(events, list) else None

    def with_items(self, frame: Any, items: list[Any]) -> Any:
        keep = {id(item) for item in items}
        events = [{**e, "trades": [t for t in e["trades"] if id(t) in keep]} for e in frame["events"]
                  if isinstance(e, dict) and isinstance(e.get("trades"), list)]
        return {**frame, "events": [e for e in events if e["trades"]]}

    def _message(self, channel: str, events: list[dict[str, Any]]) -> str:
        return json.dumps({"channel": channel, "client_id": "", "timestamp": now_text(),
                           "sequence_num": next(self._sequence), "events": events})

    async def answer(self, conn: Connection, request: dict[str, Any]) -> None:
        channel = request.get("channel")
        if request.get("type") != "subscribe" or channel not in ("market_trades", "heartbeats"):
            await conn.send(json.dumps({"type": "error", "message": f"unsupported request: {request.get('type')} "
                                                                    f"{channel}"}))
            return
        self.subscribe_requests += 1
        self.channel_subscribes[channel] = self.channel_subscribes.get(channel, 0) + 1
        products = request.get("product_ids")
        if channel == "market_trades":
            why = self._unknown(products)
            if why is not None:
                await conn.send(json.dumps({"type": "error", "message": f"Failed to subscribe: {why}"}))
                return
            conn.subscribed |= set(products)
        conn.channels.add(channel)
        subscriptions = {c: sorted(conn.subscribed) if c == "market_trades" else ["heartbeats"]
                         for c in sorted(conn.channels)}
        await conn.send(self._message("subscriptions", [{"subscriptions": subscriptions}]))
        if channel == "market_trades":
            trades = [t for p in products for t in reversed(self.recent(p))]  # newest first
            self.snapshot_trades_sent += len(trades)
            await conn.send(self._message("market_trades", [{"type": "snapshot", "trades": trades}]))

    def idle_frames(self, conn: Connection) -> list[str]:
        if "heartbeats" not in conn.channels:
            return []
        return [self._message("heartbeats", [{"current_time": now_text(),
                                              "heartbeat_counter": str(next(self._heartbeat_counter))}])]

    def connection_tasks(self, conn: Connection) -> list[Coroutine[Any, Any, None]]:
        return [*super().connection_tasks(conn), self._close_when_idle(conn)]

    async def _close_when_idle(self, conn: Connection) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle_close_s / 4))
            if "heartbeats" not in conn.channels and time.monotonic() - conn.last_sent >= self.idle_close_s:
                self.idle_closes += 1
                await conn.ws.close(1000, "idle: subscribe to heartbeats to keep the connection open")
                return


__all__ = ["IDLE_CLOSE_S", "SUBSCRIBE_TIMEOUT_S", "CoinbaseAdvancedReplayServer", "CoinbaseReplayServer"]
