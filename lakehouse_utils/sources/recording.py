"""Recordings: what a venue sent, one frame a line, in the venue's own wire format.

Format (every venue; plain or gzip, told apart by the magic bytes), one received frame a line::

    {"recv_ms": <int, ms since the epoch when it arrived>, "frame": <the frame as JSON>}
    {"recv_ms": <int>, "raw": "<text that was not JSON, kept verbatim>"}

A live source writes one with ``record=...`` (``lakehouse ingest --record FILE``); each venue's replay server
(``sources/replay.py``, ``coinbase_replay.py``, ``binance_replay.py``) plays one back.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

SAMPLE_RECORDING = Path(__file__).parents[1] / "data" / "kraken_v2_btcusd_2019-07-01T00.jsonl.gz"  # the real hour
Recording = str | Path | list[dict[str, Any]]  # a recording's file, or its entries


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


def entries(recording: Recording) -> list[dict[str, Any]]:
    """The entries of a recording given as a file or as its entries."""
    return list(read_recording(recording)) if isinstance(recording, str | Path) else list(recording)


def write_recording(path: str | Path, entries: Iterable[dict[str, Any]]) -> Path:
    """Write entries (``{"recv_ms", "frame"}`` or ``{"recv_ms", "raw"}``) as JSON lines, gzipped if ``.gz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(tmp, "wt", encoding="utf-8") as out:
        for entry in entries:
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")
    tmp.replace(path)  # a reader never sees half a recording
    return path


def record_line(text: str, frame: Any) -> str:
    """One received frame as a recording line (with its newline): ``frame`` parsed, or None to keep ``text``."""
    entry: dict[str, Any] = {"recv_ms": int(time.time() * 1000)}
    if frame is None:
        entry["raw"] = text
    else:
        entry["frame"] = frame
    try:
        line = json.dumps(entry, separators=(",", ":"))
    except RecursionError:  # nested too deep to write back as JSON: keep the text
        line = json.dumps({"recv_ms": entry["recv_ms"], "raw": text}, separators=(",", ":"))
    return line + "\n"


__all__ = ["SAMPLE_RECORDING", "Recording", "entries", "read_recording", "record_line", "write_recording"]
