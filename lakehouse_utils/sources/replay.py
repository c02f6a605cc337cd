"""A local WebSocket server that replays a recording as a Kraken Spot v2 endpoint (and the replay CLI).

It speaks the subset the trade adapter uses: it sends the recorded ``status`` frame on
connect, answers ``subscribe`` (one ack per symbol; pairs absent from the recording get an
error ack) and ``ping`` itself, then sends a ``snapshot`` frame per symbol with the last
``snapshot_size`` trades that happened before (empty on the first connection), and resumes
the recorded channel frames where the previous connection stopped (``replay_server.py``: pacing,
the test hooks, one client at a time). When the recording is exhausted it sends a heartbeat every
second, or closes cleanly with ``close_when_done=True``.

The other venues' replay servers: ``coinbase_replay.py``, ``binance_replay.py``; ``venues.replay_server``
makes any of them by venue name, and ``python -m lakehouse_utils.sources.venues [recording] --venue kraken
--speed 10 --port 8765`` serves one.
"""

from __future__ import annotations

import json
from typing import Any

from .recording import SAMPLE_RECORDING, Recording
from .replay_server import ReplayServerBase
from .replay_wire import Connection, now_text, parse_speed
from .trades import normalize_symbol

_DEFAULT_STATUS = {
    "channel": "status",
    "type": "update",
    "data": [{"api_version": "v2", "connection_id": 0, "system": "online", "version": "2.0.0"}],
}
_HEARTBEAT = '{"channel":"heartbeat"}'

__all__ = ["SAMPLE_RECORDING", "ReplayServer", "parse_speed"]


class ReplayServer(ReplayServerBase):
    """Kraken v2 look-alike serving a recording on a background thread."""

    venue = "kraken"

    def default_recording(self) -> Recording:
        return SAMPLE_RECORDING

    def split_greeting(self, rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
        first = rows[0].get("frame") if rows else None
        if isinstance(first, dict) and first.get("channel") == "status":
            return [json.dumps(first, separators=(",", ":"))], rows[1:]
        return [json.dumps(_DEFAULT_STATUS)], rows

    def trade_items(self, frame: Any) -> list[Any] | None:
        if isinstance(frame, dict) and frame.get("channel") == "trade" and isinstance(frame.get("data"), list):
            return frame["data"]
        return None

    def item_symbol(self, item: Any) -> str | None:
        symbol = item.get("symbol") if isinstance(item, dict) else None
        return symbol if isinstance(symbol, str) else None

    def item_id(self, item: Any) -> str | None:
        return str(item["trade_id"]) if isinstance(item, dict) and "trade_id" in item else None

    def with_items(self, frame: Any, items: list[Any]) -> Any:
        return {**frame, "data": items}

    def idle_frames(self, conn: Connection) -> list[str]:
        return [_HEARTBEAT]

    @property
    def pairs(self) -> list[str]:
        return [normalize_symbol(s) for s in self.symbols]

    async def answer(self, conn: Connection, request: dict[str, Any]) -> None:
        time_in = now_text()
        extra = {"req_id": request["req_id"]} if "req_id" in request else {}
        method = request.get("method")
        if method == "ping":
            self.pings += 1
            await conn.send(json.dumps({"method": "pong", **extra, "time_in": time_in, "time_out": now_text()}))
        elif method == "subscribe":
            self.subscribe_requests += 1
            await self._subscribe(conn, request.get("params"), time_in, extra)
        else:
            error = {"error": f"Method not found: {method}", "method": method, "success": False}
            await conn.send(json.dumps({**error, **extra, "time_in": time_in, "time_out": now_text()}))

    async def _subscribe(self, conn: Connection, params: Any, time_in: str, extra: dict[str, Any]) -> None:
        params = params if isinstance(params, dict) else {}
        symbols = params.get("symbol")
        base = {"method": "subscribe", **extra}
        if params.get("channel") != "trade" or not isinstance(symbols, list):
            error = {"error": "Only the trade channel with a symbol list is supported", "success": False}
            await conn.send(json.dumps({**base, **error, "time_in": time_in, "time_out": now_text()}))
            return
        for symbol in symbols:
            if not self.knows(symbol):
                reply = {"error": f"Currency pair not supported {symbol}", "success": False, "symbol": symbol}
            else:
                conn.subscribed.add(symbol)
                reply = {"result": {"channel": "trade", "snapshot": True, "symbol": symbol}, "success": True}
            await conn.send(json.dumps({**base, **reply, "time_in": time_in, "time_out": now_text()}))
            if reply["success"] and params.get("snapshot", True):
                data = self.recent(symbol)
                self.snapshot_trades_sent += len(data)
                await conn.send(json.dumps({"channel": "trade", "type": "snapshot", "data": data}))
