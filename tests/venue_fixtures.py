"""The venues' real frames (``tests/fixtures/venues``) as recordings, and a stream collector for the venue tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lakehouse_utils.sources.trades import Rejected, Trade

FIXTURES = Path(__file__).parent / "fixtures" / "venues"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def txt_recording(name: str) -> list[dict[str, Any]]:
    """A ``<recv_ts>: <json>`` capture (cryptofeed's sample data) as recording entries; the lines the client
    sent (``... <- ...``) are left out."""
    rows = []
    for line in (FIXTURES / name).read_text().splitlines():
        if not line.strip() or " <- " in line:
            continue
        ts, _, text = line.partition(": ")
        rows.append({"recv_ms": int(float(ts) * 1000), "frame": json.loads(text)})
    return rows


def frames(name: str) -> list[Any]:
    return [row["frame"] for row in txt_recording(name)]


def collect(source: Any, until: Callable[[list[Trade | Rejected]], bool] = lambda items: False,
            timeout: float = 20.0, done: threading.Event | None = None) -> list[Trade | Rejected]:
    """Run ``source.stream`` until it ends, ``until(items)`` holds, ``timeout`` passes, or ``done`` is set (e.g. a
    replay server's ``finished``) and no item has arrived for half a second: what the server sent has been read.
    (A fixed half second after ``done`` lost the tail of a 2,671-trade replay on a loaded CI machine.)"""
    stop = threading.Event()
    watchdog = threading.Timer(timeout, stop.set)
    watchdog.start()
    items: list[Trade | Rejected] = []
    if done is not None:
        def quiet() -> None:
            if not done.wait(timeout):
                return
            seen = -1
            while seen != len(items) and not stop.wait(0.5):
                seen = len(items)
            stop.set()
        threading.Thread(target=quiet, daemon=True).start()
    try:
        for item in source.stream(stop):
            items.append(item)
            if until(items):
                stop.set()
    finally:
        watchdog.cancel()
    return items


def trades_of(items: list[Trade | Rejected]) -> list[Trade]:
    return [i for i in items if isinstance(i, Trade)]


def rejects_of(items: list[Trade | Rejected]) -> list[Rejected]:
    return [i for i in items if isinstance(i, Rejected)]
