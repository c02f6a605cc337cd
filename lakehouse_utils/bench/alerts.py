"""Bar final -> alert in the topic (``alert_latency_s``), measured from outside the pipeline after a run.

Two records the pipeline leaves, neither written for the bench:

- **Gold's Delta log** says when each bar became final to every reader: the commit that added its row to the
  ``is_final=true`` partition (``commitInfo.timestamp``, the wall clock of the commit).  :func:`final_times`
  walks the log of ``bars_<tf>`` and reads the (exchange, symbol, bar_start) of the files each commit added there
  (compactions, ``dataChange = false``, add nothing new and are skipped).
- **The alerts topic** says when each alert arrived: the bench creates it with ``LogAppendTime``
  (:func:`stamped_alerts_topic`), so each message carries the broker's append time.

:func:`alert_latencies` pairs them: per alert (its first copy: the topic is at-least-once), the append time minus
the final time of its bar (for a ``venue_spread`` alert, exchange ``*``, the latest of its venues' bars).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd

from .latency import LOG_APPEND_TIME


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def stamped_alerts_topic(bootstrap: str, topic: str) -> str:
    """Create the alerts ``topic`` (1 partition) with the broker's append time on every message; returns it."""
    from ..kafka.topics import ensure_topic

    ensure_topic(bootstrap, topic, 1, config=LOG_APPEND_TIME)
    return topic


def final_times(table: str | Path) -> dict[tuple[str, str, pd.Timestamp], float]:
    """(exchange, symbol, bar_start) -> wall time (s) of the Delta commit that added the bar as final."""
    import pyarrow.parquet as pq

    table = Path(table)
    out: dict[tuple[str, str, pd.Timestamp], float] = {}
    for log in sorted((table / "_delta_log").glob("[0-9]*.json")):
        at, added = None, []
        for line in log.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "commitInfo" in action:
                at = action["commitInfo"].get("timestamp")
            add = action.get("add")
            if add and add.get("dataChange", True) and (add.get("partitionValues") or {}).get("is_final") == "true":
                added.append(table / unquote(add["path"]))
        if at is None:
            continue
        for path in added:
            try:
                rows = pq.read_table(path, columns=["exchange", "symbol", "bar_start"]).to_pydict()
            except (OSError, ValueError):  # a file removed since (vacuum): its bars are not measured
                continue
            for ex, sym, start in zip(rows["exchange"], rows["symbol"], rows["bar_start"], strict=True):
                out.setdefault((ex, sym, _utc(start)), at / 1000.0)
    return out


def topic_alerts(bootstrap: str, topic: str, timeout: float = 10.0) -> pd.DataFrame:
    """Every message of the alerts ``topic``: alert_id, exchange, symbol, timeframe, bar_start, append time (s)."""
    from confluent_kafka import Consumer, TopicPartition

    from ..kafka.kafka_conf import make_client, metadata

    consumer, errors = make_client(Consumer, bootstrap, **{"group.id": f"bench-alerts-{os.getpid()}",
                                                           "enable.auto.commit": False, "enable.partition.eof": True})
    rows: list[dict[str, Any]] = []
    try:
        meta = metadata(consumer, errors, bootstrap, timeout, topic).topics.get(topic)
        parts = sorted(meta.partitions) if meta is not None and meta.error is None else []
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in parts}
        todo = {p for p in parts if ends[p] > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in todo])
        while todo:
            msgs = consumer.consume(1000, timeout)
            if not msgs:
                break
            for msg in msgs:
                if msg.error():
                    todo.discard(msg.partition())
                    continue
                v = json.loads(msg.value())
                rows.append({"alert_id": v["alert_id"], "exchange": v.get("exchange") or "", "symbol": v["symbol"],
                             "timeframe": v["timeframe"], "bar_start": pd.Timestamp(v["bar_start"]),
                             "append_s": msg.timestamp()[1] / 1000.0})
                if msg.offset() + 1 >= ends[msg.partition()]:
                    todo.discard(msg.partition())
    finally:
        consumer.close()
    return pd.DataFrame(rows, columns=["alert_id", "exchange", "symbol", "timeframe", "bar_start", "append_s"])


def alert_latencies(gold_dir: str | Path, alerts: pd.DataFrame) -> dict[str, Any]:
    """Per alert (first copy), append time - the bar's final time: p50, p95, max, how many alerts were measured."""
    alerts = alerts.sort_values("append_s").drop_duplicates("alert_id")
    finals = {tf: final_times(Path(gold_dir) / f"bars_{tf}") for tf in set(alerts["timeframe"])}
    seconds, unmatched = [], 0
    for a in alerts.itertuples():
        times = finals.get(a.timeframe, {})
        start = _utc(a.bar_start)
        if a.exchange == "*":
            found = [t for (ex, sym, b), t in times.items() if sym == a.symbol and b == start]
            final = max(found) if found else None
        else:
            final = times.get((a.exchange, a.symbol, start))
        if final is None:
            unmatched += 1
            continue
        seconds.append(a.append_s - final)
    s = np.array(seconds)
    return {"p50_s": float(np.percentile(s, 50)) if len(s) else None,
            "p95_s": float(np.percentile(s, 95)) if len(s) else None,
            "max_s": float(s.max()) if len(s) else None, "alerts": len(s), "unmatched": unmatched}


__all__ = ["alert_latencies", "final_times", "stamped_alerts_topic", "topic_alerts"]
