"""Alerts in a notebook: the thresholds form of notebook 06 (:class:`AlertsPanel`) and the alerts table.

:class:`AlertsPanel` turns alert thresholds into the alerts of one symbol's final bars, drawn on a chart
(:func:`charts.candles_figure`); Publish stores and produces them (:func:`analytics.write_alerts`).
:func:`alerts_html` is the table of the newest alerts, which the live chart (``live.LiveCandles``) shows too.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import pandas as pd

from ..config import Settings
from . import analytics, charts
from .ui import Panel, pre


def alerts_html(alerts: pd.DataFrame, n: int = 10) -> str:
    """The newest ``n`` alerts as a small HTML table (newest first)."""
    if alerts is None or alerts.empty:
        return pre("no alerts")
    cols = ["bar_start", "exchange", "symbol", "timeframe", "kind", "value", "threshold", "close"]
    rows = alerts.sort_values("bar_start", ascending=False).head(n)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for _, r in rows.iterrows())
    head = "".join(f"<th>{c}</th>" for c in cols)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, pd.Timestamp):
        return f"{v:%Y-%m-%d %H:%M} UTC"
    if isinstance(v, float):
        return f"{v:+.3f}" if abs(v) < 1000 else f"{v:,.2f}"
    return str(v)


class AlertsPanel(Panel):
    """Alert thresholds -> alerts of one symbol's final bars, on a chart; Publish writes them to the sink.

    ``detect()`` recomputes the signals and alerts with the values in the form (and redraws the markers);
    ``publish()`` stores and produces the new ones (:func:`analytics.write_alerts`), returning how many.
    """

    def __init__(self, settings: Settings, symbol: str | None = None, timeframe: str = "1m", window: int = 20,
                 z_threshold: float = 3.0, move_pct: float = 1.0, n_show: int = 10) -> None:
        self.settings, self.timeframe, self.n_show = settings, timeframe, n_show
        names = charts.symbols(settings, timeframe)
        self.symbol = symbol or (names[0] if names else None)
        self.bars = charts.read_bars(settings, timeframe, self.symbol) if self.symbol else charts.empty_bars()
        self.signals = self.bars
        self.alerts = analytics.empty_alerts()
        self.window_w = W.BoundedIntText(value=window, min=2, max=10_000, description="window",
                                         layout={"width": "170px"})
        self.z_w = W.BoundedFloatText(value=z_threshold, min=0.5, max=100, step=0.5, description="z ≥",
                                      layout={"width": "150px"})
        self.move_w = W.BoundedFloatText(value=move_pct, min=0.01, max=100, step=0.1, description="move % ≥",
                                         layout={"width": "170px"})
        self.detect_b = W.Button(description="Detect", icon="search")
        self.publish_b = W.Button(description="Publish", icon="paper-plane", button_style="warning",
                                  tooltip=f"store in {analytics.alerts_path(settings)} and produce to "
                                          f"{settings.alerts_topic}")
        self.status_w = W.HTML("")
        self.table_w = W.HTML("")
        self.figure = charts.candles_figure(self.bars, None, widget=True,
                                            title=charts.title_for(self.symbol, timeframe, self.bars))
        for w in (self.window_w, self.z_w, self.move_w):
            w.observe(lambda _: self._safely(self.detect), names="value")
        self.detect_b.on_click(lambda _: self._safely(self.detect))
        self.publish_b.on_click(lambda _: self._safely(self.publish))
        self.widget = W.VBox([W.HBox([self.window_w, self.z_w, self.move_w, self.detect_b, self.publish_b]),
                              self.status_w, self.figure, self.table_w])
        self.detect()

    def reload(self) -> int:
        """Read the bars again (new Gold data); returns how many."""
        self.bars = charts.read_bars(self.settings, self.timeframe, self.symbol) if self.symbol else self.bars
        return len(self.bars)

    def detect(self) -> pd.DataFrame:
        if self.bars.empty:
            self.alerts = analytics.empty_alerts()
        else:
            self.signals = analytics.add_signals(self.bars, window=int(self.window_w.value))
            self.alerts = analytics.detect_alerts(self.signals, float(self.z_w.value), float(self.move_w.value),
                                                  timeframe=self.timeframe)
        charts.update_figure(self.figure, self.bars, self.alerts)
        kinds = self.alerts["kind"].value_counts().to_dict() if not self.alerts.empty else {}
        self.status_w.value = pre(f"{len(self.alerts)} alert(s) on final bars {kinds or ''}")
        self.table_w.value = alerts_html(self.alerts, self.n_show)
        return self.alerts

    def publish(self) -> int:
        n = analytics.write_alerts(self.alerts, self.settings)
        counts = analytics.alert_counts(self.settings)
        self.status_w.value = pre(f"{n} new alert(s) written; table {counts['table']} rows, "
                                   f"topic {self.settings.alerts_topic} {counts['topic']} messages")
        return n

    def close(self) -> None:
        self.widget.close()


__all__ = ["AlertsPanel", "alerts_html"]
