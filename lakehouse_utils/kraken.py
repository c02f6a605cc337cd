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

from lakehouse_utils.trades import (
    Rejected,
    Trade,
    TradeError,
    normalize_symbol,
    parse_kraken_v2_trade,
    source_stats,
)

log = logging.getLogger(__name__)

KRAKEN_V2_URL = "wss://ws.kraken.com/v2"
EXCHANGE = "kraken"
_RECV_POLL_S = 0.25  # how often a blocked recv wakes up to check stop / idle
_CONNECT_TIMEOUT_S = 10.0
_STALE_FACTOR = 3  # idle for this many ping intervals -> treat the connection as dead


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
    return str(value)[:limit]


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
        while not stop.is_set():
            try:
                opcode, payload = ws.recv_data()
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
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                log.info("server closed the connection")
                return True
            last_recv = time.monotonic()
            yield from self._count(self._handle_payload(payload))
        return False

    # ---- frames -------------------------------------------------------------------------

    def _count(self, items: Iterator[Trade | Rejected]) -> Iterator[Trade | Rejected]:
        for item in items:
            if isinstance(item, Trade):
                self.stats["trades"] += 1
                self.stats["last_trade"] = item
            else:
                self.stats["rejected"] += 1
                log.debug("rejected: %s", item.reason)
            yield item

    def _reject(self, reason: str, raw: str, at: datetime) -> Rejected:
        return Rejected(reason=reason, raw=raw, source=EXCHANGE, received_at=at)

    def _handle_payload(self, payload: bytes | str) -> Iterator[Trade | Rejected]:
        received = datetime.now(UTC)
        self.stats["frames"] += 1
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        text = data.decode("utf-8", errors="replace")
        if len(data) > self.max_frame_bytes:
            self._write_record(text, None)
            yield self._reject(f"frame_too_large {len(data)} bytes", text, received)
            return
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError) as exc:
            self._write_record(text, None)
            yield self._reject(f"invalid_json {getattr(exc, 'msg', type(exc).__name__)}", text, received)
            return
        self._write_record(text, frame)
        if not isinstance(frame, dict):
            yield self._reject(f"not_an_object {type(frame).__name__}", text, received)
        elif "method" in frame:
            yield from self._handle_method(frame, text, received)
        else:
            yield from self._handle_channel(frame, text, received)

    def _handle_method(self, frame: dict[str, Any], text: str, at: datetime) -> Iterator[Rejected]:
        method = frame.get("method")
        if method == "subscribe" and frame.get("success") is True:
            log.info("subscribed: %s", frame.get("result"))
        elif method == "subscribe":
            self.stats["subscribe_errors"] += 1
            log.error("subscribe failed: %s", frame.get("error"))
            yield self._reject(f"subscribe_error {_clip(frame.get('error'), 200)}", text, at)
        elif method == "pong":
            self.stats["pongs"] += 1
        else:
            yield self._reject(f"unknown_method:{_clip(method)}", text, at)

    def _handle_channel(self, frame: dict[str, Any], text: str, at: datetime) -> Iterator[Trade | Rejected]:
        channel = frame.get("channel")
        if channel == "heartbeat":
            self.stats["heartbeats"] += 1
        elif channel == "status":
            log.info("status: %s", frame.get("data"))
        elif channel == "trade":
            yield from self._handle_trades(frame, text, at)
        else:
            yield self._reject(f"unknown_channel:{_clip(channel)}", text, at)

    def _handle_trades(self, frame: dict[str, Any], text: str, at: datetime) -> Iterator[Trade | Rejected]:
        kind, items = frame.get("type"), frame.get("data")
        if kind not in ("snapshot", "update"):
            yield self._reject(f"unknown_trade_type:{_clip(kind)}", text, at)
            return
        if not isinstance(items, list):
            yield self._reject("bad_type:data", text, at)
            return
        for item in items:
            try:
                trade = parse_kraken_v2_trade(item, exchange=EXCHANGE, ingest_time=at)
            except TradeError as exc:
                yield self._reject(exc.reason, json.dumps(item), at)
                continue
            self._track_id(trade, snapshot=kind == "snapshot")
            yield trade

    def _track_id(self, trade: Trade, *, snapshot: bool) -> None:
        if not trade.trade_id.isdigit():
            return
        tid = int(trade.trade_id)
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
        self._recorder.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._recorder.flush()
