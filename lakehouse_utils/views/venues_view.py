"""The venues view: one symbol's Gold bars from every venue on one figure, the spread between them, their volume.

Gold keeps each venue's bars apart (the key is ``exchange, symbol, bar_start``).  For one symbol and timeframe the
figure has three panels on one time axis:

1. **close** of each venue, a line each (legend: the venue's name);
2. **premium** of each venue in basis points against the median close of the venues that traded in that bar, and
   the **spread** (highest minus lowest close over their mid, in bp) as a black line;
3. **volume share** of each venue in each bar, stacked (the bars of a minute add up to 100 %).

The arithmetic is :mod:`lakehouse_utils.layers.venues` (``venue_table``, ``venue_spreads``, ``volume_shares``),
the same the ``venue_spread`` alert uses: a chart and an alert always agree.  :func:`venues_figure` and
:func:`venue_trace_data` are pure (a bars frame in, a figure out) and :func:`figure_traces` reads a figure back, for
tests.  :class:`VenuesView` follows Gold like :class:`~lakehouse_utils.views.live.LiveCandles`: it looks at the
table's Delta version every ``refresh`` seconds (:class:`~lakehouse_utils.views.probe.TableVersions`, file probes
only) and reads and redraws only when it changed.  With one venue in Gold it says so ("one venue only: kraken")
and draws that venue's closes.  :func:`final_venues` is notebook 06's table and summary on final bars.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..config import Settings
from ..layers.venues import venue_spreads, venue_table, volume_shares
from . import charts
from .live_figure import LiveFigure
from .probe import TableVersions
from .ui import Loop, Panel, pre

log = logging.getLogger(__name__)

SPREAD = "spread bp"
PREMIUM, SHARE = "premium bp", "volume share"  # trace names: f"{exchange} {PREMIUM}", f"{exchange} {SHARE}"
COLORS = {"kraken": "#5741d9", "coinbase": "#1652f0", "binance": "#d4a106"}
_PALETTE = ["#26a69a", "#ef5350", "#8d6e63", "#ec407a", "#78909c"]


def color(exchange: str, venues: list[str]) -> str:
    """A venue's colour: its brand's when known, else one of a palette by its place among ``venues``."""
    return COLORS.get(exchange) or _PALETTE[venues.index(exchange) % len(_PALETTE)]


def one_symbol(bars: pd.DataFrame, symbol: str | None = None) -> pd.DataFrame:
    """The bars of ``symbol`` (default: the symbol on the most venues, then by name), every venue."""
    if bars is None or bars.empty:
        return charts.empty_bars()
    if symbol is None:
        counts = bars.groupby("symbol")["exchange"].nunique()
        symbol = sorted(counts.index, key=lambda s: (-counts[s], s))[0]
    return bars[bars["symbol"] == symbol].sort_values(["bar_start", "exchange"], kind="stable")


def venue_trace_data(bars: pd.DataFrame) -> dict[str, dict[str, list]]:
    """``{trace name: {"x": [...], "y": [...]}}`` for the bars of one symbol on every venue.

    Names: ``<exchange>`` (close), ``<exchange> premium bp``, ``<exchange> volume share``, and ``spread bp``.
    A bar traded on one venue only has no premium (NaN: a gap in its line) and no spread point.
    """
    bars = one_symbol(bars)
    table = venue_table(bars)
    out: dict[str, dict[str, list]] = {}
    for ex, g in table.groupby("exchange", sort=True):
        x = list(charts._x(g["bar_start"]))
        out[ex] = {"x": x, "y": g["close"].tolist()}
        out[f"{ex} {PREMIUM}"] = {"x": x, "y": g["premium_bp"].tolist()}
        out[f"{ex} {SHARE}"] = {"x": x, "y": g["volume_share"].tolist()}
    spreads = venue_spreads(bars)
    out[SPREAD] = {"x": list(charts._x(spreads["bar_start"])) if not spreads.empty else [],
                   "y": [float(v) for v in spreads["spread_bp"]],
                   "text": [f"{h} over {lo}" for h, lo in zip(spreads["high_exchange"], spreads["low_exchange"],
                                                             strict=True)]}
    return out


def venues_figure(bars: pd.DataFrame, title: str | None = None, height: int = 720,
                  uirevision: str = "keep") -> go.Figure:
    """Closes (top), premiums and the spread in bp (middle), volume shares (bottom) of one symbol's venues."""
    data = venue_trace_data(bars)
    venues = sorted(k for k in data if k != SPREAD and " " not in k)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, row_heights=[0.5, 0.28, 0.22], vertical_spacing=0.04)
    for ex in venues:
        c = color(ex, venues)
        fig.add_trace(go.Scatter(name=ex, legendgroup=ex, mode="lines", line={"color": c, "width": 1.5},
                                 **data[ex]), row=1, col=1)
        fig.add_trace(go.Scatter(name=f"{ex} {PREMIUM}", legendgroup=ex, showlegend=False, mode="lines",
                                 line={"color": c, "width": 1}, **data[f"{ex} {PREMIUM}"]), row=2, col=1)
        fig.add_trace(go.Bar(name=f"{ex} {SHARE}", legendgroup=ex, showlegend=False, marker={"color": c},
                             **data[f"{ex} {SHARE}"]), row=3, col=1)
    fig.add_trace(go.Scatter(name=SPREAD, mode="lines+markers", line={"color": "#222", "width": 1.5},
                             marker={"size": 4}, hoverinfo="x+y+text", **data[SPREAD]), row=2, col=1)
    fig.update_layout(
        title=title, height=height, template="plotly_white", hovermode="x unified", barmode="stack", bargap=0.1,
        legend={"orientation": "h", "y": 1.02, "x": 0, "yanchor": "bottom"},
        margin={"l": 60, "r": 20, "t": 80 if title else 40, "b": 40}, uirevision=uirevision)
    fig.update_xaxes(title_text="bar start (UTC)", row=3, col=1)
    fig.update_yaxes(title_text="close", row=1, col=1)
    fig.update_yaxes(title_text="bp", row=2, col=1)
    fig.update_yaxes(title_text="share", tickformat=".0%", range=[0, 1], row=3, col=1)
    return fig


def figure_traces(fig: go.Figure | LiveFigure) -> dict[str, dict[str, list]]:
    """``{trace name: {"x": [...], "y": [...]}}`` of a figure, read back from its traces (tests, notebooks)."""
    plot = fig.fig if isinstance(fig, LiveFigure) else fig
    return {t.name: {"x": list(t.x if t.x is not None else []), "y": list(t.y if t.y is not None else [])}
            for t in plot.data}


def summary_text(symbol: str | None, timeframe: str, bars: pd.DataFrame, what: str = "bars") -> str:
    """One line: the venues, the spread (last, mean, max in bp) and each venue's share of the volume shown
    (``what`` names the bars counted: "final bars" in notebook 06)."""
    if symbol is None:
        return f"{timeframe}: no symbol in Gold yet"
    bars = one_symbol(bars, symbol)
    venues = sorted(bars["exchange"].dropna().unique())
    if not venues:
        return f"{symbol} {timeframe}: no Gold bars yet"
    if len(venues) == 1:
        return f"{symbol} {timeframe}: one venue only: {venues[0]} ({len(bars)} {what}), no spread between venues"
    spreads = venue_spreads(bars)
    shares = volume_shares(bars)
    share = ", ".join(f"{r.exchange} {100 * r.share:.1f}%" for r in shares.itertuples())
    head = f"{symbol} {timeframe}: {len(venues)} venues ({', '.join(venues)}), {len(bars)} {what}"
    if spreads.empty:
        return f"{head} | no bar on two venues yet | volume: {share}"
    last = spreads.iloc[-1]
    return (f"{head} | spread last {last['spread_bp']:.2f} bp ({last['high_exchange']} over {last['low_exchange']} "
            f"at {last['bar_start']:%H:%M} UTC), mean {spreads['spread_bp'].mean():.2f} bp, max "
            f"{spreads['spread_bp'].max():.2f} bp over {len(spreads)} bars | volume: {share}")


@dataclass
class VenueReport:
    """Notebook 06's venues section: final bars of one symbol on every venue."""

    symbol: str | None
    timeframe: str
    bars: pd.DataFrame  # final bars, every venue
    spreads: pd.DataFrame  # venue_spreads: one row per bar on two venues or more
    shares: pd.DataFrame  # volume_shares over the bars
    summary: str
    figure: go.Figure


def final_venues(settings: Settings, symbol: str | None = None, timeframe: str = "1m") -> VenueReport:
    """``symbol``'s final Gold bars on every venue: the spreads, the volume shares, a summary line and the figure."""
    bars = charts.read_bars(settings, timeframe, symbol)
    bars = one_symbol(bars[bars["is_final"].astype(bool)], symbol)
    symbol = symbol or (bars["symbol"].iloc[0] if not bars.empty else None)
    text = summary_text(symbol, timeframe, bars, "final bars")
    return VenueReport(symbol, timeframe, bars.reset_index(drop=True), venue_spreads(bars), volume_shares(bars), text,
                       venues_figure(bars, title=f"{symbol} · {timeframe} · final bars, every venue"))


class VenuesView(Panel):
    """One symbol's bars from every venue, following Gold; ``.widget`` shows it, ``refresh_once()`` redraws now.

    The background thread looks at the chosen timeframe's Gold version every ``refresh`` seconds and redraws when
    it or a control changed.  ``window`` is the number of bars of each venue shown.
    """

    def __init__(self, settings: Settings, symbol: str | None = None, timeframe: str = "1m", window: int = 120,
                 refresh: float = 0.5, *, autostart: bool = True, height: int = 720) -> None:
        if timeframe not in charts.TIMEFRAMES:
            raise ValueError(f"timeframe {timeframe!r}: expected one of {', '.join(charts.TIMEFRAMES)}")
        self.settings, self.height = settings, height
        self.bars = charts.empty_bars()
        self.summary = ""
        self.last_error: str | None = None
        self.n_refreshes = self.n_checks = self.n_renewed = 0
        self.stale_after = settings.chart_stale_after_s  # LAKEHOUSE_CHART_STALE_AFTER_S
        self._versions = TableVersions()
        self._seen: tuple[Any, ...] | None = None
        self._lock = threading.RLock()
        self._loop: Loop | None = None
        self._closed = False
        self._updating = False  # the pickers' options being set from Gold: no refresh for that
        self.symbol_w = W.Dropdown(options=[symbol] if symbol else [], value=symbol, description="symbol",
                                   layout={"width": "220px"})
        self.timeframe_w = W.Dropdown(options=list(charts.TIMEFRAMES), value=timeframe, description="timeframe",
                                      layout={"width": "180px"})
        self.window_w = W.BoundedIntText(value=window, min=2, max=100_000, step=10, description="bars",
                                         layout={"width": "170px"})
        self.refresh_w = W.BoundedFloatText(value=refresh, min=0.1, max=3600, step=0.5, description="check (s)",
                                            layout={"width": "170px"})
        self.refresh_b = W.Button(description="Refresh", icon="refresh")
        self.status_w = W.HTML(pre("not refreshed yet"))
        self._update_symbols()
        self.figure = LiveFigure(venues_figure(charts.empty_bars(), height=height))
        self.widget = W.VBox([W.HBox([self.symbol_w, self.timeframe_w, self.window_w, self.refresh_w,
                                      self.refresh_b]), self.figure, self.status_w])
        for w in (self.symbol_w, self.timeframe_w, self.window_w):
            w.observe(lambda _: self._updating or self._safely(self.refresh_once), names="value")
        self.refresh_w.observe(lambda _: self._loop and self._loop.poke(), names="value")
        self.refresh_b.on_click(lambda _: self._safely(self.refresh_once))
        self.refresh_once()
        if autostart:
            self.start()

    @property
    def symbol(self) -> str | None:
        return self.symbol_w.value

    @property
    def timeframe(self) -> str:
        return self.timeframe_w.value

    @property
    def window(self) -> int:
        return int(self.window_w.value)

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.alive

    def venues(self) -> list[str]:
        """The venues the figure shows (one close line each)."""
        return sorted(n for n in figure_traces(self.figure) if n != SPREAD and " " not in n)

    def gold_version(self) -> tuple[Any, ...]:
        """The chosen table's version and the controls: a redraw happens when this changes."""
        versions = self._versions.look((charts.table_path(self.settings, self.timeframe),))
        return (*versions, self.symbol, self.timeframe, self.window)

    def refresh_once(self) -> int:
        """Read the symbol's last bars of every venue and redraw; returns the number of bars (all venues)."""
        with self._lock:
            try:
                seen = self.gold_version()
                self._update_symbols()
                symbol, tf = self.symbol, self.timeframe
                bars = (charts.read_bars(self.settings, tf, symbol, self.window) if symbol else charts.empty_bars())
                self.summary = summary_text(symbol, tf, bars)
                title = f"{symbol or 'no symbol'} · {tf} · every venue"
                self.figure.fig = venues_figure(bars, title=title, height=self.height, uirevision=f"{symbol}|{tf}")
                self.figure.push()
                if self.figure.stale(self.stale_after):
                    self._renew_figure()
                self.bars, self._seen, self.last_error = bars, seen, None
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.status_w.value = pre(f"refresh failed: {self.last_error}", "crimson")
                raise
            self.n_refreshes += 1
            self.status_w.value = pre(self.summary)
            return len(bars)

    def start(self) -> None:
        """Follow Gold from a daemon thread (a running one is kept)."""
        if self._closed:
            raise RuntimeError("closed")
        if not self.running:
            self._loop = Loop(self._tick, lambda: float(self.refresh_w.value), "venues-view-refresh")

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def close(self) -> None:
        """Stop following Gold and close the widgets."""
        self.stop()
        self._closed = True
        for w in (self.widget, *self.widget.children, *self.widget.children[0].children):
            w.close()

    def wait_for(self, predicate: Callable[[VenuesView], bool], timeout: float = 30.0) -> bool:
        """Poll until ``predicate(self)`` holds (after background refreshes); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def _tick(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.n_checks += 1
            try:
                if self.gold_version() != self._seen or self.figure.stale(self.stale_after):
                    self.refresh_once()
            except Exception:  # shown in the status line, retried on the next tick
                log.exception("venues view refresh failed")

    def _renew_figure(self) -> None:
        """A new chart widget in place of one the browser stopped drawing (see LiveFigure.stale)."""
        old = self.figure
        self.figure = LiveFigure(old.fig)
        self.widget.children = tuple(self.figure if w is old else w for w in self.widget.children)
        old.close()
        self.n_renewed += 1

    def _update_symbols(self) -> None:
        try:
            pairs = charts.venue_symbols(self.settings, self.timeframe)
        except Exception:  # the table is being created
            pairs = {}
        names = sorted({s for v in pairs.values() for s in v} | ({self.symbol} if self.symbol else set()))
        on = {s: sum(s in v for v in pairs.values()) for s in names}  # default: the symbol on the most venues
        value = self.symbol or (sorted(names, key=lambda s: (-on[s], s))[0] if names else None)
        if list(self.symbol_w.options) != names or self.symbol_w.value != value:
            self._updating = True
            try:  # options first, then the value (see LiveCandles._set_picker)
                self.symbol_w.options = names
                self.symbol_w.value = value
            finally:
                self._updating = False


__all__ = ["SPREAD", "VenueReport", "VenuesView", "figure_traces", "final_venues", "one_symbol", "summary_text",
           "venue_trace_data", "venues_figure"]
