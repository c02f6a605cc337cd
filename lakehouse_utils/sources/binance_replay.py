"""A local WebSocket server that replays a recording as Binance Spot's combined stream would send it.

It speaks the subset the adapter (``binance.py``) uses, on top of ``replay_server.py`` (pacing, the test hooks,
one client at a time, the position shared across connections):

- ``{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}`` is answered ``{"result": null, "id": 1}``
  (``UNSUBSCRIBE`` and ``LIST_SUBSCRIPTIONS`` too); a stream name that is not ``<symbol>@trade`` gets
  ``{"error": {"code": 2, "msg": ...}, "id": 1}``. As on Binance, a symbol with no trades is accepted and stays
  silent. Then the recorded ``{"stream", "data"}`` events follow. No snapshot: Binance sends none.
- **Pings**: every ``ping_interval`` s (Binance: 20) the server sends a WebSocket ping and closes the connection
  if no pong came back within ``pong_timeout`` s (Binance: 60); ``pongs`` counts the answers.
- **24 h limit**: a connection open for ``max_connection_s`` is closed by the server.
- ``shutdown_after=N``: the ``serverShutdown`` event is sent once, before recorded frame N (the server keeps
  serving: a client is expected to move to a new connection by itself).

Default recording: the bundled real hour re-encoded as Binance events (``reencode.py``: ``BTCUSDT``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from typing import Any

from websockets.exceptions import ConnectionClosed

from .recording import Recording
from .reencode import reencode
from .replay_server import ReplayServerBase
from .replay_wire import Connection
from .symbols import common_symbol

PING_INTERVAL_S = 20.0
PONG_TIMEOUT_S = 60.0
MAX_CONNECTION_S = 24 * 3600.0


def shutdown_event() -> str:
    return json.dumps({"e": "serverShutdown", "E": int(time.time() * 1000)})


class BinanceReplayServer(ReplayServerBase):
    """Binance Spot combined-stream look-alike (``<symbol>@trade``) serving a recording."""

    venue = "binance"
    ws_ping_interval = None  # the venue's own pings (below), with Binance's timing

    def __init__(self, recording: Recording | None = None, speed: float | str = "max", *,
                 ping_interval: float = PING_INTERVAL_S, pong_timeout: float = PONG_TIMEOUT_S,
                 max_connection_s: float = MAX_CONNECTION_S, shutdown_after: int | None = None,
                 **options: Any) -> None:
        super().__init__(recording, speed, **options)
        self.ping_interval, self.pong_timeout = ping_interval, pong_timeout
        self.max_connection_s = max_connection_s
        if shutdown_after is not None:
            self.raw_frames.setdefault(shutdown_after, shutdown_event())
        self.pongs = 0  # pongs received for the server's pings
        self.pong_timeouts = 0  # connections closed for not answering a ping
        self.expired = 0  # connections closed at max_connection_s

    def default_recording(self) -> Recording:
        return reencode("binance")

    def trade_items(self, frame: Any) -> list[Any] | None:
        data = frame.get("data") if isinstance(frame, dict) else None
        return [data] if isinstance(data, dict) and data.get("e") == "trade" else None

    def item_symbol(self, item: Any) -> str | None:
        symbol = item.get("s") if isinstance(item, dict) else None
        return symbol.upper() if isinstance(symbol, str) else None

    def item_id(self, item: Any) -> str | None:
        return str(item["t"]) if isinstance(item, dict) and "t" in item else None

    def with_items(self, frame: Any, items: list[Any]) -> Any:
        return {**frame, "data": items[0]}

    @property
    def pairs(self) -> list[str]:
        return [common_symbol("binance", s) for s in self.symbols]

    def malformed(self, message: str | bytes) -> str:
        return json.dumps({"error": {"code": 3, "msg": "Invalid JSON: expected an object"}, "id": None})

    async def answer(self, conn: Connection, request: dict[str, Any]) -> None:
        method, params, rid = request.get("method"), request.get("params"), request.get("id")
        if method == "LIST_SUBSCRIPTIONS":
            await conn.send(json.dumps({"result": [f"{s.lower()}@trade" for s in sorted(conn.subscribed)],
                                        "id": rid}))
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            await conn.send(json.dumps({"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"},
                                        "id": rid}))
            return
        streams = params if isinstance(params, list) else []
        bad = [s for s in streams if not (isinstance(s, str) and s.endswith("@trade") and s[:-6].isalnum())]
        if not streams or bad:
            await conn.send(json.dumps({"error": {"code": 2, "msg": f"Invalid request: stream {bad[:1] or '[]'}"},
                                        "id": rid}))
            return
        self.subscribe_requests += 1
        names = {s[:-6].upper() for s in streams}
        if method == "SUBSCRIBE":
            conn.subscribed |= names
        else:
            conn.subscribed -= names
        await conn.send(json.dumps({"result": None, "id": rid}))

    def connection_tasks(self, conn: Connection) -> list[Coroutine[Any, Any, None]]:
        return [self._ping(conn), self._expire(conn)]

    async def _ping(self, conn: Connection) -> None:
        """Ping every ``ping_interval``; close the connection when a pong does not come within ``pong_timeout``."""
        try:
            while True:
                await asyncio.sleep(self.ping_interval)
                waiter = await conn.ws.ping()
                try:
                    await asyncio.wait_for(waiter, self.pong_timeout)
                except TimeoutError:
                    self.pong_timeouts += 1
                    await conn.ws.close(1008, "pong timeout")
                    return
                self.pongs += 1
        except ConnectionClosed:
            return

    async def _expire(self, conn: Connection) -> None:
        await asyncio.sleep(self.max_connection_s)
        self.expired += 1
        await conn.ws.close(1000, "24h connection limit")


__all__ = ["MAX_CONNECTION_S", "PING_INTERVAL_S", "PONG_TIMEOUT_S", "BinanceReplayServer", "shutdown_event"]
