"""A local WebSocket server that replays a recording: what every venue's replay server shares.

:class:`ReplayServerBase` serves a recording (``recording.py``: the venue's frames, one a line) on 127.0.0.1
from a background thread. A venue's server (``replay.py`` Kraken, ``coinbase_replay.py``,
``binance_replay.py``) says what its frames hold and answers the requests (:meth:`~ReplayServerBase.answer`:
the subscribe handshake and its acks, a snapshot of recent trades, pings). This engine then replays the
recorded frames from where the previous connection stopped (one client at a time: the position is shared),
leaving out trades of symbols nobody subscribed to. Recorded gaps are kept, divided by ``speed`` (none at
``"max"``); while it waits, and once the recording is exhausted, it sends the venue's idle frames (heartbeats)
every second, or closes cleanly with ``close_when_done=True``.

``start_s=S`` starts the replay S seconds of recording time in: the frames before it have happened (in the
venue's recent trades, for its snapshot) and are never sent; a history option fetches them over REST.

Test hooks: ``drop_after=N`` closes the TCP connection without a close frame once, after N recorded frames,
and ``skip_on_drop=M`` then lets the next M frames "happen while the client is away" (not sent, but in the
venue's recent trades, so a snapshot may hold them); ``raw_frames={i: text}`` sends ``text`` before recorded
frame ``i``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from .recording import Recording, entries
from .replay_wire import Connection, Entry, now_text, parse_speed, ws_text_frame

HEARTBEAT_S = 1.0
_BATCH_FRAMES = 512  # at speed "max": recorded frames per socket write (one event loop turn each)


class ReplayServerBase:
    """A venue look-alike serving a recording on a background thread (subclasses speak the venue's protocol)."""

    venue = "replay"
    ws_ping_interval: float | None = 20.0  # the websockets library's own keep-alive pings (None: the venue's)

    def __init__(
        self,
        recording: Recording | None = None,
        speed: float | str = "max",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        drop_after: int | None = None,
        skip_on_drop: int = 0,
        raw_frames: dict[int, str] | None = None,
        snapshot_size: int = 50,
        close_when_done: bool = False,
        start_s: float = 0.0,
    ) -> None:
        self.recording = recording if recording is not None else self.default_recording()
        self.speed = parse_speed(speed)
        self.host, self.port = host, port
        self.url = ""
        self.drop_after, self.skip_on_drop = drop_after, skip_on_drop
        self.raw_frames = dict(raw_frames or {})
        self.snapshot_size = snapshot_size
        self.close_when_done = close_when_done
        self.greeting, rows = self.split_greeting(entries(self.recording))
        self._frames = [self._entry(row) for row in rows]
        self._symbols: set[str] = set().union(*(entry.symbols for entry in self._frames))
        # replay state, shared across connections (touched only on the server thread)
        self.finished = threading.Event()
        self.frames_sent = 0
        self.trades_sent: list[str] = []
        self.trades_skipped: list[str] = []  # ids of the frames skip_on_drop passed over
        self.snapshot_trades_sent = 0
        self.connections = 0
        self.subscribe_requests = 0
        self.pings = 0
        self._position = 0
        self._injected: set[int] = set()
        self._dropped = False
        self._recent: dict[str, deque[Any]] = defaultdict(lambda: deque(maxlen=max(1, snapshot_size)))
        self.trades_before: list[str] = []  # ids of the frames before ``start_s`` (the venue's past: see starts_at)
        if start_s > 0:
            self._skip(self._index_at(start_s), self.trades_before)
        # threading
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # ---- the venue (subclasses) ------------------------------------------------------------------

    def default_recording(self) -> Recording:
        raise NotImplementedError

    def split_greeting(self, rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
        """Frames sent on every new connection (taken from the recording, or made up) and the rows to replay."""
        return [], rows

    def trade_items(self, frame: Any) -> list[Any] | None:
        """The trade items of a recorded frame, else None."""
        raise NotImplementedError

    def item_symbol(self, item: Any) -> str | None:
        """The venue's symbol name of a trade item (None if it has none)."""
        raise NotImplementedError

    def item_id(self, item: Any) -> str | None:
        """The trade id of a trade item (None for a malformed one)."""
        raise NotImplementedError

    def with_items(self, frame: Any, items: list[Any]) -> Any:
        """``frame`` holding only ``items`` (the trades of subscribed symbols)."""
        raise NotImplementedError

    async def answer(self, conn: Connection, request: dict[str, Any]) -> None:
        """Answer one JSON request of the client."""
        raise NotImplementedError

    def idle_frames(self, conn: Connection) -> list[str]:
        """What the venue sends each second while it has nothing else to send (heartbeats)."""
        return []

    def connection_tasks(self, conn: Connection) -> list[Coroutine[Any, Any, None]]:
        """Coroutines run beside a connection (the venue's own pings, limits); cancelled when it ends."""
        return []

    @property
    def pairs(self) -> list[str]:
        """The recording's symbols as BASE/QUOTE."""
        raise NotImplementedError

    # ---- what the subclasses use ------------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        """The venue's names of the symbols the recording holds trades of, sorted."""
        return sorted(self._symbols)

    def knows(self, symbol: Any) -> bool:
        return isinstance(symbol, str) and symbol in self._symbols

    def recent(self, symbol: str) -> list[Any]:
        """The last ``snapshot_size`` trade items of ``symbol`` that happened (sent, or skipped), oldest first."""
        return list(self._recent[symbol])[-self.snapshot_size:] if self.snapshot_size else []

    def _entry(self, row: dict[str, Any]) -> Entry:
        if "raw" in row:
            text, frame = str(row["raw"]), None
        else:
            frame = row.get("frame")
            text = json.dumps(frame, separators=(",", ":"))
        items = self.trade_items(frame) or []
        symbols = frozenset(s for s in map(self.item_symbol, items) if isinstance(s, str))
        return Entry(row.get("recv_ms"), text, frame, ws_text_frame(text.encode("utf-8")), items, symbols)

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self) -> ReplayServerBase:
        """Start serving; sets ``.url``."""
        self._thread = threading.Thread(target=self._run, name=f"replay-{self.venue}", daemon=True)
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

    def __enter__(self) -> ReplayServerBase:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        try:
            async with ws_serve(self._handle, self.host, self.port, compression=None, close_timeout=2,
                                ping_interval=self.ws_ping_interval) as server:
                self.port = server.sockets[0].getsockname()[1]
                self.url = f"ws://{self.host}:{self.port}"
                self._started.set()
                await self._shutdown.wait()
        except Exception as exc:  # surfaced by start(), e.g. port in use
            self._error = exc
            self._started.set()

    # ---- one connection ---------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        conn = Connection(ws)
        replay: asyncio.Task[None] | None = None
        tasks = [asyncio.create_task(c) for c in self.connection_tasks(conn)]
        try:
            for text in self.greeting:
                await conn.send(text)
            async for message in ws:
                request = self._parse_request(message)
                if request is None:
                    await conn.send(self.malformed(message))
                    continue
                await self.answer(conn, request)
                if replay is None and conn.subscribed:
                    replay = asyncio.create_task(self._replay(conn))
        except ConnectionClosed:
            pass
        finally:
            for task in [*tasks, *([replay] if replay is not None else [])]:
                task.cancel()
            await asyncio.gather(*tasks, *([replay] if replay is not None else []), return_exceptions=True)

    def malformed(self, message: str | bytes) -> str:
        """The answer to a request that is not a JSON object."""
        return json.dumps({"error": "Malformed request", "success": False, "time_in": now_text()})

    @staticmethod
    def _parse_request(message: str | bytes) -> dict[str, Any] | None:
        try:
            request = json.loads(message)
        except ValueError:
            return None
        return request if isinstance(request, dict) else None

    # ---- replay -----------------------------------------------------------------------------------

    async def _replay(self, conn: Connection) -> None:
        """Send recorded frames from the shared position, then idle or close.

        Paced, a frame at a time; at speed "max", up to ``_BATCH_FRAMES`` frames per socket write
        (a ``ws.send`` and an event loop turn per frame capped the server at ~11k frames/s).
        """
        while self._position < len(self._frames):
            index = self._position
            await self._send_injected(conn, index, index + 1)
            if self.speed is None:
                await self._send_recorded(conn, index, self._batch_end(index))
                await asyncio.sleep(0)  # let requests (ping, stop) through at full speed
            else:
                await self._pace(conn, index)
                await self._send_recorded(conn, index, index + 1)
            if self.drop_after is not None and not self._dropped and self.frames_sent >= self.drop_after:
                self._dropped = True
                self._skip(self.skip_on_drop)
                conn.ws.transport.close()  # flushes what was sent, then FIN without a close frame
                return
        await self._send_injected(conn, len(self._frames), None)
        self.finished.set()
        if self.close_when_done:
            await conn.ws.close()
            return
        while True:
            for text in self.idle_frames(conn):
                await conn.send(text)
            await asyncio.sleep(HEARTBEAT_S)

    def _skip(self, n: int, ids: list[str] | None = None) -> None:
        """The next ``n`` recorded frames happen while no client is connected: not sent, but recent trades."""
        end = min(len(self._frames), self._position + n)
        for entry in self._frames[self._position : end]:
            for item in entry.items:
                self._happened(item, self.trades_skipped if ids is None else ids)
        self._position = end

    def _index_at(self, seconds: float) -> int:
        """The first frame at least ``seconds`` of recording time after the first one."""
        times = [e.recv_ms for e in self._frames if e.recv_ms is not None]
        if not times:
            return 0
        at = times[0] + seconds * 1000
        return next((i for i, e in enumerate(self._frames) if e.recv_ms is not None and e.recv_ms >= at),
                    len(self._frames))

    @property
    def starts_at(self) -> datetime | None:
        """When the first frame a client gets was received (``start_s`` in: the replay's "now" at its start)."""
        ms = next((e.recv_ms for e in self._frames[self._position:] if e.recv_ms is not None), None)
        return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)

    async def _send_injected(self, conn: Connection, start: int, end: int | None) -> None:
        """Send the not yet sent ``raw_frames`` with keys in [start, end) (end None: no limit)."""
        for index in sorted(self.raw_frames):
            if start <= index and (end is None or index < end) and index not in self._injected:
                self._injected.add(index)
                await conn.send(self.raw_frames[index])

    def _batch_end(self, index: int) -> int:
        """Where a batch starting at ``index`` stops: before the next injected frame or the drop point."""
        end = min(len(self._frames), index + _BATCH_FRAMES)
        pending = [i for i in self.raw_frames if i > index and i not in self._injected]
        if pending:
            end = min(end, min(pending))
        if self.drop_after is not None and not self._dropped:
            end = min(end, index + max(1, self.drop_after - self.frames_sent))
        return end

    async def _pace(self, conn: Connection, index: int) -> None:
        """Wait the recorded gap before frame ``index`` (scaled), with the venue's idle frames each second."""
        if self.speed is None or index == 0:
            return
        prev, cur = self._frames[index - 1].recv_ms, self._frames[index].recv_ms
        if prev is None or cur is None:
            return
        deadline = time.monotonic() + max(0, cur - prev) / 1000 / self.speed
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, HEARTBEAT_S))
            if deadline - time.monotonic() > 0:
                for text in self.idle_frames(conn):
                    await conn.send(text)

    async def _send_recorded(self, conn: Connection, start: int, end: int) -> None:
        """Send recorded frames [start, end) in one socket write; advances the replay position past them.

        Trade items of symbols nobody subscribed to are left out (a frame left empty is not sent).
        """
        wires: list[bytes] = []
        sent: list[list[Any]] = []  # the trade items of each frame sent
        subscribed = conn.subscribed
        for entry in self._frames[start:end]:
            if not entry.items or entry.symbols <= subscribed:
                wires.append(entry.wire)
                sent.append(entry.items)
                continue
            kept = [item for item in entry.items if self._wanted(item, subscribed)]
            if not kept:
                continue
            wires.append(ws_text_frame(json.dumps(self.with_items(entry.frame, kept)).encode("utf-8")))
            sent.append(kept)
        if wires:
            async with conn.ws.send_context():  # raises ConnectionClosed unless open; drains (flow control) on exit
                conn.ws.transport.write(b"".join(wires))
            conn.last_sent = time.monotonic()
        self._position = end
        self.frames_sent += len(wires)
        for items in sent:
            for item in items:
                self._happened(item, self.trades_sent)

    def _happened(self, item: Any, ids: list[str]) -> None:
        trade_id = self.item_id(item)
        if trade_id is not None:
            ids.append(trade_id)
            self._recent[str(self.item_symbol(item))].append(item)

    def _wanted(self, item: Any, subscribed: set[str]) -> bool:
        """Drop trades of unsubscribed symbols; malformed items pass through untouched."""
        symbol = self.item_symbol(item)
        return not isinstance(symbol, str) or symbol in subscribed


__all__ = ["HEARTBEAT_S", "Connection", "Entry", "Recording", "ReplayServerBase", "now_text", "parse_speed",
           "ws_text_frame"]
