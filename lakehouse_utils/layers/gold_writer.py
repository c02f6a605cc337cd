"""Gold's write path: forming bars in memory, one ``replaceWhere`` commit per table and batch.

Per micro-batch (:meth:`GoldWriter.process`):

1. The watermark before the batch (``wm_before``) splits late from on-time trades; one Spark aggregation
   gives the batch's 1-minute fragments (``bars.Bar``) and its max event time.
2. The decision ``(wm_before, wm_after)`` is logged to ``<checkpoint>/gold_state.json`` before any write,
   so a batch replayed after a crash makes exactly the same decision.
3. Late trades are appended to ``late_trades`` (only if there are any).
4. For 1m, 5m and 1h: the fragments are rolled up and folded into the forming bars kept in memory; bars the
   watermark passed become final; the table's ``is_final=false`` partition is replaced by the forming bars
   and the new final bars are added, in one commit that carries (app id, batch id).  Each row records the
   ``batch_id`` that wrote it, so after a restart a table that already holds a batch is not folded twice.

:meth:`GoldWriter.finalize_idle` moves the watermark on with the wall clock once no trade has arrived for
:data:`IDLE_AFTER_S` seconds (``max event time + idle time - watermark delay``), so bars turn final when the
feed goes quiet.  It runs on a background thread beside the query, never while a batch is pending.

Both hand the bars they have just committed as final to the writer's :class:`~.gold_alerts.GoldAlerts`, which
raises the alerts on them in the same path, before the batch ends (``settings.alerts``; see ``gold_alerts.py``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from ..config import TIMEFRAMES, Settings
from . import delta_io
from .bars import US, Bar, Key, fold_all, roll_up, split_final
from .gold_alerts import GoldAlerts
from .gold_tables import bars_path, late_path
from .query_progress import LayerStats
from .silver import SILVER_SCHEMA
from .streaming import app_id_for, parse_delay

IDLE_AFTER_S = 10.0  # no trade for this long: the watermark follows the wall clock
STATE_FILE = "gold_state.json"
COMPACT_EVERY = 10  # batches: the final partition gets one small file per batch that closes a bar
_KEEP_DECISIONS = 20


def to_datetime(us: int | None) -> datetime | None:
    """Epoch microseconds -> naive UTC datetime (as Spark's session time zone UTC shows it)."""
    return None if us is None else datetime(1970, 1, 1) + timedelta(microseconds=us)


def _now_us() -> int:
    return time.time_ns() // 1000


def _arrow(bars: list[Bar], final: list[bool], watermark_us: int | None, batch_id: int) -> pa.Table:
    """Bars as an Arrow table with Gold's columns (``delta_io.conform`` casts it to the table's types)."""
    ts = pa.timestamp("us", tz="UTC")
    n = len(bars)
    return pa.table({
        "exchange": [b.exchange for b in bars], "symbol": [b.symbol for b in bars],
        "bar_start": pa.array([b.start_us for b in bars], ts), "bar_end": pa.array([b.end_us for b in bars], ts),
        "open": [b.open for b in bars], "high": [b.high for b in bars], "low": [b.low for b in bars],
        "close": [b.close for b in bars], "volume": [b.volume for b in bars], "vwap": [b.vwap for b in bars],
        "trades": pa.array([b.trades for b in bars], pa.int64()),
        "buy_volume": [b.buy_volume for b in bars], "sell_volume": [b.sell_volume for b in bars],
        "is_final": pa.array(final, pa.bool_()), "updated_at": pa.array([b.updated_us for b in bars], ts),
        "notional": [b.notional for b in bars],
        "first_time": pa.array([b.first[0] for b in bars], ts), "first_id": [b.first[2] for b in bars],
        "last_time": pa.array([b.last[0] for b in bars], ts), "last_id": [b.last[2] for b in bars],
        "bar_date": pa.array([b.start_us // (86_400 * US) for b in bars], pa.int32()).cast(pa.date32()),
        "watermark": pa.array([watermark_us] * n, ts), "batch_id": pa.array([batch_id] * n, pa.int64()),
    })


def minute_fragments(trades: pa.Table, wm_before_us: int | None, now_us: int) -> tuple[list[Bar], int, int | None]:
    """A batch's trades (Arrow) -> its on-time 1-minute fragments, how many trades were late, max event time.

    Done in Arrow on the driver, not as a Spark aggregation: a live batch is a few hundred rows, and a
    shuffle per batch costs more than the whole computation (measured).  Open and close come from the
    first and last trade by (event_time, len(trade_id), trade_id).
    """
    if trades.num_rows == 0:
        return [], 0, None
    us = trades["event_time"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    step = TIMEFRAMES["1m"] * US
    start = pc.multiply(pc.divide(us, step), step)  # integer division truncates toward zero ...
    start = pc.if_else(pc.greater(start, us), pc.subtract(start, step), start)  # ... floor before 1970 too
    late = pc.less(us, wm_before_us) if wm_before_us is not None else pa.array([False] * trades.num_rows)
    qty = trades["qty"]
    buy = pc.if_else(pc.equal(trades["side"], "buy"), qty, 0.0)
    sell = pc.if_else(pc.equal(trades["side"], "sell"), qty, 0.0)
    t = pa.table({"exchange": trades["exchange"], "symbol": trades["symbol"], "start": start, "late": late,
                  "price": trades["price"], "qty": qty, "notional": pc.multiply(trades["price"], qty), "buy": buy,
                  "sell": sell, "t": us, "n": pc.utf8_length(trades["trade_id"]), "id": trades["trade_id"]})
    n_late = pc.sum(late.cast(pa.int64())).as_py() or 0
    on_time = t.filter(pc.invert(late)).sort_by([("t", "ascending"), ("n", "ascending"), ("id", "ascending")])
    g = on_time.group_by(["exchange", "symbol", "start"], use_threads=False).aggregate([
        ("price", "first"), ("price", "max"), ("price", "min"), ("price", "last"), ("qty", "sum"),
        ("notional", "sum"), ("qty", "count"), ("buy", "sum"), ("sell", "sum"), ("t", "first"), ("id", "first"),
        ("t", "last"), ("id", "last")]).to_pydict()
    bars = [Bar(g["exchange"][k], g["symbol"][k], g["start"][k], TIMEFRAMES["1m"], g["price_first"][k],
                g["price_max"][k], g["price_min"][k], g["price_last"][k], g["qty_sum"][k], g["notional_sum"][k],
                g["qty_count"][k], g["buy_sum"][k], g["sell_sum"][k],
                (g["t_first"][k], len(g["id_first"][k]), g["id_first"][k]),
                (g["t_last"][k], len(g["id_last"][k]), g["id_last"][k]), now_us)
            for k in range(len(g["start"]))]
    return bars, n_late, pc.max(us).as_py()


class GoldWriter:
    """The Gold state of one query (checkpoint): forming bars per timeframe, watermark, decisions."""

    _cache: dict[tuple[str, str], GoldWriter] = {}
    _cache_lock = threading.Lock()

    def __init__(self, spark: SparkSession, settings: Settings, app_id: str, checkpoint: str | Path) -> None:
        self.spark, self.settings, self.app_id = spark, settings, app_id
        # a batch's commit replaces the forming partition and adds final bars: both are in the written data
        spark.conf.set("spark.databricks.delta.replaceWhere.constraintCheck.enabled", "false")
        self.delay_us = int(parse_delay(settings.watermark).total_seconds() * US)
        self.state_file = Path(checkpoint) / STATE_FILE
        self.lock = threading.RLock()
        state = self._read_state()
        self.watermark_us: int | None = state.get("watermark_us")
        self.max_event_us: int | None = state.get("max_event_us")
        self.decisions: dict[int, dict[str, int | None]] = {int(k): v for k, v in state.get("batches", {}).items()}
        self.forming: dict[str, dict[Key, Bar]] = {}
        self.applied: dict[str, int] = {}
        for tf in TIMEFRAMES:
            self.forming[tf], self.applied[tf] = self._load(tf)
        self.clock: Callable[[], float] = time.monotonic  # the wall clock idleness is measured with
        self.last_arrival = self.clock()
        self.alerts: GoldAlerts | None = None
        self.alerts_error: str | None = None
        if settings.alerts:
            try:
                self.alerts = GoldAlerts(settings, checkpoint)
            except Exception as exc:  # alerts never stop Gold: it runs without them and says why
                self.alerts_error = f"alerts off: {type(exc).__name__}: {exc}"[:300]

    def raise_alerts(self, stats: dict[str, Any] | None = None) -> int:
        """Judge the bars made final since the last call (see ``gold_alerts.py``); never raises."""
        if self.alerts is None:
            if stats is not None and self.alerts_error:
                stats["alert_error"] = self.alerts_error
            return 0
        n = self.alerts.run()
        if stats is not None:
            self.alerts.report(stats)
        return n

    @classmethod
    def for_app(cls, spark: SparkSession, settings: Settings, app_id: str, checkpoint: str | Path) -> GoldWriter:
        key = (str(Path(checkpoint).resolve()), app_id)
        with cls._cache_lock:
            cached = cls._cache.get(key)
            if cached is None or cached.spark is not spark:
                cls._cache[key] = cls(spark, settings, app_id, checkpoint)
            return cls._cache[key]

    # -- state ----------------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        keep = sorted(self.decisions)[-_KEEP_DECISIONS:]
        state = {"watermark_us": self.watermark_us, "max_event_us": self.max_event_us,
                 "batches": {str(b): self.decisions[b] for b in keep}}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)  # atomic: a crash leaves the old or the new state, never half

    def _load(self, tf: str) -> tuple[dict[Key, Bar], int]:
        """The forming bars of a table and the last batch this app committed to it (-1 if none)."""
        from deltalake import DeltaTable

        path = bars_path(self.settings, tf)
        forming = DeltaTable(str(path)).to_pyarrow_table(filters=[("is_final", "=", False)])
        us = {c: forming[c].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
              for c in ("bar_start", "first_time", "last_time", "updated_at")}
        cols = {c: forming[c].to_pylist() for c in forming.column_names}
        bars = {}
        for n in range(forming.num_rows):
            b = Bar(cols["exchange"][n], cols["symbol"][n], us["bar_start"][n], TIMEFRAMES[tf], cols["open"][n],
                    cols["high"][n], cols["low"][n], cols["close"][n], cols["volume"][n], cols["notional"][n],
                    cols["trades"][n], cols["buy_volume"][n], cols["sell_volume"][n],
                    (us["first_time"][n], len(cols["first_id"][n]), cols["first_id"][n]),
                    (us["last_time"][n], len(cols["last_id"][n]), cols["last_id"][n]), us["updated_at"][n])
            bars[b.key] = b
        return bars, delta_io.applied_batch(path, self.app_id)

    @property
    def watermark(self) -> datetime | None:
        return to_datetime(self.watermark_us)

    # -- writing --------------------------------------------------------------------------------------
    def _write(self, tf: str, forming: dict[Key, Bar], finals: list[Bar], watermark_us: int | None,
               batch_id: int, txn: bool) -> None:
        """One commit: the forming partition replaced by ``forming``, and ``finals`` added as final bars.

        Bars already final all end before the oldest bar turning final now (each was final at a watermark
        that bar was still forming at), so the predicate below never touches a final bar.
        """
        bars = finals + list(forming.values())
        data = _arrow(bars, [True] * len(finals) + [False] * len(forming), watermark_us, batch_id)
        predicate = "is_final = false"
        if finals:
            oldest = to_datetime(min(b.end_us for b in finals)).isoformat(timespec="microseconds")
            predicate += f" OR bar_end >= '{oldest}Z'"
        delta_io.replace(bars_path(self.settings, tf), data, predicate, self.app_id if txn else None, batch_id)
        if self.alerts is not None:
            self.alerts.add(tf, finals)  # committed: judged by raise_alerts at the end of the batch

    def _decide(self, batch_id: int, batch_max_us: int | None, wm_before: int | None) -> dict[str, int | None]:
        new_max = batch_max_us if self.max_event_us is None else max(self.max_event_us, batch_max_us or 0)
        wm_after = None if new_max is None else new_max - self.delay_us
        if wm_before is not None and (wm_after is None or wm_after < wm_before):
            wm_after = wm_before
        return {"wm_before": wm_before, "wm_after": wm_after, "max_event": new_max}

    def process(self, batch: DataFrame, batch_id: int, stats: LayerStats | None = None) -> None:
        """A micro-batch of Silver rows (a Spark DataFrame): one Spark job brings it to the driver."""
        t0 = time.perf_counter()
        rows = batch.select(*SILVER_SCHEMA.fieldNames()).toArrow()
        t1 = time.perf_counter()
        self.process_arrow(rows, batch_id, stats)
        if stats is not None:
            stats["_spark_ms"] = round(1000 * (t1 - t0))
            stats["_commit_ms"] = round(1000 * (time.perf_counter() - t1))

    def process_arrow(self, rows: pa.Table, batch_id: int, stats: LayerStats | None = None) -> None:
        """A micro-batch of Silver rows (Arrow, Silver's columns) into the three tables (see the module doc)."""
        with self.lock:
            decision = self.decisions.get(batch_id)
            wm_before = decision["wm_before"] if decision else self.watermark_us
            now = _now_us()
            on_time, n_late, batch_max = minute_fragments(rows, wm_before, now)
            if batch_max is None:
                return
            if decision is None:
                decision = self._decide(batch_id, batch_max, wm_before)
                self.decisions[batch_id] = decision
                self.max_event_us, self.watermark_us = decision["max_event"], decision["wm_after"]
                self._save_state()  # before any write: a replay makes the same decision
            wm_after = decision["wm_after"]
            if n_late:
                us = rows["event_time"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
                late = rows.filter(pc.less(us, wm_before))
                ts = pa.timestamp("us", tz="UTC")
                late = late.append_column("watermark", pa.array([wm_before] * late.num_rows, ts)) \
                    .append_column("reason", pa.array(["late: event_time older than the watermark"] * late.num_rows)) \
                    .append_column("detected_at", pa.array([now] * late.num_rows, ts))
                delta_io.append(late_path(self.settings), late, self.app_id, batch_id)
            if on_time:
                self.last_arrival = self.clock()
            todo = [tf for tf in TIMEFRAMES if on_time and self.applied[tf] < batch_id]  # replay: done tables skip

            def one(tf: str) -> None:
                forming = fold_all(roll_up(on_time, TIMEFRAMES[tf]).values(), dict(self.forming[tf]))
                finals = split_final(forming, wm_after)
                self._write(tf, forming, finals, wm_after, batch_id, txn=True)
                self.forming[tf], self.applied[tf] = forming, batch_id

            for tf in todo:  # a delta-rs commit is ~15 ms: one after another is fast enough
                one(tf)
            if batch_id % COMPACT_EVERY == 0:
                for tf in TIMEFRAMES:
                    delta_io.compact(bars_path(self.settings, tf), partition_filters=[("is_final", "=", "true")])
            self.raise_alerts(stats)  # also retries alerts an earlier batch could not write
            if stats is not None:
                stats.add(batch_id, "late", n_late)
                stats["watermark"] = to_datetime(wm_after).isoformat(sep=" ") if wm_after is not None else None

    def finalize_idle(self, idle_after_s: float = IDLE_AFTER_S) -> int:
        """Advance the watermark with the wall clock after ``idle_after_s`` without trades; bars finalized."""
        with self.lock:
            idle_s = self.clock() - self.last_arrival
            if self.max_event_us is None or idle_s < idle_after_s:
                return 0
            wm = self.max_event_us + int(idle_s * US) - self.delay_us
            if self.watermark_us is not None and wm <= self.watermark_us:
                return 0
            if not any(b.end_us <= wm for bars in self.forming.values() for b in bars.values()):
                return 0
            self.watermark_us = wm
            self._save_state()  # later batches judge lateness by this watermark
            done = 0
            for tf in TIMEFRAMES:
                forming = dict(self.forming[tf])
                finals = split_final(forming, wm)
                if finals:
                    self._write(tf, forming, finals, wm, self.applied[tf], txn=False)
                    self.forming[tf] = forming
                    done += len(finals)
            self.raise_alerts()
            return done


def _pending_batch(checkpoint: Path) -> bool:
    """Has Spark planned a batch it has not committed (a replay still to come)?"""
    def last(sub: str) -> int:
        return max((int(p.name) for p in (checkpoint / sub).glob("[0-9]*") if p.name.isdigit()), default=-1)

    return last("offsets") > last("commits")


def start_idle_finalizer(query: StreamingQuery, spark: SparkSession, settings: Settings,
                         checkpoint: Path, every_s: float = 1.0, app_name: str = "gold") -> threading.Thread:
    """A daemon thread finalizing bars while ``query`` runs and the feed is quiet (see the module doc).

    ``app_name``: the writer's app id is ``app_id_for(app_name, checkpoint)``, as the query's batches use it.
    """
    def loop() -> None:
        while query.isActive:
            time.sleep(every_s)
            try:
                if not query.isActive or query.status.get("isTriggerActive") or _pending_batch(checkpoint):
                    continue
                if not (checkpoint / "metadata").exists():
                    continue
                writer = GoldWriter.for_app(spark, settings, app_id_for(app_name, checkpoint), checkpoint)
                n = writer.finalize_idle()
                if hasattr(query, "layer_stats"):
                    if n:
                        query.layer_stats["idle_final"] = query.layer_stats.get("idle_final", 0) + n
                        query.layer_stats["watermark"] = writer.watermark.isoformat(sep=" ")
                    if n or (writer.alerts is not None and writer.alerts.pending_bars):
                        with writer.lock:
                            writer.raise_alerts(query.layer_stats)  # a retry while the feed is quiet too
            except Exception as exc:  # the query's own errors surface through query.exception()
                if query.isActive and hasattr(query, "layer_stats"):
                    query.layer_stats["idle_error"] = str(exc)[:200]

    thread = threading.Thread(target=loop, name=f"gold-idle-{query.id}", daemon=True)
    thread.start()
    query.helpers = [*getattr(query, "helpers", []), thread]  # see streaming.join_helpers
    return thread


__all__ = ["GoldWriter", "IDLE_AFTER_S", "minute_fragments", "start_idle_finalizer", "to_datetime"]
