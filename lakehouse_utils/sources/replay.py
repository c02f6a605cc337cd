"""A local WebSocket server that replays a recording as a Kraken Spot v2 endpoint.

It speaks the subset the trade adapter uses: it sends the recorded ``status`` frame on
connect, answers ``subscribe`` (one ack per symbol; pairs absent from the recording get an
error ack) and ``ping`` itself, then sends a ``snapshot`` frame per symbol with the last
``snapshot_size`` trades it already sent on earlier connections (empty on the first one),
and resumes the recorded channel frames where the previous connection stopped. Recorded
gaps are kept, divided by ``speed`` (none at ``"max"``). When the recording is exhausted it
sends a heartbeat every second, or closes cleanly with ``close_when_done=True``.

Test hooks: ``drop_after=N`` closes the TCP connection without a close frame once, after N
recorded frames; ``raw_frames={i: text}`` sends ``text`` before recorded frame ``i``.
One client at a time: the replay position is shared by all connections.

CLI: ``python -m lakehouse_utils.sources.replay [recording] --speed 10 --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from .kraken import read_recording
from .trades import format_time

SAMPLE_RECORDING = Path(__file__).parents[1] / "data" / "kraken_v2_btcusd_2019-07-01T00.jsonl.gz"
HEARTBEAT_S = 1.0
_BATCH_FRAMES = 512  # at speed "max": recorded frames per socket write (one event loop turn each)
_DEFAULT_STATUS = {
    "channel": "status",
    "type": "update",
    "data": [{"api_version": "v2", "connection_id": 0, "system": "online", "version": "2.0.0"}],
}


def _ws_text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, final WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


@dataclass(frozen=True)
class _Entry:
    """One recorded frame: ``text`` is what goes on the wire, ``wire`` the same as a WebSocket frame."""

    recv_ms: int | None
    text: str
    frame: Any  # parsed frame, None for raw lines
    wire: bytes
    symbols: frozenset[str]  # the symbols of its trade items (empty for any other frame)

    @classmethod
    def of(cls, recv_ms: int | None, text: str, frame: Any) -> _Entry:
        items = _trade_items(frame) or []
        symbols = frozenset(i["symbol"] for i in items if isinstance(i, dict) and isinstance(i.get("symbol"), str))
        return cls(recv_ms, text, frame, _ws_text_frame(text.encode("utf-8")), symbols)


def _load(path: Path) -> tuple[str, list[_Entry]]:
    """Split a recording into the status frame text and the frames to replay."""
    entries = []
    for row in read_recording(path):
        if "raw" in row:
            entries.append(_Entry.of(row.get("recv_ms"), str(row["raw"]), None))
        else:
            frame = row.get("frame")
            entries.append(_Entry.of(row.get("recv_ms"), json.dumps(frame, separators=(",", ":")), frame))
    if entries and isinstance(entries[0].frame, dict) and entries[0].frame.get("channel") == "status":
        return entries[0].text, entries[1:]
    return json.dumps(_DEFAULT_STATUS), entries


def _trade_items(frame: Any) -> list[Any] | None:
    """The ``data`` list of a trade frame, else None."""
    if isinstance(frame, dict) and frame.get("channel") == "trade" and isinstance(frame.get("data"), list):
        return frame["data"]
    return None


def _wanted(item: Any, subscribed: set[str]) -> bool:
    """Drop trades of unsubscribed symbols; malformed items pass through untouched."""
    symbol = item.get("symbol") if isinstance(item, dict) else None
    return not isinstance(symbol, str) or symbol in subscribed


def _now() -> str:
    return format_time(datetime.now(UTC))


def _parse_speed(speed: float | str) -> float | None:
    """None means as fast as possible."""
    if speed == "max":
        return None
    value = float(speed)
    if value <= 0:
        raise ValueError(f"speed must be > 0 or 'max', got {speed!r}")
    return value


class ReplayServer:
    """Kraken v2 look-alike serving a recording on a background thread."""

    def __init__(
        self,
        recording: str | Path | None = None,
        speed: float | str = "max",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        drop_after: int | None = None,
        raw_frames: dict[int, str] | None = None,
        snapshot_size: int = 50,
        close_when_done: bool = False,
    ) -> None:
        self.recording = Path(recording) if recording is not None else SAMPLE_RECORDING
        self.speed = _parse_speed(speed)
        self.host, self.port = host, port
        self.url = ""
        self.drop_after = drop_after
        self.raw_frames = dict(raw_frames or {})
        self.snapshot_size = snapshot_size
        self.close_when_done = close_when_done
        self._status, self._frames = _load(self.recording)
        self._symbols = set().union(*(entry.symbols for entry in self._frames))
        # replay state, shared across connections (touched only on the server thread)
        self.finished = threading.Event()
        self.frames_sent = 0
        self.trades_sent: list[str] = []
        self.snapshot_trades_sent = 0
        self.connections = 0
        self.subscribe_requests = 0
        self.pings = 0
        self._position = 0
        self._injected: set[int] = set()
        self._dropped = False
        self._recent: dict[str, deque[Any]] = defaultdict(lambda: deque(maxlen=snapshot_size))
        # threading
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def symbols(self) -> list[str]:
        """The symbols the recording holds trades of, sorted."""
        return sorted(self._symbols)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> ReplayServer:
        """Start serving; sets ``.url``."""
        self._thread = threading.Thread(target=self._run, name="replay-server", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("replay server did not start")
        if self._error is not None:
            raise RuntimeError(f"replay server failed to start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Close all connections and stop the server thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._shutdown is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._shutdown.set)
        self._thread.join(timeout=15)
        self._thread = None

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        try:
            async with ws_serve(self._handle, self.host, self.port, compression=None, close_timeout=2) as server:
                self.port = server.sockets[0].getsockname()[1]
                self.url = f"ws://{self.host}:{self.port}"
                self._started.set()
                await self._shutdown.wait()
        except Exception as exc:  # surfaced by start(), e.g. port in use
            self._error = exc
            self._started.set()

    # ---- one connection -----------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        subscribed: set[str] = set()
        replay: asyncio.Task[None] | None = None
        try:
            await ws.send(self._status)
            async for message in ws:
                request = self._parse_request(message)
                if request is None:
                    await ws.send(json.dumps({"error": "Malformed request", "success": False, "time_in": _now()}))
                    continue
                await self._answer(ws, request, subscribed)
                if replay is None and subscribed:
                    replay = asyncio.create_task(self._replay(ws, subscribed))
        except ConnectionClosed:
            pass
        finally:
            if replay is not None:
                replay.cancel()
                await asyncio.gather(replay, return_exceptions=True)

    @staticmethod
    def _parse_request(message: str | bytes) -> dict[str, Any] | None:
        try:
            request = json.loads(message)
        except ValueError:
            return None
        return request if isinstance(request, dict) else None

    async def _answer(self, ws: ServerConnection, request: dict[str, Any], subscribed: set[str]) -> None:
        time_in = _now()
        extra = {"req_id": request["req_id"]} if "req_id" in request else {}
        method = request.get("method")
        if method == "ping":
            self.pings += 1
            await ws.send(json.dumps({"method": "pong", **extra, "time_in": time_in, "time_out": _now()}))
        elif method == "subscribe":
            self.subscribe_requests += 1
            await self._subscribe(ws, request.get("params"), subscribed, time_in, extra)
        else:
            error = {"error": f"Method not found: {method}", "method": method, "success": False}
            await ws.send(json.dumps({**error, **extra, "time_in": time_in, "time_out": _now()}))

    async def _subscribe(
        self, ws: ServerConnection, params: Any, subscribed: set[str], time_in: str, extra: dict[str, Any]
    ) -> None:
        params = params if isinstance(params, dict) else {}
        symbols = params.get("symbol")
        base = {"method": "subscribe", **extra}
        if params.get("channel") != "trade" or not isinstance(symbols, list):
            error = {"error": "Only the trade channel with a symbol list is supported", "success": False}
            await ws.send(json.dumps({**base, **error, "time_in": time_in, "time_out": _now()}))
            return
        for symbol in symbols:
            if not isinstance(symbol, str) or symbol not in self._symbols:
                reply = {"error": f"Currency pair not supported {symbol}", "success": False, "symbol": symbol}
            else:
                subscribed.add(symbol)
                result = {"channel": "trade", "snapshot": True, "symbol": symbol}
                reply = {"result": result, "success": True}
            await ws.send(json.dumps({**base, **reply, "time_in": time_in, "time_out": _now()}))
            if reply["success"] and params.get("snapshot", True):
                await self._send_snapshot(ws, symbol)

    async def _send_snapshot(self, ws: ServerConnection, symbol: str) -> None:
        data = list(self._recent[symbol])
        self.snapshot_trades_sent += len(data)
        await ws.send(json.dumps({"channel": "trade", "type": "snapshot", "data": data}))

    # ---- replay -------------------------------------------------------------------------

    async def _replay(self, ws: ServerConnection, subscribed: set[str]) -> None:
        """Send recorded frames from the shared position, then idle or close.

        Paced, a frame at a time; at speed "max", up to ``_BATCH_FRAMES`` frames per socket write
        (a ``ws.send`` and an event loop turn per frame capped the server at ~11k frames/s).
        """
        while self._position < len(self._frames):
            index = self._position
            await self._send_injected(ws, index, index + 1)
            if self.speed is None:
                await self._send_recorded(ws, index, self._batch_end(index), subscribed)
                await asyncio.sleep(0)  # let requests (ping, stop) through at full speed
            else:
                await self._pace(ws, index)
                await self._send_recorded(ws, index, index + 1, subscribed)
            if self.drop_after is not None and not self._dropped and self.frames_sent >= self.drop_after:
                self._dropped = True
                ws.transport.close()  # flushes what was sent, then FIN without a close frame
                return
        await self._send_injected(ws, len(self._frames), None)
        self.finished.set()
        if self.close_when_done:
            await ws.close()
            return
        while True:
            await ws.send('{"channel":"heartbeat"}')
            await asyncio.sleep(HEARTBEAT_S)

    async def _send_injected(self, ws: ServerConnection, start: int, end: int | None) -> None:
        """Send the not yet sent ``raw_frames`` with keys in [start, end) (end None: no limit)."""
        for index in sorted(self.raw_frames):
            if start <= index and (end is None or index < end) and index not in self._injected:
                self._injected.add(index)
                await ws.send(self.raw_frames[index])

    def _batch_end(self, index: int) -> int:
        """Where a batch starting at ``index`` stops: before the next injected frame or the drop point."""
        end = min(len(self._frames), index + _BATCH_FRAMES)
        pending = [i for i in self.raw_frames if i > index and i not in self._injected]
        if pending:
            end = min(end, min(pending))
        if self.drop_after is not None and not self._dropped:
            end = min(end, index + max(1, self.drop_after - self.frames_sent))
        return end

    async def _pace(self, ws: ServerConnection, index: int) -> None:
        """Wait the recorded gap before frame ``index`` (scaled), heartbeating each second."""
        if self.speed is None or index == 0:
            return
        prev, cur = self._frames[index - 1].recv_ms, self._frames[index].recv_ms
        if prev is None or cur is None:
            return
        deadline = time.monotonic() + max(0, cur - prev) / 1000 / self.speed
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, HEARTBEAT_S))
            if deadline - time.monotonic() > 0:
                await ws.send('{"channel":"heartbeat"}')

    async def _send_recorded(self, ws: ServerConnection, start: int, end: int, subscribed: set[str]) -> None:
        """Send recorded frames [start, end) in one socket write; advances the replay position past them.

        Trade items of symbols nobody subscribed to are left out (a frame left empty is not sent).
        """
        wires: list[bytes] = []
        sent: list[list[Any]] = []  # the trade items of each frame sent
        for entry in self._frames[start:end]:
            items = _trade_items(entry.frame)
            if items is None or entry.symbols <= subscribed:
                wires.append(entry.wire)
                sent.append(items or [])
                continue
            kept = [item for item in items if _wanted(item, subscribed)]
            if items and not kept:
                continue
            wires.append(_ws_text_frame(json.dumps({**entry.frame, "data": kept}).encode("utf-8")))
            sent.append(kept)
        if wires:
            async with ws.send_context():  # raises ConnectionClosed unless open; drains (flow control) on exit
                ws.transport.write(b"".join(wires))
        self._position = end
        self.frames_sent += len(wires)
        for items in sent:
            for item in items:
                if isinstance(item, dict) and "trade_id" in item:
                    self.trades_sent.append(str(item["trade_id"]))
                    self._recent[str(item.get("symbol"))].append(item)


def serve(recording: str | Path | None = None, speed: float | str = "max", port: int = 8765) -> None:
    """Serve a recording on 127.0.0.1:``port`` until Ctrl-C."""
    with ReplayServer(recording, speed, port=port) as server:
        print(f"replaying {server.recording} on {server.url} (speed {speed})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Replay a Kraken v2 recording over WebSocket.")
    parser.add_argument("recording", nargs="?", default=None, help="JSONL(.gz); default: bundled sample")
    parser.add_argument("--speed", default="max", help="'max' or a factor (1 = real time)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    serve(args.recording, args.speed, args.port)


if __name__ == "__main__":
    main()
