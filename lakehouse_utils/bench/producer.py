"""Producer throughput, the whole path as ``lakehouse ingest`` runs it: source -> ProducerThread -> broker.

- :func:`producer_synthetic_rate`: ``SyntheticSource`` at speed "max" (``make_source("synthetic")``).
- :func:`producer_replay_rate`: a :class:`~lakehouse_utils.sources.replay.ReplayServer` at speed "max" playing a
  generated recording (:func:`write_recording`: the bundled real hour repeated with fresh trade ids and
  timestamps) -> ``KrakenV2Source`` over a real local WebSocket (``make_source("replay")``).

Both time ``ProducerThread.start()`` -> ``join()`` (flush included; topic creation and loading the
recording are not), count only messages the broker acknowledged, and check that the topic's end offset
equals that count. Each run writes to its own fresh topic.

CLI: ``python -m lakehouse_utils.bench.producer [--bootstrap HOST:PORT] [--repeats 3]`` (without
``--bootstrap`` it starts an embedded broker in a temp dir).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..kafka.producer import ProducerThread, TradeProducer, make_source
from ..kafka.topics import end_offsets
from ..procs import free_port_pair
from ..sources.kraken import read_recording
from ..sources.replay import SAMPLE_RECORDING
from ..sources.trades import format_time

SYNTHETIC_PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD"]
REPLAY_PAIRS = ["BTC/USD"]


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def write_recording(path: Path, n_trades: int, *, per_frame: int | None = None, symbols: list[str] | None = None,
                    source: Path = SAMPLE_RECORDING) -> Path:
    """A recording of ``n_trades`` trades: ``source`` repeated, each pass shifted past the previous one.

    Trade ids keep counting up and times (``recv_ms`` and ``timestamp``) move on by the recording's
    span per pass, so every trade is distinct. Frames keep their recorded shape (the bundled hour:
    one trade per frame, once two) unless ``per_frame`` regroups the trades, that many per frame.
    ``symbols`` deals the trades round-robin over those symbols (default: as recorded). Written as
    gzipped JSON lines like the bundled hour.
    """
    rows = list(read_recording(source))
    status = [r for r in rows if r.get("frame", {}).get("channel") == "status"][:1]
    frames = [r for r in rows if r.get("frame", {}).get("channel") == "trade"]
    if not frames:
        raise ValueError(f"{source} holds no trade frames")
    ids = [int(item["trade_id"]) for r in frames for item in r["frame"]["data"]]
    id_span = max(ids) - min(ids) + 1
    ms_span = frames[-1]["recv_ms"] - frames[0]["recv_ms"] + 1000

    def trades() -> Iterator[tuple[int, dict[str, Any], str]]:  # (recv_ms, item, frame type), n_trades of them
        made = 0
        for lap in itertools.count():
            shift = timedelta(milliseconds=ms_span * lap)
            for row in frames:
                for item in row["frame"]["data"]:
                    ts = format_time(_parse_time(item["timestamp"]) + shift)
                    symbol = symbols[made % len(symbols)] if symbols else item["symbol"]
                    trade_id = int(item["trade_id"]) + id_span * lap
                    moved = {**item, "symbol": symbol, "trade_id": trade_id, "timestamp": ts}
                    yield row["recv_ms"] + ms_span * lap, moved, row["frame"].get("type", "update")
                    made += 1
                    if made == n_trades:
                        return
                if per_frame is None:
                    yield -1, {}, ""  # end of a recorded frame

    def line(recv_ms: int, data: list[dict[str, Any]], kind: str) -> str:
        frame = {"channel": "trade", "type": kind, "data": data}
        return json.dumps({"recv_ms": recv_ms, "frame": frame}, separators=(",", ":")) + "\n"

    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as out:
        for row in status:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        batch: list[dict[str, Any]] = []
        last_ms, last_kind = 0, "update"
        for recv_ms, item, kind in trades():
            if item:
                batch.append(item)
                last_ms, last_kind = recv_ms, kind
            if batch and (not item or len(batch) == per_frame):
                out.write(line(last_ms, batch, last_kind))
                batch = []
        if batch:
            out.write(line(last_ms, batch, last_kind))
    return path


def _run(bootstrap: str, kind: str, pairs: list[str], timeout: float = 900.0,
         **source_args: Any) -> tuple[int, float]:
    """One run on a fresh topic: (trades delivered, seconds from thread start to the end of the flush)."""
    topic = f"bench.producer.{kind}.{uuid.uuid4().hex[:8]}"
    producer = TradeProducer(bootstrap, topic).start()  # topics exist before the clock starts
    source, cleanup = make_source(kind, pairs, speed="max", **source_args)
    thread = ProducerThread(source, producer, name=kind, cleanup=cleanup)
    t0 = time.monotonic()
    thread.start()
    if not thread.join(timeout):
        raise RuntimeError(f"producer run still going after {timeout:.0f} s: {thread.stop(10).line()}")
    elapsed = time.monotonic() - t0
    status = thread.status()
    if not status.ok or status.in_flight:
        raise RuntimeError(f"producer run failed: {status.line()}")
    offsets = end_offsets(bootstrap, topic)
    if sum(offsets.values()) != status.delivered:
        raise RuntimeError(f"topic {topic} holds {offsets}, the producer counted {status.delivered} delivered")
    return status.delivered, elapsed


def producer_synthetic_rate(bootstrap: str, workdir: Path, n: int = 500_000) -> float:
    """Trades/s delivered: synthetic source at speed "max" -> ProducerThread -> Kafka."""
    delivered, elapsed = _run(bootstrap, "synthetic", SYNTHETIC_PAIRS, n_trades=n)
    if delivered != n:
        raise RuntimeError(f"delivered {delivered} of {n} synthetic trades")
    return delivered / elapsed


def producer_replay_rate(bootstrap: str, workdir: Path, n: int = 100_000) -> float:
    """Trades/s delivered: replay server at speed "max" -> websocket -> KrakenV2Source -> ProducerThread -> Kafka."""
    workdir.mkdir(parents=True, exist_ok=True)
    recording = workdir / f"replay_{n}.jsonl.gz"
    if not recording.exists():  # made once per workdir; renamed into place so a cut-off write is never reused
        partial = recording.with_suffix(f".{uuid.uuid4().hex[:6]}.part")
        write_recording(partial, n).replace(recording)
    delivered, elapsed = _run(bootstrap, "replay", REPLAY_PAIRS, file=recording)
    if delivered != n:
        raise RuntimeError(f"delivered {delivered} of {n} replayed trades")
    return delivered / elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="producer throughput (trades/s delivered)")
    ap.add_argument("--bootstrap", default=None, help="a running broker (default: start one in a temp dir)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("synthetic", "replay"), default=None)
    ap.add_argument("--synthetic-n", type=int, default=500_000)
    ap.add_argument("--replay-n", type=int, default=100_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-producer-") as tmp:
        workdir = Path(tmp)
        kafka = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            from ..kafka.broker import LocalKafka

            kafka = LocalKafka(workdir / "kafka", free_port_pair()).start()
            bootstrap = kafka.bootstrap
        try:
            benches = {"synthetic": lambda: producer_synthetic_rate(bootstrap, workdir, args.synthetic_n),
                       "replay": lambda: producer_replay_rate(bootstrap, workdir, args.replay_n)}
            for name, bench in benches.items():
                if args.only not in (None, name):
                    continue
                rates = []
                for _ in range(args.repeats):
                    rates.append(bench())
                    print(f"  {name}: {rates[-1]:,.0f} trades/s", flush=True)
                print(f"{name}: median {statistics.median(rates):,.0f} trades/s over {len(rates)} runs", flush=True)
        finally:
            if kafka is not None:
                kafka.stop()


if __name__ == "__main__":
    main()
