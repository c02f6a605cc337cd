"""Trade -> Gold latency, measured from outside the pipeline.

Two independent observers, neither inside the process under test:

- **Kafka** says when each trade arrived: the bench topic uses ``message.timestamp.type=LogAppendTime``,
  so every message carries the broker's append time.  :func:`kafka_arrivals` reads them back after the
  run (one row per distinct trade, the first copy wins, as in Silver).
- **A Gold reader** in its own process (:func:`poll_gold`, ``python -m lakehouse_utils.bench.poll``)
  reads ``gold/bars_1m`` with ``deltalake`` every ``interval`` seconds, exactly as the live chart does, and
  logs the wall time whenever a symbol's trade count changes.

Per venue and symbol (``exchange|symbol``, the topic's key), trades enter Gold in offset order (one partition per
key, Silver keeps offset order), so when a key's count goes from ``a`` to ``b`` at time ``t``, its trades ranked
``a+1 .. b`` became visible at ``t``: :func:`latencies` gives each trade ``t - append_time``.  A trade never
counted (late, quarantined, still in flight at the end) has no latency and is reported as ``unseen``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def stamped_topic(bootstrap: str, topic: str) -> str:
    """Create ``topic`` (1 partition) with the broker's append time on every message, and its DLQ; returns it."""
    from ..kafka.topics import ensure_topic

    ensure_topic(bootstrap, topic, 1, config=LOG_APPEND_TIME)  # the broker stamps each trade's arrival
    ensure_topic(bootstrap, f"{topic}.dlq", 1)
    return topic


def venue_key(exchange: object, symbol: object) -> str:
    """How the bench names one venue's symbol: ``kraken|BTC/USD`` (several venues trade one symbol)."""
    return f"{exchange or ''}|{str(symbol).upper()}"


def gold_trade_counts(gold_dir: str | Path) -> dict[str, int]:
    """Trades per venue and symbol (:func:`venue_key`) in the 1-minute Gold bars, as a ``deltalake`` reader (the
    chart) sees them."""
    from ..views.charts import read_bars

    bars = read_bars(gold_dir, "1m")
    if bars.empty:
        return {}
    return {venue_key(ex, sym): int(v) for (ex, sym), v in bars.groupby(["exchange", "symbol"])["trades"].sum().items()}


def poll_gold(gold_dir: str | Path, out: str | Path, interval: float = 0.2, stop_file: str | Path | None = None,
              max_seconds: float = 3600.0) -> None:
    """Append ``{"t": wall time, "counts": {...}}`` to ``out`` whenever Gold's counts change."""
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    last: dict[str, int] | None = None
    deadline = time.monotonic() + max_seconds
    with open(out, "a", buffering=1) as fh:
        fh.write(json.dumps({"t": time.time(), "start": True}) + "\n")
        while not stop[0] and time.monotonic() < deadline:
            if stop_file is not None and Path(stop_file).exists():
                break
            t0 = time.monotonic()
            try:
                counts = gold_trade_counts(gold_dir)
            except Exception as exc:  # a table being created, a file compacted away between list and read
                fh.write(json.dumps({"t": time.time(), "error": str(exc)[:200]}) + "\n")
                counts = last
            seen = time.time()
            if counts is not None and counts != last:
                fh.write(json.dumps({"t": seen, "counts": counts, "read_s": time.monotonic() - t0}) + "\n")
                last = counts
            time.sleep(max(0.0, interval - (time.monotonic() - t0)))


class GoldPoller:
    """:func:`poll_gold` in a child process (so the reader competes for CPU like a second kernel would)."""

    def __init__(self, gold_dir: str | Path, out: str | Path, interval: float = 0.2,
                 max_seconds: float = 3600.0) -> None:
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lakehouse_utils.bench.poll", str(gold_dir), str(self.out), str(interval),
             str(max_seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> list[dict]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.records()

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def first_bar_time(self) -> float | None:
        for r in self.records():
            if r.get("counts") and sum(r["counts"].values()) > 0:
                return float(r["t"])
        return None


def kafka_arrivals(bootstrap: str, topic: str, timeout: float = 10.0) -> pd.DataFrame:
    """One row per distinct trade of ``topic``: symbol, trade_id, partition, offset, append time (s), event time,
    and ``key`` (:func:`venue_key`)."""
    from confluent_kafka import Consumer, TopicPartition

    from ..kafka.kafka_conf import make_client, metadata

    consumer, errors = make_client(Consumer, bootstrap, **{"group.id": f"bench-{os.getpid()}",
                                                           "enable.auto.commit": False, "enable.partition.eof": True})
    rows: list[tuple[str, str, int, int, float, str, str]] = []
    try:
        meta = metadata(consumer, errors, bootstrap, timeout, topic).topics[topic]
        parts = sorted(meta.partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        todo = {p for p in parts if ends[p] > 0}
        quiet_until = time.monotonic() + timeout
        while todo:
            # short waits: a consume of 10,000 waits its whole timeout when fewer are left (10 s a call)
            msgs = consumer.consume(10_000, 0.2)
            if msgs:
                quiet_until = time.monotonic() + timeout
            elif time.monotonic() > quiet_until:
                raise TimeoutError(f"{topic}: nothing read for {timeout:.0f} s with partitions {sorted(todo)} short "
                                   f"of their end offsets {ends}")
            for msg in msgs:
                if msg.error():
                    todo.discard(msg.partition())
                    continue
                try:
                    value = json.loads(msg.value())
                    rows.append((str(value["symbol"]).upper(), str(value["trade_id"]), msg.partition(),
                                 msg.offset(), msg.timestamp()[1] / 1000.0, str(value.get("event_time")),
                                 venue_key(value.get("exchange"), value["symbol"])))
                except (ValueError, KeyError, TypeError):
                    pass  # junk: quarantined by Silver, never in Gold
                if msg.offset() + 1 >= ends[msg.partition()]:
                    todo.discard(msg.partition())
    finally:
        consumer.close()
    df = pd.DataFrame(rows, columns=["symbol", "trade_id", "partition", "offset", "append_s", "event_time", "key"])
    return df.sort_values(["partition", "offset"]).drop_duplicates(["key", "trade_id"]).reset_index(drop=True)


@dataclass
class LatencyResult:
    seconds: np.ndarray  # one latency per trade seen in Gold, in offset order per symbol
    trades: int
    unseen: int

    def pct(self, q: float) -> float | None:
        return float(np.percentile(self.seconds, q)) if len(self.seconds) else None

    def summary(self) -> dict[str, float | int | None]:
        return {"p50_s": self.pct(50), "p95_s": self.pct(95), "p99_s": self.pct(99),
                "max_s": float(self.seconds.max()) if len(self.seconds) else None,
                "trades": self.trades, "seen": len(self.seconds), "unseen": self.unseen}


def latencies(arrivals: pd.DataFrame, polls: list[dict], since: float | None = None,
              until: float | None = None) -> LatencyResult:
    """Per-trade latency from Kafka's append time to the first Gold read counting it.

    ``since`` (wall time) keeps only trades appended at or after it (to leave a warm-up out), ``until`` only those
    appended before it; the ranks are taken over all of ``arrivals`` either way.
    """
    out: list[np.ndarray] = []
    unseen = 0
    changes = [r for r in polls if "counts" in r]
    for key, trades in arrivals.groupby("key", sort=False):
        appended = trades.sort_values(["partition", "offset"])["append_s"].to_numpy()
        visible_at = np.full(len(appended), np.nan)
        seen = 0
        for r in changes:
            n = min(int(r["counts"].get(key, 0)), len(appended))
            if n > seen:
                visible_at[seen:n] = r["t"]
                seen = n
        keep = appended >= since if since is not None else np.ones(len(appended), bool)
        if until is not None:
            keep &= appended < until
        lat = (visible_at - appended)[keep]
        unseen += int(np.isnan(lat).sum())
        out.append(lat[~np.isnan(lat)])
    seconds = np.concatenate(out) if out else np.array([])
    return LatencyResult(seconds, int(sum(len(x) for x in out)) + unseen, unseen)
