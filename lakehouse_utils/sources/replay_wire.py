"""What a replay server puts on the wire: WebSocket text frames, recorded entries, a client's connection."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import ServerConnection

from .trades import format_time


def ws_text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, final WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def now_text() -> str:
    return format_time(datetime.now(UTC))


def parse_speed(speed: float | str) -> float | None:
    """None means as fast as possible."""
    if speed == "max":
        return None
    value = float(speed)
    if value <= 0:
        raise ValueError(f"speed must be > 0 or 'max', got {speed!r}")
    return value


@dataclass(frozen=True)
class Entry:
    """One recorded frame: ``text`` is what goes on the wire, ``wire`` the same as a WebSocket frame."""

    recv_ms: int | None
    text: str
    frame: Any  # parsed frame, None for raw lines
    wire: bytes
    items: list[Any]  # its trade items (empty for any other frame)
    symbols: frozenset[str]  # the venue's names of their symbols


@dataclass
class Connection:
    """What one client asked for on its connection."""

    ws: ServerConnection
    subscribed: set[str] = field(default_factory=set)  # the venue's symbol names
    channels: set[str] = field(default_factory=set)  # e.g. heartbeats
    last_sent: float = field(default_factory=time.monotonic)

    async def send(self, text: str) -> None:
        await self.ws.send(text)
        self.last_sent = time.monotonic()
