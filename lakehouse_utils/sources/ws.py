"""What every live venue adapter does the same way: connect, subscribe, read frames, keep alive, reconnect.

:class:`WebSocketSource` runs the loop; a venue's adapter (``kraken``, ``coinbase``, ``binance``) says what to
subscribe to (:meth:`~WebSocketSource.subscribe_messages`), how to keep an idle connection alive
(:meth:`~WebSocketSource.keepalive`) and what a frame means (:meth:`~WebSocketSource.handle_frame`, with
:meth:`~WebSocketSource.parse_items` for the trades in it). The loop:

- never raises on bad input: a frame that is not UTF-8, too large, not JSON or not an object is a
  :class:`~lakehouse_utils.sources.trades.Rejected` with its reason, and so is whatever the venue's handler
  refuses;
- reconnects with capped exponential backoff (a connection that delivered nothing counts as a failure, so a
  flapping endpoint backs off) and subscribes again; a handler may ask for a new connection at once
  (Binance's ``serverShutdown``), and ``max_connection_s`` renews a connection before the venue's limit;
- keeps an idle connection alive every ``ping_interval`` and treats one silent for three intervals as dead;
- follows trade ids (:class:`~lakehouse_utils.sources.gaps.IdGaps`): skipped ids are counted with their ranges,
  and trades of a snapshot at or below the highest id seen are counted as ``snapshot_repeats`` (still yielded:
  Silver deduplicates them);
- appends every frame to ``record`` (the venue's wire format, see ``recording.py``).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

import websocket

from .gaps import IdGaps
from .recording import record_line
from .trades import Rejected, Trade, TradeError, normalize_symbol, shown, source_stats

log = logging.getLogger(__name__)

_RECV_POLL_S = 0.25  # how often a blocked recv wakes up to check stop / idle
_CONNECT_TIMEOUT_S = 10.0
_STALE_FACTOR = 3  # idle for this many ping intervals -> treat the connection as dead
_READ_BYTES = 1 << 18  # one socket read takes up to this much (many frames at a time)
_scan_json = json.JSONDecoder().scan_once
# how a session ended: the server closed it cleanly | it broke | we renew it now (no backoff) | stop was set
CLOSED, LOST, RENEW, STOPPED = "closed", "lost", "renew", "stopped"


def loads(text: str) -> Any:
    """``json.loads(text)``, minus its per-call overhead for the usual compact, whitespace-free frame."""
    try:
        value, end = _scan_json(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError, RecursionError):
        pass
    return json.loads(text)  # anything unusual: json.loads decides (and words the error)


class FrameReader:
    """Reads what a server sends on a websocket-client connection, many frames per socket read.

    ``ws.recv_data()`` reads each frame with two or three small ``recv`` calls (a poll and a read
    syscall each) and builds several objects per frame: at 20k frames/s that was a third of the
    source's time. This handles what a server may send (RFC 6455): text and binary messages, also
    fragmented, ping (answered with a pong, as websocket-client does; counted in ``stats["server_pings"]``),
    pong (counted in ``stats["pongs"]``) and close. Raises ``WebSocketTimeoutException`` on a read timeout and
    ``WebSocketConnectionClosedException`` when the peer closed the TCP connection, as ``recv_data`` does.
    """

    def __init__(self, ws: websocket.WebSocket, stats: dict[str, Any] | None = None) -> None:
        self._ws = ws
        self._stats = stats if stats is not None else {}
        self._buf = b""  # the start of a frame not complete yet
        self._fragments: list[bytes] = []
        self._fragmented_opcode = 0

    def read(self) -> list[tuple[int, bytes]]:
        """The messages ``(opcode, payload)`` completed by one socket read (maybe none)."""
        try:
            data = self._ws.sock.recv(_READ_BYTES)
        except TimeoutError as exc:
            raise websocket.WebSocketTimeoutException(str(exc)) from None
        if not data:
            raise websocket.WebSocketConnectionClosedException("Connection to remote host was lost.")
        buf = self._buf + data if self._buf else data
        size, pos = len(buf), 0
        messages: list[tuple[int, bytes]] = []
        while size - pos >= 2:
            first, length = buf[pos], buf[pos + 1]
            masked, length, head = length & 0x80, length & 0x7F, pos + 2
            if length == 126:
                length, head = int.from_bytes(buf[head : head + 2], "big"), head + 2
            elif length == 127:
                length, head = int.from_bytes(buf[head : head + 8], "big"), head + 8
            if masked:
                head += 4
            end = head + length
            if end > size:  # incomplete (header included): wait for more
                break
            payload = buf[head:end] if not masked else _unmask(buf[head - 4 : head], buf[head:end])
            pos = end
            message = self._message(first & 0x80, first & 0x0F, payload)
            if message is not None:
                messages.append(message)
        self._buf = buf[pos:]
        return messages

    def _message(self, fin: int, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        abnf = websocket.ABNF
        if opcode in (abnf.OPCODE_TEXT, abnf.OPCODE_BINARY) and not self._fragments:
            if fin:
                return opcode, payload
            self._fragmented_opcode, self._fragments = opcode, [payload]
        elif opcode == abnf.OPCODE_CONT and self._fragments:
            self._fragments.append(payload)
            if fin:
                message = self._fragmented_opcode, b"".join(self._fragments)
                self._fragments = []
                return message
        elif opcode == abnf.OPCODE_CLOSE:
            self._ws.send_close()  # answer it, as recv_data does
            return opcode, payload
        elif opcode == abnf.OPCODE_PING:
            self._ws.pong(payload)
            self._stats["server_pings"] = self._stats.get("server_pings", 0) + 1
        elif opcode == abnf.OPCODE_PONG:
            self._stats["pongs"] = self._stats.get("pongs", 0) + 1
        else:
            raise websocket.WebSocketProtocolException(f"unexpected frame: opcode {opcode}, fin {bool(fin)}")
        return None


def _unmask(key: bytes, data: bytes) -> bytes:
    """Servers do not mask their frames (RFC 6455 5.1); should one do so, undo it."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def clip(value: Any, limit: int = 40) -> str:
    """A value for a reason string, cut to ``limit`` characters."""
    return shown(value, limit, str)


def dumps(value: Any, fallback: str) -> str:
    """``json.dumps(value)``; ``fallback`` for a value nested so deep that only its parse fit the stack."""
    try:
        return json.dumps(value)
    except RecursionError:
        return fallback


class WebSocketSource:
    """Trades from one venue's WebSocket (live, or its replay server); subclasses speak the venue's protocol."""

    exchange: ClassVar[str] = ""  # Trade.exchange of its trades and Rejected.source of its rejects
    default_url: ClassVar[str] = ""

    def __init__(
        self,
        pairs: list[str],
        url: str | None = None,
        *,
        ping_interval: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_frame_bytes: int = 1_000_000,
        record: str | Path | None = None,
        max_reconnects: int | None = None,
        end_on_close: bool = False,
        max_connection_s: float | None = None,
    ) -> None:
        if not pairs:
            raise ValueError("at least one pair is required")
        self.pairs = [normalize_symbol(p) for p in pairs]
        self.url = url or self.default_url
        self.ping_interval = ping_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frame_bytes = max_frame_bytes
        self.record = Path(record) if record is not None else None
        self.max_reconnects = max_reconnects
        self.end_on_close = end_on_close
        self.max_connection_s = max_connection_s
        self.stats: dict[str, Any] = source_stats(subscribe_errors=0, pongs=0, server_pings=0, renewals=0)
        self.gaps = IdGaps(self.stats)
        self._recorder: IO[str] | None = None
        self._renew = False  # set by a frame handler: reconnect now (the venue is going away)

    # ---- what a venue says (subclasses) ---------------------------------------------------------

    def subscribe_messages(self) -> list[dict[str, Any]]:
        """The requests sent on every new connection, in order."""
        raise NotImplementedError

    def keepalive(self, ws: websocket.WebSocket) -> bool:
        """Keep an idle connection alive (default: a WebSocket ping); False when the connection is gone."""
        try:
            ws.ping(b"keepalive")
        except (OSError, websocket.WebSocketException) as exc:
            log.warning("ping failed: %s", exc)
            return False
        return True

    def handle_frame(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        """The trades and rejects of one JSON object the venue sent."""
        raise NotImplementedError

    # ---- public -----------------------------------------------------------------------------------

    def stream(self, stop: threading.Event) -> Iterator[Trade | Rejected]:
        """Yield trades and rejects until ``stop`` is set (or reconnects run out)."""
        self._recorder = self.record.open("a", encoding="utf-8") if self.record else None
        failures = 0  # consecutive failed connects, drives the backoff
        first, end = True, LOST
        try:
            while not stop.is_set():
                if not first:
                    if self._out_of_reconnects():
                        log.warning("giving up after %d reconnects", self.stats["reconnects"])
                        return
                    if end != RENEW and stop.wait(self._backoff(failures)):
                        return
                    self.stats["reconnects"] += 1
                first = False
                ws = self._connect()
                if ws is None:
                    failures, end = failures + 1, LOST
                    continue
                frames_before = self.stats["frames"]
                try:
                    end = yield from self._session(ws, stop)
                finally:
                    self.stats["connected"] = False
                    ws.close(timeout=1)  # no-op if the server closed first...
                    ws.shutdown()  # ...so always release the socket too
                if end == CLOSED and self.end_on_close:
                    return
                # a connection that delivered nothing counts as a failure, so flapping backs off
                failures = 0 if self.stats["frames"] > frames_before else failures + 1
        finally:
            if self._recorder is not None:
                self._recorder.close()
                self._recorder = None

    # ---- connection -------------------------------------------------------------------------------

    def _connect(self) -> websocket.WebSocket | None:
        try:
            ws = websocket.create_connection(self.url, timeout=_CONNECT_TIMEOUT_S, skip_utf8_validation=True)
        except (OSError, websocket.WebSocketException) as exc:
            log.warning("connect to %s failed: %s", self.url, exc)
            return None
        ws.settimeout(min(_RECV_POLL_S, self.ping_interval))
        self._renew = False
        for message in self.subscribe_messages():
            if not self.send(ws, message):
                ws.close(timeout=0)
                return None
        self.stats["connected"] = True
        return ws

    def _out_of_reconnects(self) -> bool:
        return self.max_reconnects is not None and self.stats["reconnects"] >= self.max_reconnects

    def _backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_initial * 2**failures)
        return delay * (1 + random.uniform(0, 0.1))

    def send(self, ws: websocket.WebSocket, message: dict[str, Any]) -> bool:
        """Send one JSON request; False when the connection is gone."""
        try:
            ws.send(json.dumps(message))
        except (OSError, websocket.WebSocketException) as exc:
            log.warning("send failed: %s", exc)
            return False
        return True

    def renew(self, why: str) -> None:
        """Ask for a new connection at once (no backoff), after the frame being handled."""
        log.info("%s: renewing the connection (%s)", self.exchange, why)
        self.stats["renewals"] += 1
        self._renew = True

    def _session(self, ws: websocket.WebSocket, stop: threading.Event) -> Iterator[Trade | Rejected]:
        """Read frames until stop, a disconnect or a renewal; returns how it ended (CLOSED, LOST, RENEW, STOPPED)."""
        opened = last_recv = last_ping = time.monotonic()
        reader = FrameReader(ws, self.stats)
        stats = self.stats
        while not stop.is_set():
            if self._renew:
                return RENEW
            if self.max_connection_s is not None and time.monotonic() - opened >= self.max_connection_s:
                self.renew(f"open for {self.max_connection_s:g} s, the venue's limit is near")
                return RENEW
            try:
                messages = reader.read()
            except websocket.WebSocketTimeoutException:
                now = time.monotonic()
                if now - last_recv > _STALE_FACTOR * self.ping_interval:
                    log.warning("no frames for %.1fs, reconnecting", now - last_recv)
                    return LOST
                if now - max(last_recv, last_ping) >= self.ping_interval:
                    last_ping = now
                    if not self.keepalive(ws):
                        return LOST
                continue
            except (OSError, websocket.WebSocketException) as exc:
                log.warning("connection lost: %s", exc)
                return LOST
            last_recv = time.monotonic()
            for index, (opcode, payload) in enumerate(messages):
                if index and stop.is_set():
                    return STOPPED
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    log.info("server closed the connection")
                    return CLOSED
                for item in self._handle_payload(payload):
                    if isinstance(item, Trade):
                        stats["trades"] += 1
                        stats["last_trade"] = item
                    else:
                        stats["rejected"] += 1
                        log.debug("rejected: %s", item.reason)
                    yield item
        return STOPPED

    # ---- frames ------------------------------------------------------------------------------------

    def reject(self, reason: str, raw: str, at: datetime) -> Rejected:
        return Rejected(reason=reason, raw=raw, source=self.exchange, received_at=at)

    def _handle_payload(self, payload: bytes | str) -> list[Trade | Rejected]:
        received = datetime.now(UTC)
        self.stats["frames"] += 1
        data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
        try:
            text, reason = data.decode("utf-8"), None
        except UnicodeDecodeError:  # RFC 6455 wants UTF-8 text, which the connection does not check (speed)
            text, reason = data.decode("utf-8", errors="replace"), "invalid_utf8"
        if len(data) > self.max_frame_bytes:
            reason = f"frame_too_large {len(data)} bytes"
        if reason is not None:
            self._write_record(text, None)
            return [self.reject(reason, text, received)]
        try:
            frame = loads(text)
        except (ValueError, RecursionError) as exc:
            self._write_record(text, None)
            return [self.reject(f"invalid_json {getattr(exc, 'msg', type(exc).__name__)}", text, received)]
        if self._recorder is not None:
            self._write_record(text, frame)
        if not isinstance(frame, dict):
            return [self.reject(f"not_an_object {type(frame).__name__}", text, received)]
        return self.handle_frame(frame, text, received)

    def parse_items(self, items: list[Any], parse: Callable[[Any, datetime], Trade], text: str, at: datetime,
                    *, snapshot: bool = False) -> list[Trade | Rejected]:
        """Each item through ``parse`` (a TradeError makes it a Rejected holding the item), ids followed.

        ``snapshot``: the venue re-sends these on (re)subscribe; they are counted in ``snapshot_trades``, and those
        at or below the highest id seen in ``snapshot_repeats``.
        """
        out: list[Trade | Rejected] = []
        trades: list[Trade] = []
        for item in items:
            try:
                trade = parse(item, at)
            except TradeError as exc:
                out.append(self.reject(exc.reason, dumps(item, text), at))
                continue
            out.append(trade)
            trades.append(trade)
        if snapshot:
            self.stats["snapshot_trades"] += len(trades)
        if len(trades) > 1:  # in id order (a venue may send newest first), so a snapshot's new ids are not repeats
            trades.sort(key=lambda t: (len(t.trade_id), t.trade_id))
        see = self.gaps.see
        for trade in trades:
            see(trade.exchange, trade.symbol, trade.trade_id, snapshot=snapshot, at=trade.event_time)
        return out

    def _write_record(self, text: str, frame: Any) -> None:
        if self._recorder is not None:
            self._recorder.write(record_line(text, frame))
            self._recorder.flush()


__all__ = ["CLOSED", "LOST", "RENEW", "STOPPED", "FrameReader", "WebSocketSource", "clip", "dumps", "loads"]
