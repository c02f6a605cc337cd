"""Gold raises the alerts itself: the bars a commit has just made final are judged right after it.

:class:`GoldAlerts` belongs to a :class:`~lakehouse_utils.layers.gold_writer.GoldWriter` (one per Gold checkpoint).
After each commit that added final bars (a micro-batch, or the idle finalizer) the writer hands them over
(:meth:`GoldAlerts.add`) and calls :meth:`GoldAlerts.run`, which

1. computes the signals of the new final bars against the ``settings.alert_window`` final bars before them, per
   (exchange, symbol, timeframe), kept in memory (:func:`alerts.add_signals`);
2. detects ``return_z``, ``volume_z``, ``move_pct`` with ``settings.alert_z`` / ``alert_move_pct``, and
   ``venue_spread`` between the venues of a symbol with ``settings.alert_spread_bp`` (:mod:`alerts`);
3. writes the new ones to the topic and the table (:func:`alert_sink.write_alerts`: exactly once in the table,
   at least once on the topic), then records in ``<checkpoint>/alerts_state.json`` the newest bar judged per
   timeframe (``done``: its ``bar_end``).

**Restarts.**  On start the state tells where judging stopped: the final bars newer than ``done`` are read back from
Gold and judged first (a kill -9 between Gold's commit and the alert write loses nothing), with the window before
them read back too, so a restart raises the same alerts with the same ids (the table keeps one row per id).  A
checkpoint without the state file starts judging at Gold's newest final bar (alerts begin when Gold first runs with
them; notebook 06 explores the bars before).

**Failures.**  Nothing here may stop Gold: an error (broker down, a table that cannot be written) is counted and
logged, shown in Gold's progress line (``alert_errors``, ``alert_error``), and the bars stay pending; the next
batch (or idle tick) tries again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import TIMEFRAMES, Settings, table_exists
from .alert_sink import write_alerts
from .alerts import add_signals, detect_alerts, empty_alerts, spread_alerts
from .bars import Bar
from .gold_tables import bars_path

log = logging.getLogger(__name__)
STATE_FILE = "alerts_state.json"
BACKOFF_MAX_S = 30.0
PUBLISH_TIMEOUT_S = 5.0  # a broker that accepts connections but does not ack: Gold waits no longer than this
_COLUMNS = ["exchange", "symbol", "bar_start", "bar_end", "open", "close", "volume", "is_final"]


def frame_of(bars: list[Bar]) -> pd.DataFrame:
    """Final bars (``bars.Bar``) as the frame the alert rules read."""
    ts = "datetime64[us, UTC]"
    return pd.DataFrame({
        "exchange": [b.exchange for b in bars], "symbol": [b.symbol for b in bars],
        "bar_start": pd.to_datetime([b.start_us for b in bars], unit="us", utc=True).astype(ts),
        "bar_end": pd.to_datetime([b.end_us for b in bars], unit="us", utc=True).astype(ts),
        "open": [float(b.open) for b in bars], "close": [float(b.close) for b in bars],
        "volume": [float(b.volume) for b in bars], "is_final": True}, columns=_COLUMNS)


def _end_us(frame: pd.DataFrame) -> int | None:
    if frame.empty:
        return None
    return int(frame["bar_end"].max().value // 1000)


class GoldAlerts:
    """The alerts of one Gold writer: windows in memory, bars pending, counters (see the module doc)."""

    def __init__(self, settings: Settings, checkpoint: str | Path) -> None:
        self.settings = settings
        self.window = int(settings.alert_window)
        self.state_file = Path(checkpoint) / STATE_FILE
        self.raised = 0  # alerts new in the table since this writer started
        self.errors = 0
        self.last_error: str | None = None
        self.last_run_s: float | None = None
        self.streak = 0  # failed runs in a row: the next try waits a little longer each time (at most BACKOFF_MAX_S)
        self.retry_at = 0.0
        self.history: dict[str, pd.DataFrame] = {}
        self.pending: dict[str, list[pd.DataFrame]] = {tf: [] for tf in TIMEFRAMES}
        self.done: dict[str, int | None] = {}
        state = self._read_state()
        for tf in TIMEFRAMES:
            self._load(tf, state)
        self._save_state()

    # -- state -----------------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except OSError:
            return None
        except ValueError:
            log.warning("%s unreadable: alerts start at Gold's newest final bar", self.state_file)
            return None

    def _save_state(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"done": self.done}))
        os.replace(tmp, self.state_file)  # atomic: the old state or the new one

    def _load(self, tf: str, state: dict[str, Any] | None) -> None:
        """The window of final bars judged already and the final bars still to judge, read back from Gold."""
        finals = self._read_finals(tf, None if state is None else (state.get("done") or {}).get(tf))
        if state is None or tf not in (state.get("done") or {}):
            done = _end_us(finals)  # a checkpoint without alerts yet: from Gold's newest final bar on
        else:
            done = state["done"][tf]
        self.done[tf] = done
        if finals.empty:
            self.history[tf] = finals
            return
        if done is None:  # judging started on an empty Gold: every final bar there came later
            old, new = finals.iloc[0:0], finals
        else:
            end_us = (finals["bar_end"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
            old, new = finals[end_us <= done], finals[end_us > done]
        self.history[tf] = self._trim(old)
        if not new.empty:
            self.pending[tf].append(new)

    def _read_finals(self, tf: str, done: int | None) -> pd.DataFrame:
        """Gold's final bars of ``tf`` from a little before ``done`` (all of them if ``None``)."""
        path = bars_path(self.settings, tf)
        if not table_exists(path):
            return frame_of([])
        from deltalake import DeltaTable

        filters: list[tuple[str, str, Any]] = [("is_final", "=", True)]
        if done is not None:  # the window before ``done``: bars may be sparse, so a generous margin of days
            back = pd.Timestamp(done, unit="us", tz="UTC") - pd.Timedelta(seconds=TIMEFRAMES[tf] * (self.window + 2))
            filters.append(("bar_date", ">=", (back - pd.Timedelta(days=7)).date()))
        df = DeltaTable(str(path)).to_pandas(columns=_COLUMNS, filters=filters)
        for c in ("bar_start", "bar_end"):
            df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[us, UTC]")
        return df.sort_values(["exchange", "symbol", "bar_start"], kind="stable").reset_index(drop=True)

    def _trim(self, bars: pd.DataFrame) -> pd.DataFrame:
        """The last ``window + 1`` bars of each series: what the signals of the next bar rest on."""
        bars = bars.drop_duplicates(["exchange", "symbol", "bar_start"], keep="last")
        bars = bars.sort_values(["exchange", "symbol", "bar_start"], kind="stable")
        return bars.groupby(["exchange", "symbol"], sort=False).tail(self.window + 1).reset_index(drop=True)

    # -- judging ---------------------------------------------------------------------------------------
    def add(self, timeframe: str, finals: list[Bar]) -> None:
        """Bars Gold has just committed as final (judged at the next :meth:`run`)."""
        if finals:
            self.pending[timeframe].append(frame_of(finals))

    def detect(self, timeframe: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(the alerts of the pending bars of ``timeframe``, those bars); nothing is written."""
        new = pd.concat(self.pending[timeframe], ignore_index=True) if self.pending[timeframe] else frame_of([])
        new = new.drop_duplicates(["exchange", "symbol", "bar_start"], keep="last")
        if new.empty:
            return empty_alerts(), new
        s = self.settings
        both = pd.concat([self.history[timeframe].assign(_new=False), new.assign(_new=True)], ignore_index=True)
        both = both.drop_duplicates(["exchange", "symbol", "bar_start"], keep="last")
        signals = add_signals(both, window=self.window)
        found = [detect_alerts(signals[signals["_new"].astype(bool)], float(s.alert_z), float(s.alert_move_pct),
                               timeframe),
                 spread_alerts(new, float(s.alert_spread_bp), timeframe)]
        found = [f for f in found if not f.empty]
        return (pd.concat(found, ignore_index=True) if found else empty_alerts()), new

    def run(self) -> int:
        """Judge every pending bar, write the alerts; returns how many were new.  Never raises (see the module doc)."""
        if not any(self.pending.values()) or time.monotonic() < self.retry_at:
            return 0
        t0 = time.perf_counter()
        n = 0
        for tf in TIMEFRAMES:
            if not self.pending[tf]:
                continue
            try:
                alerts, new = self.detect(tf)
                n += write_alerts(alerts, self.settings, timeout=PUBLISH_TIMEOUT_S)
            except Exception as exc:  # Gold goes on; the bars stay pending and the next run tries again
                self.errors += 1
                self.streak += 1
                self.retry_at = time.monotonic() + min(BACKOFF_MAX_S, 2.0 ** (self.streak - 1) - 1)
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if self.streak == 1 or self.streak % 10 == 0:
                    log.warning("gold alerts (%s): %s; tried again with the next batch (%d failed in a row)", tf,
                                self.last_error, self.streak)
                continue
            self.history[tf] = self._trim(pd.concat([self.history[tf], new], ignore_index=True))
            self.pending[tf] = []
            end = _end_us(new)
            self.done[tf] = end if self.done[tf] is None or end is None else max(self.done[tf], end)
            self._save_state()
        self.raised += n
        if not any(self.pending.values()):
            self.last_error, self.streak, self.retry_at = None, 0, 0.0
        self.last_run_s = time.perf_counter() - t0
        return n

    def report(self, stats: dict[str, Any]) -> None:
        """Counters for Gold's progress line: ``alerts`` raised; ``alert_errors`` and the last ``alert_error``."""
        stats["alerts"] = self.raised
        if self.errors:
            stats["alert_errors"] = self.errors
        if self.last_error:
            stats["alert_error"] = self.last_error
        else:
            stats.pop("alert_error", None)

    @property
    def pending_bars(self) -> int:
        return sum(len(f) for frames in self.pending.values() for f in frames)


__all__ = ["BACKOFF_MAX_S", "GoldAlerts", "PUBLISH_TIMEOUT_S", "STATE_FILE", "frame_of"]
