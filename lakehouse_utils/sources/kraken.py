"""Kraken Spot WebSocket v2 trade adapter (synchronous, websocket-client).

``KrakenV2Source(pairs).stream(stop)`` connects, subscribes to the ``trade`` channel and
yields a :class:`Trade` per valid print and a :class:`Rejected` per bad input. It never
raises on bad input, reconnects with capped exponential backoff (and resubscribes), and
sends ``{"method":"ping"}`` when the connection is idle.

Kraken resends up to 50 recent trades in a ``snapshot`` frame after every (re)subscribe.
Those are still yielded (downstream dedups on trade_id); the ones at or below the highest
trade_id already yielded for the symbol are counted in ``stats["snapshot_repeats"]``.

Recording format (also read by :func:`read_recording`): JSON lines
``{"recv_ms": int, "frame": <json>}`` or ``{"recv_ms": int, "raw": "<text>"}``.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import websocket

from .trades import (
    Rejected,
    Trade,
    TradeError,
    normalize_symbol,
    parse_kraken_v2_trade,
    shown,
    source_stats,
)

log = logging.getLogger(__name__)

KRAKEN_V2_URL = "wss://ws.kraken.com/v2"
EXCHANGE = "kraken"
_RECV_POLL_S = 0.25  # how often a blocked recv wakes up to check stop / idle
_CONNECT_TIMEOUT_S = 10.0
_STALE_FACTOR = 3  # idle for this many ping intervals -> treat the connection as dead
_READ_BYTES = 1 << 18  # one socket read takes up to this much (many frames at a time)
_scan_json = json.JSONDecoder().scan_once


def _loads(text: str) -> Any:
    """``json.loads(text)``, minus its per-call overhead for the usual compact, whitespace-free frame."""
    try:
        value, end = _scan_json(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError, RecursionError):
        pass
    return json.loads(text)  # anything unusual: json.loads decides (and words the error)


class _FrameReader:
    """Reads what a server sends on a websocket-client connection, many frames per socket read.

    ``ws.recv_data()`` reads each frame with two or three small ``recv`` calls (a poll and a read
    syscall each) and builds several objects per frame: at 20k frames/s that was a third of the
    source's time. This handles what a server may send (RFC 6455): text and binary messages, also
    fragmented, ping (answered with a pong, as websocket-client does), pong (ignored) and close.
    Raises ``WebSocketTimeoutException`` on a read timeout and ``WebSocketConnectionClosedException``
    when the peer closed the TCP connection, as ``recv_data`` does.
    """

    def __init__(self, ws: websocket.WebSocket) -> None:
        self._ws = ws
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
        elif opcode != abnf.OPCODE_PONG:
            raise websocket.WebSocketProtocolException(f"unexpected frame: opcode {opcode}, fin {bool(fin)}")
        return None


def _unmask(key: bytes, data: bytes) -> bytes:
    """Servers do not mask their frames (RFC 6455 5.1); should one do so, undo it."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def read_recording(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the entries of a JSONL recording (plain or gzip, detected by magic bytes)."""
    path = Path(path)
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _clip(value: Any, limit: int = 40) -> str:
    """A value for a reason string, cut to ``limit`` characters."""
    return shown(value, limit, str)


def _dumps(value: Any, fallback: str) -> str:
    """``json.dumps(value)``; ``fallback`` for a value nested so deep that only its parse fit the stack."""
    try:
        return json.dumps(value)
    except RecursionError:
        return fallback


class KrakenV2Source:
    """Trade stream from a Kraken v2 endpoint (live or a :class:`ReplayServer`)."""

    def __init__(
        self,
        pairs: list[str],
        url: str = KRAKEN_V2_URL,
        *,
        ping_interval: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_frame_bytes: int = 1_000_000,
        record: str | Path | None = None,
        max_reconnects: int | None = None,
        end_on_close: bool = False,
    ) -> None:
        if not pairs:
            raise ValueError("at least one pair is required")
        self.pairs = [normalize_symbol(p) for p in pairs]
        self.url = url
        self.ping_interval = ping_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frame_bytes = max_frame_bytes
        self.record = Path(record) if record is not None else None
        self.max_reconnects = max_reconnects
        self.end_on_close = end_on_close
        self.stats: dict[str, Any] = source_stats(subscribe_errors=0, pongs=0)
        self._highest_id: dict[str, int] = {}
        self._req_id = 0
        self._recorder: IO[str] | None = None

    # ---- public -----------------------------------------------------------------------

    def stream(self, stop: threading.Event) -> Iterator[Trade | Rejected]:
        """Yield trades and rejects until ``stop`` is set (or reconnects run out)."""
        self._recorder = self.record.open("a", encoding="utf-8") if self.record else None
        failures = 0  # consecutive failed connects, drives the backoff
        first = True
        try:
            while not stop.is_set():
                if not first:
                    if self._out_of_reconnects():
                        log.warning("giving up after %d reconnects", self.stats["reconnects"])
                        return
                    if stop.wait(self._backoff(failures)):
                        return
                    self.stats["reconnects"] += 1
                first = False
                ws = self._connect()
                if ws is None:
                    failures += 1
                    continue
                frames_before = self.stats["frames"]
                try:
                    clean = yield from self._session(ws, stop)
                finally:
                    self.stats["connected"] = False
                    ws.close(timeout=1)  # no-op if the server closed first...
                    ws.shutdown()  # ...so always release the socket too
                if clean and self.end_on_close:
                    return
                # a connection that delivered nothing counts as a failure, so flapping backs off
                failures = 0 if self.stats["frames"] > frames_before else failures + 1
        finally:
            if self._recorder is not None:
                self._recorder.close()
                self._recorder = None

    # ---- connection ---------------------------------------------------------------------

    def _connect(self) -> websocket.WebSocket | None:
        try:
            ws = websocket.create_connection(self.url, timeout=_CONNECT_TIMEOUT_S, skip_utf8_validation=True)
        except (OSError, websocket.WebSocketException) as exc:
            log.warning("connect to %s failed: %s", self.url, exc)
            return None
        ws.settimeout(min(_RECV_POLL_S, self.ping_interval))
        subscribe = {"method": "subscribe", "params": {"channel": "trade", "symbol": self.pairs, "snapshot": True}}
        if not self._try_send(ws, subscribe):
            ws.close(timeout=0)
            return None
        self.stats["connected"] = True
        return ws

    def _out_of_reconnects(self) -> bool:
        return self.max_reconnects is not None and self.stats["reconnects"] >= self.max_reconnects

    def _backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_initial * 2**failures)
        return delay * (1 + random.uniform(0, 0.1))

    def _try_send(self, ws: websocket.WebSocket, message: dict[str, Any]) -> bool:
        """Send a request with a fresh req_id; False when the connection is gone."""
        self._req_id += 1
        try:
            ws.send(json.dumps({**message, "req_id": self._req_id}))
        except (OSError, websocket.WebSocketException) as exc:
            log.warning("send failed: %s", exc)
            return False
        return True

    def _session(self, ws: websocket.WebSocket, stop: threading.Event) -> Iterator[Trade | Rejected]:
        """Read frames until stop or disconnect; returns True when the server closed cleanly."""
        last_recv = last_ping = time.monotonic()
        reader = _FrameReader(ws)
        stats = self.stats
        while not stop.is_set():
            try:
                messages = reader.read()
            except websocket.WebSocketTimeoutException:
                now = time.monotonic()
                if now - last_recv > _STALE_FACTOR * self.ping_interval:
                    log.warning("no frames for %.1fs, reconnecting", now - last_recv)
                    return False
                if now - max(last_recv, last_ping) >= self.ping_interval:
                    last_ping = now
                    if not self._try_send(ws, {"method": "ping"}):
                        return False
                continue
            except (OSError, websocket.WebSocketException) as exc:
                log.warning("connection lost: %s", exc)
                return False
            last_recv = time.monotonic()
            for index, (opcode, payload) in enumerate(messages):
                if index and stop.is_set():
                    return False
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    log.info("server closed the connection")
                    return True
                for item in self._handle_payload(payload):
                    if isinstance(item, Trade):
                        stats["trades"] += 1
                        stats["last_trade"] = item
                    else:
                        stats["rejected"] += 1
                        log.debug("rejected: %s", item.reason)
                    yield item
        return False

    # ---- frames (each handler returns the items of one frame) ------------------------------

    def _reject(self, reason: str, raw: str, at: datetime) -> Rejected:
        return Rejected(reason=reason, raw=raw, source=EXCHANGE, received_at=at)

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
            return [self._reject(reason, text, received)]
        try:
            frame = _loads(text)
        except (ValueError, RecursionError) as exc:
            self._write_record(text, None)
            return [self._reject(f"invalid_json {getattr(exc, 'msg', type(exc).__name__)}", text, received)]
        if self._recorder is not None:
            self._write_record(text, frame)
        if not isinstance(frame, dict):
            return [self._reject(f"not_an_object {type(frame).__name__}", text, received)]
        if "method" in frame:
            return self._handle_method(frame, text, received)
        return self._handle_channel(frame, text, received)

    def _handle_method(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        method = frame.get("method")
        if method == "subscribe" and frame.get("success") is True:
            log.info("subscribed: %s", frame.get("result"))
        elif method == "subscribe":
            self.stats["subscribe_errors"] += 1
            log.error("subscribe failed: %s", frame.get("error"))
            return [self._reject(f"subscribe_error {_clip(frame.get('error'), 200)}", text, at)]
        elif method == "pong":
            self.stats["pongs"] += 1
        else:
            return [self._reject(f"unknown_method:{_clip(method)}", text, at)]
        return []

    def _handle_channel(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        channel = frame.get("channel")
        if channel == "trade":
            return self._handle_trades(frame, text, at)
        if channel == "heartbeat":
            self.stats["heartbeats"] += 1
        elif channel == "status":
            log.info("status: %s", frame.get("data"))
        else:
            return [self._reject(f"unknown_channel:{_clip(channel)}", text, at)]
        return []

    def _handle_trades(self, frame: dict[str, Any], text: str, at: datetime) -> list[Trade | Rejected]:
        kind, items = frame.get("type"), frame.get("data")
        if kind not in ("snapshot", "update"):
            return [self._reject(f"unknown_trade_type:{_clip(kind)}", text, at)]
        if not isinstance(items, list):
            return [self._reject("bad_type:data", text, at)]
        out: list[Trade | Rejected] = []
        snapshot = kind == "snapshot"
        for item in items:
            try:
                trade = parse_kraken_v2_trade(item, exchange=EXCHANGE, ingest_time=at)
            except TradeError as exc:
                out.append(self._reject(exc.reason, _dumps(item, text), at))
                continue
            self._track_id(trade, snapshot=snapshot)
            out.append(trade)
        return out

    def _track_id(self, trade: Trade, *, snapshot: bool) -> None:
        text = trade.trade_id  # ASCII digits only: str.isdigit() is also true of "²", which int() refuses
        if len(text) > 40 or not (text.isascii() and text.isdigit()):
            return
        tid = int(text)
        highest = self._highest_id.get(trade.symbol)
        if highest is not None and tid <= highest:
            if snapshot:
                self.stats["snapshot_repeats"] += 1
            return
        self._highest_id[trade.symbol] = tid

    def _write_record(self, text: str, frame: Any) -> None:
        if self._recorder is None:
            return
        entry: dict[str, Any] = {"recv_ms": int(time.time() * 1000)}
        if frame is None:
            entry["raw"] = text
        else:
            entry["frame"] = frame
        try:
            line = json.dumps(entry, separators=(",", ":"))
        except RecursionError:  # nested too deep to write back as JSON: keep the text
            line = json.dumps({"recv_ms": entry["recv_ms"], "raw": text}, separators=(",", ":"))
        self._recorder.write(line + "\n")
        self._recorder.flush()
