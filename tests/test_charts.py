"""Charts and the live chart against real Delta tables (the bundled hour's Gold, and small tables in tmp)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest
from deltalake import DeltaTable

from lakehouse_utils.bench.charts import synthetic_bars, write_gold_bars
from lakehouse_utils.config import Settings
from lakehouse_utils.views import charts, live_figure
from lakehouse_utils.views.live import LiveCandles, PipelineStatus, table_counts


def gold_sorted(settings: Settings, tf: str) -> pd.DataFrame:
    df = DeltaTable(str(settings.gold / f"bars_{tf}")).to_pandas()
    return df.sort_values("bar_start").reset_index(drop=True)


def test_columns_and_timeframes_match_gold() -> None:
    from lakehouse_utils.layers import gold, gold_tables

    assert charts.BAR_COLUMNS == gold_tables.BAR_COLUMNS
    assert charts.TIMEFRAMES == gold.TIMEFRAMES


def test_figure_shows_the_gold_bars_of_the_hour(hour) -> None:
    settings, _ = hour
    assert charts.symbols(settings, "1m") == ["BTC/USD"]
    for tf, n in {"1m": 60, "5m": 12, "1h": 1}.items():
        gold = gold_sorted(settings, tf)
        bars = charts.read_bars(settings, tf)
        assert len(bars) == len(gold) == n
        assert str(bars["bar_start"].dt.tz) == "UTC" and bars["bar_start"].is_monotonic_increasing
        shown = charts.figure_bars(charts.candles_figure(bars, title=tf))
        assert len(shown) == n
        last, g = shown.iloc[-1], gold.iloc[-1]
        assert (last.open, last.high, last.low, last.close) == (g.open, g.high, g.low, g.close)
        assert last.bar_start == pd.Timestamp(g.bar_start).tz_localize(None)
        assert shown["is_final"].tolist() == gold["is_final"].tolist()  # forming bars drawn apart
    hour_bar = charts.figure_bars(charts.candles_figure(charts.read_bars(settings, "1h"))).iloc[0]
    assert (hour_bar.open, hour_bar.close) == (10749.4, 11014.3)


def test_live_candles_on_the_hour_and_the_html_report(hour) -> None:
    settings, _ = hour
    live = LiveCandles(settings, timeframe="1m", window=120, autostart=False)
    try:
        assert live.symbol == "BTC/USD"
        assert live.refresh_once() == 60
        gold = gold_sorted(settings, "1m")
        shown = charts.figure_bars(live.figure)
        assert len(shown) == 60 and shown.iloc[-1].close == gold.iloc[-1].close == 11014.3
        assert live.last_refresh_seconds is not None and live.last_refresh_seconds > 0
        # the markers are the alerts Gold stored while the demo ran (the chart computes none)
        assert "kraken|BTC/USD|1m|2019-07-01T00:48:00Z|volume_z" in live.alerts.alert_id.tolist()
        assert charts.figure_alerts(live.figure) == len(live.alerts)
        live.timeframe_w.value = "1h"  # the dropdown refreshes the same figure
        assert len(charts.figure_bars(live.figure)) == 1
        live.window_w.value = 10
        live.timeframe_w.value = "1m"
        assert len(charts.figure_bars(live.figure)) == 10
    finally:
        live.close()
    out = charts.report_candles(settings, path=settings.reports / "candles_test.html")
    text = out.read_text()
    assert out.stat().st_size > 1_000_000  # plotly.js embedded: opens offline
    assert "<script src=" not in text and "plotly.js v" in text
    # the title; the last bar is forming unless Gold's idle finalizer closed it (a slow drain of the demo)
    state = "final" if gold_sorted(settings, "1m").iloc[-1].is_final else "forming"
    assert f"close 11014.3 ({state})" in text


def test_read_bars_symbol_window_since(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    path = charts.table_path(settings, "1m")
    write_gold_bars(path, synthetic_bars(30, "BTC/USD", seed=1))
    write_gold_bars(path, synthetic_bars(20, "ETH/USD", seed=2, price=3000))
    assert charts.symbols(settings, "1m") == ["BTC/USD", "ETH/USD"]
    both = charts.read_bars(settings, "1m")
    assert len(both) == 50 and both["bar_start"].is_monotonic_increasing
    eth = charts.read_bars(settings, "1m", symbol="ETH/USD")
    assert len(eth) == 20 and set(eth["symbol"]) == {"ETH/USD"}
    last5 = charts.read_bars(settings, "1m", symbol="BTC/USD", window=5)
    assert len(last5) == 5 and last5["bar_start"].iloc[-1] == both[both.symbol == "BTC/USD"]["bar_start"].max()
    assert charts.read_bars(settings, "1m", window=3).groupby("symbol").size().to_dict() == {"BTC/USD": 3,
                                                                                            "ETH/USD": 3}
    since = charts.read_bars(settings, "1m", symbol="BTC/USD", since="2026-01-01 00:25")
    assert len(since) == 5 and since["bar_start"].min() == pd.Timestamp("2026-01-01 00:25", tz="UTC")
    assert charts.read_bars(settings, "5m").empty and charts.symbols(settings, "5m") == []


def test_update_figure_changes_the_traces_in_place(tmp_path: Path) -> None:
    bars = charts.read_bars(tmp_path)  # no table: empty
    assert bars.empty
    fig = charts.candles_figure(bars, widget=True)
    traces = list(fig.data)
    assert charts.figure_bars(fig).empty
    new = synthetic_bars(12, forming=2)
    alerts = pd.DataFrame({"symbol": ["BTC/USD"], "bar_start": [new.bar_start.iloc[5]], "kind": ["move_pct"],
                           "value": [1.5], "threshold": [1.0]})
    charts.update_figure(fig, new, alerts)
    assert all(a is b for a, b in zip(traces, fig.data, strict=True))  # same trace objects, new data
    shown = charts.figure_bars(fig)
    assert len(shown) == 12 and shown["is_final"].tolist() == [True] * 10 + [False] * 2
    assert charts.figure_alerts(fig) == 1
    forming = next(t for t in fig.data if t.name == charts.FORMING)
    assert forming.opacity < 1 and len(forming.x) == 2
    # a view that connects now (Voila renders after the cells ran; a reloaded tab) starts from the widget's
    # state: it must hold the bars, not the empty figure the widget was built with
    state = fig.get_state()["figure"]
    by_name = {t.get("name"): t for t in state["data"]}
    assert len(by_name[charts.FINAL]["x"]) == 10 and len(by_name[charts.FORMING]["x"]) == 2
    assert list(by_name[charts.FINAL]["close"]) == new["close"].iloc[:10].tolist()
    assert state["layout"]["uirevision"] == "keep"  # the browser keeps the user's zoom across redraws
    assert not fig.push()  # nothing changed: nothing sent
    state = fig.get_state()
    # offline: plotly.js travels as a value of the model; the module stays small (anywidget gives a model 2 s)
    assert state["_plotly_js"].startswith("/**\n* plotly.js v") and len(state["_esm"]) < 10_000
    assert "Plotly.react" in state["_esm"] and "export default" in state["_esm"]


def _race(widget: Any, update: Callable[[int], None], browser_says: dict[str, Any], n: int) -> list[dict]:
    """Update ``widget`` n times from a thread while the "main thread" applies browser messages to it.

    That is what a kernel does with a live chart: the refresh thread changes the figure while the shell
    handles what the browser sends (ipywidgets applies it under ``hold_trait_notifications``).  Returns the
    states the kernel sent, in order (with a recording comm).
    """
    sent: list[dict] = []
    widget._send = lambda msg, buffers=None: sent.append(dict(msg.get("state", {})))
    done = threading.Event()

    def browser() -> None:
        while not done.is_set():
            widget.set_state(browser_says)

    t = threading.Thread(target=browser)
    t.start()
    try:
        for i in range(n):
            update(i)
    finally:
        done.set()
        t.join()
    return sent


def test_live_figure_loses_no_update_racing_the_browser() -> None:
    """Issue 9: the chart in JupyterLab stopped following Gold.  Plotly's FigureWidget loses deltas in this race;
    the LiveFigure sends whole figures, so whatever is merged, the browser ends with the kernel's figure."""
    bars = synthetic_bars(60, forming=2)
    # the FigureWidget: its acknowledgements and its deltas collide, and some deltas reach the browser as None
    plain = go.FigureWidget(data=[go.Scatter(x=[0], y=[0], uid="a")])

    def delta(i: int) -> None:
        with plain.batch_update():
            plain.data[0].y = [i, i + 1]

    n = 800
    sent = _race(plain, delta, {"_js2py_traceDeltas": None}, n)
    deltas = [s["_py2js_update"] for s in sent if s.get("_py2js_update")]
    assert len(deltas) < n, "FigureWidget no longer loses deltas: LiveFigure's reason to exist is gone"

    fig = charts.candles_figure(bars.iloc[:2], widget=True)
    sent = _race(fig, lambda i: charts.update_figure(fig, bars.iloc[: 2 + i % 59]), {"config": fig.config}, 150)
    figures = [s["figure"] for s in sent if "figure" in s]
    assert figures and all(f and f["data"] for f in figures)  # only whole figures, never an empty message
    last = {k: v for k, v in figures[-1].items() if k != "revision"}
    assert last == live_figure.figure_state(fig.fig)  # the browser's last state is the kernel's figure
    assert figures[-1]["revision"] == fig.revision
    shown = {t["name"]: t for t in figures[-1]["data"]}
    assert len(shown[charts.FINAL]["x"]) + len(shown[charts.FORMING]["x"]) == 2 + 149 % 59


def _view_drew(fig: Any, revision: int) -> None:
    """What the browser's view sends after drawing a revision (a comm message, as the kernel receives it)."""
    fig._handle_msg({"content": {"data": {"method": "custom", "content": {"drawn": revision}}}, "buffers": []})


def test_a_chart_the_browser_stopped_drawing_is_sent_again(tmp_path: Path) -> None:
    fig = charts.candles_figure(synthetic_bars(5), widget=True)
    assert fig.revision == 0 and not fig.stale(after=0)  # no view has drawn yet: nothing to tell
    _view_drew(fig, 0)
    assert fig.drawn == 0 and not fig.stale(after=0)
    charts.update_figure(fig, synthetic_bars(6))
    assert fig.revision == 1 and fig.stale(after=0) and not fig.stale(after=60)
    _view_drew(fig, 1)
    assert not fig.stale(after=0)

    settings = Settings(data_dir=tmp_path / "data")
    path = charts.table_path(settings, "1m")
    bars = synthetic_bars(12)
    write_gold_bars(path, bars.iloc[:8])
    live = LiveCandles(settings, refresh=3600, autostart=False)
    try:
        first = live.figure
        _view_drew(first, first.revision)
        live.stale_after = 0.3
        write_gold_bars(path, bars.iloc[8:])
        live.refresh_once()  # pushed: not drawn yet, not stale yet
        assert live.n_renewed == 0 and first.revision > 0
        time.sleep(0.5)
        live.refresh_once()  # still not drawn: a new chart widget takes its place
        assert live.n_renewed == 1 and live.figure is not first and first.comm is None
        assert live.figure in live.widget.children and first not in live.widget.children
        state = {t["name"]: t for t in live.figure.get_state()["figure"]["data"]}
        assert len(state[charts.FINAL]["x"]) + len(state[charts.FORMING]["x"]) == 12
        assert "chart re-sent 1x" in live.status_text()
        live.refresh_once()
        assert live.n_renewed == 1  # the new widget has no view that drew: nothing to tell yet
    finally:
        live.close()


def test_live_candles_pick_up_bars_written_after_start(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    path = charts.table_path(settings, "1m")
    bars = synthetic_bars(40, forming=2)
    live = LiveCandles(settings, window=100, refresh=0.2)  # started before Gold exists (the dashboard, 05)
    try:
        assert live.symbol is None and live.shown_bars().empty and live.last_error is None
        write_gold_bars(path, bars.iloc[:30].assign(is_final=lambda d: d.index < 28))
        assert live.wait_for(lambda lc: len(lc.shown_bars()) == 30, timeout=60), live.status_text()
        assert live.running and live.symbol == "BTC/USD" and live.last_error is None
        # the next micro-batches: the two forming bars finish and change, ten new bars arrive
        write_gold_bars(path, bars.iloc[28:35].assign(is_final=True))
        write_gold_bars(path, bars.iloc[35:])
        assert live.wait_for(lambda lc: len(lc.shown_bars()) == 40, timeout=60), live.status_text()
        shown = live.shown_bars()
        assert shown["close"].tolist() == pytest.approx(bars["close"].tolist())
        assert shown["is_final"].sum() == 38

        live.pause()
        n = live.n_refreshes
        write_gold_bars(path, synthetic_bars(3, start="2026-01-01T00:40:00Z", seed=9, forming=3))
        live.wait_for(lambda lc: False, timeout=1.0)
        assert live.n_refreshes == n and len(live.shown_bars()) == 40  # paused: unchanged
        live.resume()
        assert live.wait_for(lambda lc: len(lc.shown_bars()) == 43, timeout=60), live.status_text()

        # Gold unchanged: the chart keeps looking at its version and reads nothing (once it drew Gold's last
        # commit: write_gold_bars is a MERGE then a compaction, two commits)
        last = DeltaTable(str(path)).version()
        assert live.wait_for(lambda lc: lc._seen is not None and lc._seen[0] == last, timeout=30), live._seen
        refreshes, checks = live.n_refreshes, live.n_checks
        assert live.wait_for(lambda lc: lc.n_checks >= checks + 5, timeout=30), live.status_text()
        assert live.n_refreshes == refreshes
        # each candle carries its trades: in the hover, and in customdata (what the bench's pixel sampler reads)
        final = next(t for t in live.figure.data if t.name == charts.FINAL)
        gold = live.bars[live.bars["is_final"].astype(bool)].sort_values("bar_start")
        assert list(final.customdata) == gold["trades"].tolist() and len(gold) == 38
        assert list(final.text) == [f"{n:,} trades · VWAP {v:,.6g}" for n, v in zip(gold["trades"], gold["vwap"],
                                                                                    strict=True)]
    finally:
        live.close()
    assert not live.running


def test_report_and_status_on_an_empty_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", bootstrap="127.0.0.1:1")
    out = charts.report_candles(settings)
    assert out == settings.reports / "candles.html" and "no Gold bars yet" in out.read_text()
    live = LiveCandles(settings, autostart=False)
    try:
        assert live.refresh_once() == 0 and "no bars yet" in live.status_text()
    finally:
        live.close()
    assert set(table_counts(settings).values()) == {None}
    status = PipelineStatus(settings, autostart=False)
    assert "unreachable" in status.last["broker"]
    status.close()
