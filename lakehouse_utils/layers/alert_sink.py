"""Where alerts go: the Delta table ``<gold>/alerts`` (exactly once per id) and the alerts topic (at least once).

:func:`write_alerts` publishes the new alerts (ids not in the table yet) to ``settings.alerts_topic`` (JSON, key =
alert id), then MERGEs them into the table (insert if absent).  Dying in between loses nothing: the next call
publishes them again and stores them, so an alert is never stored without having been published, and consumers
dedup by key.  Gold calls it for the bars it has just made final (:mod:`gold_alerts`); notebook 06's panel calls it
when asked.

A table written before alerts carried an ``exchange`` (no ``exchange``, ``detail`` columns) is migrated when it
is next written: the columns are added (nullable; older rows read NULL there, shown as ``""``) in one metadata
commit, and the older ids (``symbol|timeframe|bar_start|kind``) stay as they are.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Settings, table_exists
from ..procs import reachable as broker_reachable
from .alerts import ALERT_COLUMNS, empty_alerts

# the columns added to the table after its first release, with their Delta types (see the module doc)
NEW_COLUMNS = [("exchange", "string"), ("detail", "string")]


def alerts_path(settings: Settings) -> Path:
    return settings.alerts_table


def arrow_schema() -> Any:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([("alert_id", pa.string()), ("exchange", pa.string()), ("symbol", pa.string()),
                      ("timeframe", pa.string()), ("bar_start", ts), ("kind", pa.string()),
                      ("value", pa.float64()), ("threshold", pa.float64()), ("close", pa.float64()),
                      ("is_final", pa.bool_()), ("detected_at", ts), ("detail", pa.string())])


def read_alerts(settings: Settings, symbol: str | None = None, timeframe: str | None = None,
                exchange: str | None = None, since: datetime | pd.Timestamp | None = None) -> pd.DataFrame:
    """The stored alerts (``<gold>/alerts``), oldest bar first; empty if the table does not exist.

    ``exchange`` keeps that venue's alerts and the cross-venue ones (``"*"``); ``since`` keeps bars from then on.
    """
    path = alerts_path(settings)
    if not table_exists(path):
        return empty_alerts()
    from deltalake import DeltaTable

    df = DeltaTable(str(path)).to_pandas()  # small table; filtered in pandas (string_view-safe)
    for col, _ in NEW_COLUMNS:  # a table of the older schema
        if col not in df:
            df[col] = None
    df["exchange"] = df["exchange"].fillna("")
    for col, value in (("symbol", symbol), ("timeframe", timeframe)):
        if value is not None:
            df = df[df[col] == value]
    if exchange is not None:
        df = df[df["exchange"].isin([exchange, "*"])]
    for c in ("bar_start", "detected_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    if since is not None:
        df = df[df["bar_start"] >= pd.Timestamp(since).tz_convert("UTC")]
    return df[ALERT_COLUMNS].sort_values(["bar_start", "alert_id"]).reset_index(drop=True)


def alert_json(row: dict[str, Any]) -> str:
    out = {}
    for k in ALERT_COLUMNS:
        v = row.get(k)
        if isinstance(v, pd.Timestamp | datetime):
            v = pd.Timestamp(v).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, float) and np.isnan(v):
            v = None
        out[k] = v
    return json.dumps(out, separators=(",", ":"))


_topics_ready: set[tuple[str, str]] = set()
_sink_lock = threading.Lock()


def publish_alerts(rows: list[dict[str, Any]], settings: Settings, timeout: float) -> None:
    """Each alert as JSON (key = alert_id) to ``settings.alerts_topic``; raises unless all are acked.

    A broker that does not accept a connection fails at once (no ``timeout`` wait)."""
    from confluent_kafka import Producer

    from ..kafka.kafka_conf import client_config
    from ..kafka.topics import ensure_topic

    if not broker_reachable(settings.bootstrap):
        raise ConnectionError(f"alerts topic {settings.alerts_topic}: broker {settings.bootstrap} unreachable")
    if (settings.bootstrap, settings.alerts_topic) not in _topics_ready:
        ensure_topic(settings, settings.alerts_topic, retention_ms=settings.retention_ms)
        _topics_ready.add((settings.bootstrap, settings.alerts_topic))
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.key()!r}: {err}")

    producer = Producer(client_config(settings, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                                   "message.timeout.ms": int(timeout * 1000)}))
    for row in rows:
        producer.produce(settings.alerts_topic, key=row["alert_id"].encode(), value=alert_json(row).encode(),
                         headers={"kind": row["kind"], "schema_version": "2"}, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(timeout + 5)
    if left or errors:
        raise RuntimeError(f"alerts topic {settings.alerts_topic}: {left} undelivered, errors: {errors[:3]}")


def open_table(settings: Settings) -> Any:
    """The alerts table, created if missing and migrated to the current columns (see the module doc)."""
    from deltalake import DeltaTable

    from .delta_io import add_columns

    path = alerts_path(settings)
    DeltaTable.create(str(path), arrow_schema(), mode="ignore", name="alerts",
                      description="alerts on final Gold bars (layers.alerts; raised by Gold, gold_alerts)")
    add_columns(path, NEW_COLUMNS)
    return DeltaTable(str(path))


def write_alerts(alerts: pd.DataFrame, settings: Settings, publish: bool = True, timeout: float = 30.0) -> int:
    """Store the new final alerts in ``<gold>/alerts`` and produce them to ``settings.alerts_topic``.

    "New" = an ``alert_id`` not in the table yet; forming-bar rows (``is_final = false``) are skipped.
    Order: publish first, then MERGE (insert-if-absent on ``alert_id``) into the table (see the module doc).
    ``publish=False`` writes the table only.  Returns how many alerts were new.
    """
    import pyarrow as pa

    if alerts is None or alerts.empty:
        return 0
    new = alerts[alerts["is_final"].astype(bool)].drop_duplicates("alert_id")
    if new.empty:
        return 0
    with _sink_lock:  # one writer per process (Gold's batches, the idle finalizer, a notebook cell)
        dt = open_table(settings)
        ids = new["alert_id"].tolist()
        known = set(dt.to_pyarrow_table(columns=["alert_id"]).column("alert_id").to_pylist()) & set(ids)
        new = new[~new["alert_id"].isin(known)]
        if new.empty:
            return 0
        frame = new.reindex(columns=ALERT_COLUMNS).copy()
        for c in ("bar_start", "detected_at"):
            frame[c] = pd.to_datetime(frame[c], utc=True).astype("datetime64[us, UTC]")
        frame["exchange"] = frame["exchange"].astype("object").where(frame["exchange"].notna(), "")
        frame["detail"] = frame["detail"].astype("object").where(frame["detail"].notna(), None)
        if publish:
            publish_alerts(frame.to_dict("records"), settings, timeout)
        table = pa.Table.from_pandas(frame, schema=arrow_schema(), preserve_index=False)
        (dt.merge(table, predicate="t.alert_id = s.alert_id", source_alias="s", target_alias="t")
         .when_not_matched_insert_all().execute())
        return len(frame)


def alert_counts(settings: Settings) -> dict[str, int]:
    """Rows in the alerts table and messages on the alerts topic (-1: broker unreachable or no topic)."""
    from ..kafka.topics import end_offsets

    table = len(read_alerts(settings))
    if not broker_reachable(settings.bootstrap):
        return {"table": table, "topic": -1}
    try:
        topic = sum(end_offsets(settings, settings.alerts_topic, timeout=5).values())
    except Exception:
        topic = -1
    return {"table": table, "topic": topic}


__all__ = ["NEW_COLUMNS", "alert_counts", "alert_json", "alerts_path", "arrow_schema", "open_table",
           "publish_alerts", "read_alerts", "write_alerts"]
