"""Bar analytics and alerts in pure pandas (no Spark): returns, realized volatility, z-scores, gaps.

All signals are computed per symbol over the bars in ``bar_start`` order.  "Previous" means the previous
bar *that exists*: Gold has no row for a minute without trades, so a return spans the gap.

=============  ===================================================================================
column         definition
=============  ===================================================================================
``ret``        simple return ``close / prev_close - 1`` (NaN on a symbol's first bar)
``log_ret``    ``ln(close / prev_close)``
``move_pct``   ``100 * ret`` (the bar's move in percent, close to close)
``vol``        realized volatility: sample std (ddof=1) of ``log_ret`` over the last ``window`` bars,
               the current bar included (``min_periods`` bars needed).  Per bar, not annualized;
               ``annualize=k`` multiplies by ``sqrt(k)`` with ``k`` = bars per year, e.g.
               ``periods_per_year("1m")`` = 525,600 for 24/7 crypto minute bars
``ret_z``      ``(ret - mean) / std`` where mean and std (ddof=1) are of the ``window`` bars *before*
               the current one: a spike is measured against the calm before it (a window that included
               the spike would absorb it: with 20 bars a lone outlier could never reach z ≈ 4.3)
``volume_z``   the same for ``volume``
``gap``        ``open - prev_close`` (what happened between two bars); ``gap_pct`` = 100 * gap / prev_close
=============  ===================================================================================

Alerts (``detect_alerts``) are raised on *final* bars only: a forming bar's close, volume and therefore its
z-scores change with every micro-batch, so an alert on it would appear and vanish (flap).  A final bar never
changes again, and its signals depend only on earlier bars, which are final too, so an alert, once raised,
stays true.  Each alert has a deterministic id ``symbol|timeframe|bar_start|kind``: detecting again (every
refresh does) produces the same ids, and ``write_alerts`` stores and publishes each id once.
"""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Settings
from ..procs import reachable as broker_reachable

KINDS = ("return_z", "volume_z", "move_pct")
SIGNAL_COLUMNS = ["ret", "log_ret", "move_pct", "vol", "ret_z", "volume_z", "gap", "gap_pct"]
ALERT_COLUMNS = ["alert_id", "symbol", "timeframe", "bar_start", "kind", "value", "threshold", "close",
                 "is_final", "detected_at"]
_SECONDS = {"1m": 60, "5m": 300, "1h": 3600}


def periods_per_year(timeframe: str) -> float:
    """Bars per year for a timeframe, crypto trades 24/7: 1m -> 525,600, 5m -> 105,120, 1h -> 8,760."""
    return 365 * 24 * 3600 / _SECONDS[timeframe]


def _prev_window_z(x: pd.Series, window: int, min_periods: int) -> pd.Series:
    """z of each value against the ``window`` values before it (mean and sample std of those)."""
    prev = x.shift(1).rolling(window, min_periods=min_periods)
    mean, std = prev.mean(), prev.std(ddof=1)
    z = (x - mean) / std.where(std > 0)
    return z


def add_signals(bars: pd.DataFrame, window: int = 20, min_periods: int | None = None,
                annualize: float | None = None) -> pd.DataFrame:
    """A copy of ``bars`` sorted by (symbol, bar_start) with the signal columns (see the module doc).

    ``min_periods`` (default ``window``) is how many bars a rolling statistic needs before it is defined:
    with the default every value rests on a full window, so it does not change when older bars are added
    to the frame.  ``annualize`` (bars per year, e.g. ``periods_per_year("1m")``) also adds ``vol_annual``.
    """
    if window < 2:
        raise ValueError("window must be >= 2 (a std needs two values)")
    min_periods = window if min_periods is None else max(2, min(int(min_periods), window))
    df = bars.sort_values(["symbol", "bar_start"], kind="stable").reset_index(drop=True).copy()
    g = df.groupby("symbol", sort=False)
    prev_close = g["close"].shift(1)
    df["ret"] = df["close"] / prev_close - 1.0
    df["log_ret"] = np.log(df["close"] / prev_close)
    df["move_pct"] = 100.0 * df["ret"]
    g = df.groupby("symbol", sort=False)  # again: it must see the new columns
    df["vol"] = g["log_ret"].transform(lambda s: s.rolling(window, min_periods=min_periods).std(ddof=1))
    if annualize is not None:
        df["vol_annual"] = df["vol"] * math.sqrt(annualize)
    df["ret_z"] = g["ret"].transform(lambda s: _prev_window_z(s, window, min_periods))
    df["volume_z"] = g["volume"].transform(lambda s: _prev_window_z(s, window, min_periods))
    df["gap"] = df["open"] - prev_close
    df["gap_pct"] = 100.0 * df["gap"] / prev_close
    return df


def infer_timeframe(bars: pd.DataFrame) -> str:
    """'1m' | '5m' | '1h' from bar_end - bar_start (else e.g. '90s')."""
    if bars.empty or "bar_end" not in bars:
        return "1m"
    seconds = int((pd.to_datetime(bars["bar_end"]) - pd.to_datetime(bars["bar_start"])).dt.total_seconds().iloc[0])
    return next((tf for tf, s in _SECONDS.items() if s == seconds), f"{seconds}s")


def alert_id(symbol: str, timeframe: str, bar_start: pd.Timestamp | datetime, kind: str) -> str:
    ts = pd.Timestamp(bar_start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return f"{symbol}|{timeframe}|{ts:%Y-%m-%dT%H:%M:%SZ}|{kind}"


def empty_alerts() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="object") for c in ALERT_COLUMNS})
    for c in ("value", "threshold", "close"):
        df[c] = df[c].astype("float64")
    df["is_final"] = df["is_final"].astype("bool")
    for c in ("bar_start", "detected_at"):
        df[c] = pd.Series(dtype="datetime64[us, UTC]")
    return df


def detect_alerts(bars_with_signals: pd.DataFrame, z_threshold: float = 3.0, move_pct: float = 1.0,
                  timeframe: str | None = None, final_only: bool = True,
                  detected_at: datetime | None = None) -> pd.DataFrame:
    """One row per (bar, kind) crossing a threshold, oldest first.

    kinds: ``return_z`` (``|ret_z| >= z_threshold``), ``volume_z`` (``volume_z >= z_threshold``: volume
    alerts are one-sided, a spike; a quiet bar is no alert), ``move_pct`` (``|move_pct| >= move_pct``).
    ``value`` is the signal (signed), ``threshold`` the threshold it crossed.  ``final_only=False`` also
    flags forming bars (a preview: such rows have ``is_final = false`` and ``write_alerts`` skips them).
    Signals missing from the frame are computed with ``add_signals`` defaults.
    """
    df = bars_with_signals
    if df is None or df.empty:
        return empty_alerts()
    if not {"ret_z", "volume_z", "move_pct"} <= set(df.columns):
        df = add_signals(df)
    timeframe = timeframe or infer_timeframe(df)
    if final_only:
        df = df[df["is_final"].fillna(False).astype(bool)]
    rules = (("return_z", df["ret_z"], df["ret_z"].abs() >= z_threshold, z_threshold),
             ("volume_z", df["volume_z"], df["volume_z"] >= z_threshold, z_threshold),
             ("move_pct", df["move_pct"], df["move_pct"].abs() >= move_pct, move_pct))
    now = pd.Timestamp(detected_at or datetime.now(UTC))
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    parts = []
    for kind, value, hit, threshold in rules:
        hit = hit.fillna(False)
        if not hit.any():
            continue
        rows = df.loc[hit, ["symbol", "bar_start", "close", "is_final"]].copy()
        rows["kind"], rows["value"], rows["threshold"] = kind, value[hit].astype(float), float(threshold)
        parts.append(rows)
    if not parts:
        return empty_alerts()
    out = pd.concat(parts, ignore_index=True)
    out["bar_start"] = pd.to_datetime(out["bar_start"], utc=True).astype("datetime64[us, UTC]")
    out["timeframe"] = timeframe
    out["detected_at"] = pd.Series([now] * len(out), dtype="datetime64[us, UTC]")
    out["is_final"] = out["is_final"].astype(bool)
    out["alert_id"] = [alert_id(s, timeframe, b, k) for s, b, k in zip(out["symbol"], out["bar_start"],
                                                                          out["kind"], strict=True)]
    order = {k: i for i, k in enumerate(KINDS)}
    out = out.iloc[np.lexsort((out["kind"].map(order), out["symbol"], out["bar_start"]))]
    return out[ALERT_COLUMNS].reset_index(drop=True)


# -- the sink: Delta table <gold>/alerts + the alerts topic ---------------------------------------------
def alerts_path(settings: Settings) -> Path:
    return settings.alerts_table


def _arrow_schema():
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([("alert_id", pa.string()), ("symbol", pa.string()), ("timeframe", pa.string()),
                      ("bar_start", ts), ("kind", pa.string()), ("value", pa.float64()),
                      ("threshold", pa.float64()), ("close", pa.float64()), ("is_final", pa.bool_()),
                      ("detected_at", ts)])


def read_alerts(settings: Settings, symbol: str | None = None, timeframe: str | None = None) -> pd.DataFrame:
    """The stored alerts (``<gold>/alerts``), oldest bar first; empty if the table does not exist."""
    path = alerts_path(settings)
    if not (path / "_delta_log").is_dir():
        return empty_alerts()
    from deltalake import DeltaTable

    df = DeltaTable(str(path)).to_pandas()  # small table; filtered in pandas (string_view-safe)
    for col, value in (("symbol", symbol), ("timeframe", timeframe)):
        if value is not None:
            df = df[df[col] == value]
    for c in ("bar_start", "detected_at"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df[ALERT_COLUMNS].sort_values(["bar_start", "alert_id"]).reset_index(drop=True)


def alert_json(row: dict) -> str:
    out = {}
    for k in ALERT_COLUMNS:
        v = row[k]
        if isinstance(v, pd.Timestamp | datetime):
            v = pd.Timestamp(v).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return json.dumps(out, separators=(",", ":"))


_topics_ready: set[tuple[str, str]] = set()
_sink_lock = threading.Lock()


def _publish(rows: list[dict], settings: Settings, timeout: float) -> None:
    """Each alert as JSON (key = alert_id) to ``settings.alerts_topic``; raises unless all are acked."""
    from confluent_kafka import Producer

    from ..kafka.kafka_conf import client_config
    from ..kafka.topics import ensure_topic

    if (settings.bootstrap, settings.alerts_topic) not in _topics_ready:
        ensure_topic(settings, settings.alerts_topic, retention_ms=settings.retention_ms)
        _topics_ready.add((settings.bootstrap, settings.alerts_topic))
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(f"{msg.key()!r}: {err}")

    producer = Producer(client_config(settings, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                                   "message.timeout.ms": int(timeout * 1000)}))
    for row in rows:
        producer.produce(settings.alerts_topic, key=row["alert_id"].encode(), value=alert_json(row).encode(),
                         headers={"kind": row["kind"], "schema_version": "1"}, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(timeout + 5)
    if left or errors:
        raise RuntimeError(f"alerts topic {settings.alerts_topic}: {left} undelivered, errors: {errors[:3]}")


def write_alerts(alerts: pd.DataFrame, settings: Settings, publish: bool = True, timeout: float = 30.0) -> int:
    """Store the new final alerts in ``<gold>/alerts`` and produce them to ``settings.alerts_topic``.

    "New" = an ``alert_id`` not in the table yet; forming-bar rows (``is_final = false``) are skipped.
    Order: publish first, then MERGE (insert-if-absent on ``alert_id``) into the table.  If the process
    dies in between, the next call publishes those alerts again (at-least-once on the topic; consumers
    dedup by key) and then stores them: an alert is never stored without having been published.
    ``publish=False`` writes the table only.  Returns how many alerts were new.
    """
    import pyarrow as pa
    from deltalake import DeltaTable

    if alerts is None or alerts.empty:
        return 0
    new = alerts[alerts["is_final"].astype(bool)].drop_duplicates("alert_id")
    if new.empty:
        return 0
    path = alerts_path(settings)
    with _sink_lock:  # one writer per process (the live refresher and a notebook cell may overlap)
        schema = _arrow_schema()
        DeltaTable.create(str(path), schema, mode="ignore", name="alerts",
                          description="alerts on final Gold bars (analytics.detect_alerts)")
        dt = DeltaTable(str(path))
        ids = new["alert_id"].tolist()
        known = set(dt.to_pyarrow_table(columns=["alert_id"]).column("alert_id").to_pylist()) & set(ids)
        new = new[~new["alert_id"].isin(known)]
        if new.empty:
            return 0
        frame = new[ALERT_COLUMNS].copy()
        for c in ("bar_start", "detected_at"):
            frame[c] = pd.to_datetime(frame[c], utc=True).astype("datetime64[us, UTC]")
        if publish:
            _publish(frame.to_dict("records"), settings, timeout)
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
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


__all__ = ["ALERT_COLUMNS", "KINDS", "SIGNAL_COLUMNS", "add_signals", "alert_counts", "alert_id", "alerts_path",
           "detect_alerts", "infer_timeframe", "periods_per_year", "read_alerts", "write_alerts"]
