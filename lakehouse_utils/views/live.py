"""The live candle chart and the pipeline status panel (ipywidgets; Gold read with ``deltalake`` only).

:class:`LiveCandles` is a Plotly figure built once by :func:`charts.candles_figure` (a
:class:`~lakehouse_utils.views.live_figure.LiveFigure` widget) that a daemon thread keeps up with Gold: every
``refresh`` seconds (0.5 by default) it looks at the Gold table's version (a file probe, no read), and only when
it changed it reads the newest bars and the alerts Gold raised on them (the table ``<gold>/alerts``: the chart only
reads alerts, the pipeline raises them with its own thresholds, see ``layers/gold_alerts.py``), refills the traces
with :func:`charts.update_figure`, which sends the whole figure (the browser keeps zoom and pan); a chart widget
the browser stopped drawing is replaced by a new one.  Controls: symbol, exchange (the venue: one chart shows one
venue's bars; :class:`~lakehouse_utils.views.venues_view.VenuesView` compares them), timeframe, window (bars shown),
refresh interval, pause / resume, and which kinds of alert are shown.  No Spark: it works in a kernel of its
own while the streaming queries run in other kernels (or in the same one), because Delta readers see committed
snapshots.

:class:`~lakehouse_utils.views.pipeline_status.PipelineStatus` (re-exported here) shows table row counts, the broker
and the topics' end offsets.
Every control calls a method that tests and scripts can call directly.  Notebook 06's alert form is
:class:`~lakehouse_utils.views.alerts.AlertsPanel`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import ipywidgets as W
import pandas as pd

from ..config import Settings
from . import analytics, charts
from .alerts import alerts_html
from .pipeline_status import PipelineStatus, table_counts, topic_offsets
from .probe import TableVersions
from .ui import Loop, Panel, pre
from .verify import delta_count

log = logging.getLogger(__name__)
ALL_KINDS = "all kinds"


class LiveCandles(Panel):
    """A live candlestick chart of one symbol's Gold bars on one venue (``exchange``) with alert markers.

    ``exchange=None`` takes the first venue (in name order) that has the symbol; picking a symbol that venue lacks
    moves the exchange picker to the first venue that has it.

    ``refresh_once()`` does one refresh (returns the number of bars shown); the background thread calls it
    when the version of Gold's table or of the alerts table (looked at every ``refresh`` seconds) or a control
    changed, unless paused.  The markers are the stored alerts of the bars shown (``exchange`` keeps one venue's
    and the cross-venue ones; ``kind`` one kind); the chart computes and writes none.
    """

    def __init__(self, settings: Settings, symbol: str | None = None, timeframe: str = "1m", window: int = 120,
                 refresh: float = 0.5, *, exchange: str | None = None, kind: str | None = None,
                 autostart: bool = True, height: int = 620) -> None:
        if timeframe not in charts.TIMEFRAMES:
            raise ValueError(f"timeframe {timeframe!r}: expected one of {', '.join(charts.TIMEFRAMES)}")
        self.settings = settings
        self.bars = charts.empty_bars()
        self.alerts = analytics.empty_alerts()
        self.last_refresh_seconds: float | None = None
        self.last_refreshed_at: datetime | None = None
        self.last_error: str | None = None
        self.n_refreshes = 0
        self.n_checks = 0  # looks at Gold's version (the refreshes happen when it changed)
        self._seen: tuple[Any, ...] | None = None  # what the last refresh showed: Gold's versions, the controls
        self._versions = TableVersions()  # each table's version seen last (the next look probes from there on)
        self.n_renewed = 0  # chart widgets replaced because the browser stopped drawing them
        self.stale_after = settings.chart_stale_after_s  # LAKEHOUSE_CHART_STALE_AFTER_S
        self._lock = threading.RLock()
        self._loop: Loop | None = None
        self._closed = False

        pairs = self._venues(timeframe)
        names = sorted({s for v in pairs.values() for s in v})
        symbol = symbol or (names[0] if names else None)
        have = [ex for ex, v in pairs.items() if symbol in v]
        exchange = exchange if exchange in have or not have else have[0]
        self.symbol_w = W.Dropdown(options=sorted(set(names) | ({symbol} if symbol else set())), value=symbol,
                                   description="symbol", layout={"width": "220px"})
        self.exchange_w = W.Dropdown(options=sorted(set(have) | ({exchange} if exchange else set())),
                                     value=exchange, description="exchange", layout={"width": "220px"})
        self.timeframe_w = W.Dropdown(options=list(charts.TIMEFRAMES), value=timeframe, description="timeframe",
                                      layout={"width": "180px"})
        self.window_w = W.BoundedIntText(value=window, min=5, max=100_000, step=10, description="bars",
                                         layout={"width": "170px"})
        self.refresh_w = W.BoundedFloatText(value=refresh, min=0.1, max=3600, step=0.5, description="check (s)",
                                            layout={"width": "170px"},
                                            tooltip="how often Gold's version is looked at; the chart is read and "
                                                    "redrawn only when it changed")
        self.pause_w = W.ToggleButton(value=False, description="Pause", icon="pause",
                                      tooltip="pause / resume the automatic refresh")
        self.refresh_b = W.Button(description="Refresh", icon="refresh")
        self.kind_w = W.Dropdown(options=[ALL_KINDS, *analytics.KINDS], value=kind or ALL_KINDS, description="show",
                                 layout={"width": "220px"}, tooltip="which alerts the chart shows (it raises none: "
                                                                    "Gold does, with the pipeline's thresholds)")
        self.status_w = W.HTML(pre("not refreshed yet"))
        self.alerts_w = W.HTML(alerts_html(self.alerts))  # not in .widget: the dashboard shows it apart
        for w in (self.symbol_w, self.exchange_w, self.timeframe_w, self.window_w, self.kind_w):
            w.observe(self._on_change, names="value")
        self.refresh_w.observe(lambda _: self._loop and self._loop.poke(), names="value")
        self.pause_w.observe(self._on_pause, names="value")
        self.refresh_b.on_click(lambda _: self._safely(self.refresh_once))
        # the figure starts with Gold as it is: its widget opens with the bars in its state
        try:
            bars, alerts = self._read()
        except Exception:  # the first refresh below shows why
            bars, alerts = charts.empty_bars(), analytics.empty_alerts()
        self.figure = charts.candles_figure(bars, alerts, title=self._title(bars), widget=True, height=height)
        self.figure.fig.layout.uirevision = self._view_key()
        self.widget = W.VBox([
            W.HBox([self.symbol_w, self.exchange_w, self.timeframe_w, self.window_w, self.refresh_w, self.pause_w,
                    self.refresh_b]),
            W.HBox([W.HTML("<b>alerts</b> raised by the pipeline&nbsp;"), self.kind_w]),
            self.figure,
            self.status_w,
        ])
        self.refresh_once()
        if autostart:
            self.start()

    # ---- the properties the widgets hold --------------------------------------------------------------
    @property
    def symbol(self) -> str | None:
        return self.symbol_w.value

    @property
    def exchange(self) -> str | None:
        return self.exchange_w.value

    @property
    def timeframe(self) -> str:
        return self.timeframe_w.value

    @property
    def window(self) -> int:
        return int(self.window_w.value)

    @property
    def refresh(self) -> float:
        return float(self.refresh_w.value)

    @property
    def paused(self) -> bool:
        return bool(self.pause_w.value)

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.alive

    # ---- actions ----------------------------------------------------------------------------------------
    def gold_version(self) -> tuple[Any, ...]:
        """What decides whether a refresh would show something new: the versions of the chosen timeframe's table
        and of the alerts table, and the controls (a few file probes: no table is read)."""
        versions = self._versions.look((charts.table_path(self.settings, self.timeframe), self.settings.alerts_table))
        return (*versions, self.symbol, self.exchange, self.timeframe, self.window, self.kind_w.value)

    def refresh_once(self) -> int:
        """Read Gold's bars and the stored alerts on them, update the figure in place; returns the bars shown."""
        with self._lock:
            t0 = time.perf_counter()
            try:
                seen = self.gold_version()
                bars, alerts = self._read()
                # another venue, symbol or timeframe: a new view (zoom and pan reset), nothing of the last one kept
                self.figure.fig.layout.uirevision = self._view_key()
                charts.update_figure(self.figure, bars, alerts, title=self._title(bars))
                if self.figure.stale(self.stale_after):
                    self._renew_figure()
                self.bars, self.alerts, self._seen = bars, alerts, seen
                self.alerts_w.value = alerts_html(alerts)
                self.last_error = None
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.status_w.value = pre(f"refresh failed: {self.last_error}", "crimson")
                raise
            finally:
                self.last_refresh_seconds = time.perf_counter() - t0
                self.last_refreshed_at = datetime.now(UTC)
            self.n_refreshes += 1
            self.status_w.value = pre(self.status_text())
            return len(bars)

    def _read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Gold's last bars of the chosen symbol and timeframe, and the stored alerts on them."""
        self._update_symbols()
        symbol, tf = self.symbol, self.timeframe
        bars = (charts.read_bars(self.settings, tf, symbol, self.window, exchange=self.exchange) if symbol
                else charts.empty_bars())
        if bars.empty:
            return bars, analytics.empty_alerts()
        alerts = analytics.read_alerts(self.settings, symbol=symbol, timeframe=tf, exchange=self.exchange,
                                       since=bars["bar_start"].iloc[0])
        if self.kind_w.value != ALL_KINDS:
            alerts = alerts[alerts["kind"] == self.kind_w.value]
        return bars, alerts.reset_index(drop=True)

    def shown_bars(self) -> pd.DataFrame:
        """The bars the figure shows, read back from its traces (under the refresh lock: consistent)."""
        with self._lock:
            return charts.figure_bars(self.figure)

    def status_text(self) -> str:
        state = "closed" if self._closed else "paused" if self.paused else (
            f"live: Gold checked every {self.refresh:g}s" if self.running else "stopped")
        if self.bars.empty:
            where = charts.table_path(self.settings, self.timeframe)
            head = f"{self.symbol or '-'} {self.timeframe}: no bars yet ({where})"
        else:
            last = self.bars.iloc[-1]
            head = (f"{self.symbol} {self.timeframe}: {len(self.bars)} bars, last {last['bar_start']:%H:%M} UTC "
                    f"O={last['open']:g} H={last['high']:g} L={last['low']:g} C={last['close']:g} "
                    f"({'final' if last['is_final'] else 'forming'}) on {self.exchange}")
        took = f"{1000 * self.last_refresh_seconds:.0f} ms" if self.last_refresh_seconds is not None else "-"
        at = f"{self.last_refreshed_at:%H:%M:%S}" if self.last_refreshed_at else "-"
        renewed = f" | chart re-sent {self.n_renewed}x" if self.n_renewed else ""
        return f"{head} | {len(self.alerts)} alert(s) | refreshed {at} UTC in {took}{renewed} | {state}"

    def start(self) -> None:
        """Start the background refresh (a running one is kept)."""
        if self._closed:
            raise RuntimeError("closed")
        if not self.running:
            self._loop = Loop(self._tick, lambda: self.refresh, "live-candles-refresh")

    def pause(self) -> None:
        """Stop refreshing (the chart stays); returns once a refresh in progress has finished."""
        self.pause_w.value = True
        with self._lock:
            pass

    def resume(self) -> None:
        self.pause_w.value = False
        if not self.running and not self._closed:
            self.start()

    def stop(self) -> None:
        """Stop the background thread (the widgets stay; ``start()`` runs it again)."""
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def close(self) -> None:
        """Stop the refresh thread and close the widgets."""
        self.stop()
        self._closed = True
        self.status_w.value = pre(self.status_text())
        for w in (self.widget, *self.widget.children, *self.widget.children[0].children,
                  *self.widget.children[1].children, self.alerts_w):
            w.close()

    def wait_for(self, predicate: Callable[[LiveCandles], bool], timeout: float = 30.0) -> bool:
        """Poll until ``predicate(self)`` is true (after background refreshes); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    # ---- internals ------------------------------------------------------------------------------------
    def _tick(self) -> None:
        with self._lock:  # checked under the lock: once pause() returns, no refresh runs or starts
            if self.paused or self._closed:
                return
            try:
                self.n_checks += 1
                # an idle chart costs a few file probes a tick: Gold is read only once it has a new version
                if self.gold_version() != self._seen or self.figure.stale(self.stale_after):
                    self.refresh_once()
            except Exception:
                log.exception("live refresh failed")  # shown in the status line, retried next tick

    def _renew_figure(self) -> None:
        """Show a new chart widget (same figure) in place of one whose view stopped drawing (LiveFigure.stale)."""
        old = self.figure
        self.figure = charts.LiveFigure(old.fig)
        self.widget.children = tuple(self.figure if w is old else w for w in self.widget.children)
        old.close()
        self.n_renewed += 1
        log.warning("live chart: the browser stopped drawing it; sent a new chart widget (%d so far)",
                    self.n_renewed)

    def _venues(self, timeframe: str) -> dict[str, list[str]]:
        try:
            return charts.venue_symbols(self.settings, timeframe)
        except Exception:  # the table is being created: no symbols yet
            return {}

    def _view_key(self) -> str:
        return f"{self.exchange}|{self.symbol}|{self.timeframe}"

    def _title(self, bars: pd.DataFrame) -> str:
        return charts.title_for(self.symbol, self.timeframe, bars, self.exchange)

    def _update_symbols(self) -> None:
        """The pickers' options from Gold: every symbol; the venues that have the symbol shown (a venue that lacks
        it gives way to the first one that has it)."""
        pairs = self._venues(self.timeframe)
        current = self.symbol
        options = sorted({s for v in pairs.values() for s in v} | ({current} if current else set()))
        self._set_picker(self.symbol_w, options, current or (options[0] if options else None))
        have = [ex for ex, v in pairs.items() if self.symbol in v]
        exchange = self.exchange if self.exchange in have or not have else have[0]
        self._set_picker(self.exchange_w, sorted(set(have) | ({exchange} if exchange else set())), exchange)

    def _set_picker(self, picker: W.Dropdown, options: list[str], value: str | None) -> None:
        if list(picker.options) != options or picker.value != value:
            # options first, then value (not under hold_trait_notifications: its deferred validation checks
            # the new value against the old options, which fails when the first symbol appears)
            picker.unobserve(self._on_change, names="value")
            try:
                picker.options = options
                picker.value = value
            finally:
                picker.observe(self._on_change, names="value")

    def _on_change(self, _change: Any) -> None:
        self._safely(self.refresh_once)

    def _on_pause(self, change: Any) -> None:
        self.pause_w.description, self.pause_w.icon = ("Resume", "play") if change["new"] else ("Pause", "pause")
        self.status_w.value = pre(self.status_text())


def last_bar_line(bars: pd.DataFrame) -> str:
    """'2019-07-01 00:59 UTC O=... H=... L=... C=... (forming)' for the notebooks' bounded runs."""
    if bars.empty:
        return "no bars"
    b = bars.iloc[-1]
    return (f"{b['bar_start']:%Y-%m-%d %H:%M} UTC open={b['open']:g} high={b['high']:g} low={b['low']:g} "
            f"close={b['close']:g} ({'final' if b['is_final'] else 'forming'})")


__all__ = ["LiveCandles", "PipelineStatus", "delta_count", "last_bar_line", "table_counts", "topic_offsets"]
