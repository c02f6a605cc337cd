"""Charts and the live chart against real Delta tables (the bundled hour's Gold, and small tables in tmp)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from lakehouse_utils import charts
from lakehouse_utils.bench.charts import synthetic_bars, write_gold_bars
from lakehouse_utils.config import Settings
from lakehouse_utils.live import LiveCandles, PipelineStatus, table_counts


def gold_sorted(settings: Settings, tf: str) -> pd.DataFrame:
    df = DeltaTable(str(settings.gold / f"bars_{tf}")).to_pandas()
    return df.sort_values("bar_start").reset_index(drop=True)


def test_columns_and_timeframes_match_gold() -> None:
    from lakehouse_utils import gold

    assert charts.BAR_COLUMNS == gold.BAR_COLUMNS
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
    assert "close 11014.3 (forming)" in text  # the title


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
    state = fig.get_state()
    by_name = {t.get("name"): t for t in state["_widget_data"]}
    assert len(by_name[charts.FINAL]["x"]) == 10 and len(by_name[charts.FORMING]["x"]) == 2
    assert list(by_name[charts.FINAL]["close"]) == new["close"].iloc[:10].tolist()


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
