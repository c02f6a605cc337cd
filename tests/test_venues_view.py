"""The venues view (views/venues_view.py) and the live chart's exchange picker: figures built from tiny frames
(the traces' values), then real Delta Gold tables of three venues written with ``deltalake``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from lakehouse_utils.bench.charts import synthetic_bars, write_gold_bars
from lakehouse_utils.config import Settings
from lakehouse_utils.layers.venues import venue_spreads
from lakehouse_utils.views import charts
from lakehouse_utils.views.live import LiveCandles
from lakehouse_utils.views.venues_view import (
    SPREAD,
    VenuesView,
    figure_traces,
    final_venues,
    summary_text,
    venue_trace_data,
    venues_figure,
)

T0, T1 = pd.Timestamp("2026-01-01 00:00", tz="UTC"), pd.Timestamp("2026-01-01 00:01", tz="UTC")
X0, X1 = T0.tz_localize(None), T1.tz_localize(None)


def tiny() -> pd.DataFrame:
    return pd.DataFrame([
        {"exchange": "kraken", "symbol": "BTC/USD", "bar_start": T0, "close": 100.0, "volume": 1.0},
        {"exchange": "coinbase", "symbol": "BTC/USD", "bar_start": T0, "close": 100.2, "volume": 3.0},
        {"exchange": "binance", "symbol": "BTC/USD", "bar_start": T0, "close": 99.9, "volume": 4.0},
        {"exchange": "kraken", "symbol": "BTC/USD", "bar_start": T1, "close": 101.0, "volume": 2.0},  # alone
        {"exchange": "kraken", "symbol": "ETH/USD", "bar_start": T0, "close": 5.0, "volume": 9.0},  # another symbol
    ])


def test_traces_hold_each_venues_close_premium_share_and_the_spread() -> None:
    data = venue_trace_data(tiny())  # BTC/USD: the symbol on the most venues
    assert set(data) == {SPREAD} | {f"{ex}{k}" for ex in ("kraken", "coinbase", "binance")
                                    for k in ("", " premium bp", " volume share")}
    assert data["kraken"]["y"] == [100.0, 101.0] and [pd.Timestamp(x) for x in data["kraken"]["x"]] == [X0, X1]
    assert data["coinbase"]["y"] == [100.2] and data["binance"]["y"] == [99.9]
    assert [pd.Timestamp(x) for x in data[SPREAD]["x"]] == [X0]  # T1 has one venue: no spread
    assert data[SPREAD]["y"] == pytest.approx([(100.2 - 99.9) / 100.05 * 10_000])
    assert data[SPREAD]["text"] == ["coinbase over binance"]
    assert data["coinbase premium bp"]["y"] == pytest.approx([(100.2 / 100.0 - 1) * 10_000])
    assert data["kraken premium bp"]["y"][0] == 0.0 and math.isnan(data["kraken premium bp"]["y"][1])
    assert data["binance volume share"]["y"] == [0.5] and data["kraken volume share"]["y"] == [0.125, 1.0]


def test_figure_has_one_close_line_per_venue_and_reads_back() -> None:
    fig = venues_figure(tiny(), title="t")
    traces = figure_traces(fig)
    closes = [t for t in fig.data if t.yaxis == "y"]
    assert sorted(t.name for t in closes) == ["binance", "coinbase", "kraken"]
    assert traces[SPREAD]["y"] == pytest.approx([29.985], abs=1e-3)
    assert traces["coinbase"]["y"] == [100.2]
    assert fig.layout.barmode == "stack"
    # one venue: its closes, no spread, and the summary says so
    one = tiny()[tiny()["exchange"] == "kraken"]
    traces = figure_traces(venues_figure(one))
    assert traces["kraken"]["y"] == [100.0, 101.0] and traces[SPREAD]["y"] == []
    assert summary_text("BTC/USD", "1m", one) == "BTC/USD 1m: one venue only: kraken (2 bars), no spread between venues"
    assert summary_text("BTC/USD", "1m", tiny().iloc[:0]) == "BTC/USD 1m: no Gold bars yet"
    assert figure_traces(venues_figure(tiny().iloc[:0])) == {SPREAD: {"x": [], "y": []}}


def test_summary_gives_the_spread_and_the_volume_shares() -> None:
    text = summary_text("BTC/USD", "1m", tiny())
    assert text.startswith("BTC/USD 1m: 3 venues (binance, coinbase, kraken), 4 bars | spread last 29.99 bp "
                           "(coinbase over binance at 00:00 UTC), mean 29.99 bp, max 29.99 bp over 1 bars")
    assert text.endswith("volume: binance 40.0%, coinbase 30.0%, kraken 30.0%")


# -- real Delta tables -------------------------------------------------------------------------------
PREMIUM = {"binance": -1e-4, "coinbase": 2e-4, "kraken": 0.0}  # each venue's close = kraken's * (1 + premium)


def venue_bars(n: int, start: str = "2026-01-01T00:00:00Z", forming: int = 2) -> pd.DataFrame:
    """BTC/USD on three venues (the same walk, each venue's close shifted by PREMIUM) and ETH/USD on kraken."""
    base = synthetic_bars(n, start=start, seed=3, forming=forming)
    frames = []
    for i, (ex, p) in enumerate(PREMIUM.items()):
        b = base.copy()
        for c in ("open", "high", "low", "close", "vwap"):
            b[c] = b[c] * (1 + p)
        b["volume"] = b["volume"] * (i + 1)
        frames.append(b.assign(exchange=ex))
    eth = synthetic_bars(n, symbol="ETH/USD", start=start, seed=4, price=3000, forming=forming)
    return pd.concat([*frames, eth], ignore_index=True)


def write(tmp_path: Path, bars: pd.DataFrame) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    write_gold_bars(charts.table_path(settings, "1m"), bars)
    return settings


def test_venues_view_on_three_venues_in_delta_shows_each_and_the_spread(tmp_path: Path) -> None:
    bars = venue_bars(30)
    settings = write(tmp_path, bars)
    assert charts.exchanges(settings, "1m") == ["binance", "coinbase", "kraken"]
    assert charts.exchanges(settings, "1m", "ETH/USD") == ["kraken"]
    assert charts.symbols(settings, "1m", exchange="coinbase") == ["BTC/USD"]
    view = VenuesView(settings, refresh=0.2)
    try:
        assert view.symbol == "BTC/USD" and view.venues() == ["binance", "coinbase", "kraken"]
        traces = figure_traces(view.figure)
        for ex in PREMIUM:
            want = bars[(bars.exchange == ex) & (bars.symbol == "BTC/USD")]["close"].tolist()
            assert traces[ex]["y"] == pytest.approx(want) and len(want) == 30
        spread = (2e-4 + 1e-4) / (1 + (2e-4 - 1e-4) / 2) * 10_000  # coinbase over binance, every bar
        assert traces[SPREAD]["y"] == pytest.approx([spread] * 30)
        assert traces["binance premium bp"]["y"] == pytest.approx([-1.0] * 30)  # against the median (kraken)
        assert "spread last 3.00 bp (coinbase over binance" in view.summary
        assert "volume: kraken 50.0%, coinbase 33.3%, binance 16.7%" in view.summary

        # it follows Gold: ten more bars on every venue are drawn without a call
        write_gold_bars(charts.table_path(settings, "1m"), venue_bars(40).loc[lambda d: d.bar_start.dt.minute >= 28])
        assert view.wait_for(lambda v: len(figure_traces(v.figure)["kraken"]["y"]) == 40, 60), view.summary
        assert figure_traces(view.figure)[SPREAD]["y"] == pytest.approx([spread] * 40)
        # write_gold_bars is a MERGE then a compaction (two commits): idle means after the view drew the last one
        last = DeltaTable(str(charts.table_path(settings, "1m"))).version()
        assert view.wait_for(lambda v: v._seen is not None and v._seen[0] == last, 30), (view._seen, last)
        checks, refreshes = view.n_checks, view.n_refreshes
        assert view.wait_for(lambda v: v.n_checks >= checks + 4, 30) and view.n_refreshes == refreshes  # idle

        view.symbol_w.value = "ETH/USD"  # one venue: said plainly, its closes drawn
        assert view.venues() == ["kraken"] and figure_traces(view.figure)[SPREAD]["y"] == []
        assert view.summary == "ETH/USD 1m: one venue only: kraken (40 bars), no spread between venues"
        assert "one venue only: kraken" in view.status_w.value
    finally:
        view.close()
    assert not view.running


def test_final_venues_is_the_spread_table_of_final_bars(tmp_path: Path) -> None:
    bars = venue_bars(20, forming=3)
    settings = write(tmp_path, bars)
    report = final_venues(settings, "BTC/USD", "1m")
    assert len(report.spreads) == 17 and report.bars["is_final"].all()
    final = bars[bars.is_final & (bars.symbol == "BTC/USD")]
    assert report.spreads["spread_bp"].tolist() == pytest.approx(venue_spreads(final)["spread_bp"].tolist())
    assert set(report.spreads["high_exchange"]) == {"coinbase"} and set(report.spreads["low_exchange"]) == {"binance"}
    assert report.shares.set_index("exchange")["share"].to_dict() == pytest.approx(
        {"binance": 1 / 6, "coinbase": 1 / 3, "kraken": 0.5})
    assert report.summary.startswith("BTC/USD 1m: 3 venues (binance, coinbase, kraken), 51 final bars")
    assert sorted(t.name for t in report.figure.data if t.yaxis == "y") == ["binance", "coinbase", "kraken"]


def test_live_candles_shows_one_exchange_and_switches(tmp_path: Path) -> None:
    bars = venue_bars(25)
    settings = write(tmp_path, bars)
    live = LiveCandles(settings, window=100, autostart=False)
    try:
        assert (live.symbol, live.exchange) == ("BTC/USD", "binance")  # the first venue that has the symbol
        assert list(live.exchange_w.options) == ["binance", "coinbase", "kraken"]

        def closes(ex: str, symbol: str = "BTC/USD") -> list[float]:
            return bars[(bars.exchange == ex) & (bars.symbol == symbol)]["close"].tolist()

        assert live.shown_bars()["close"].tolist() == pytest.approx(closes("binance"))  # not the three mixed
        assert live.figure.fig.layout.title.text.startswith("BTC/USD · 1m · binance · 25 bars")
        live.exchange_w.value = "coinbase"  # the picker redraws: coinbase's bars only
        assert live.shown_bars()["close"].tolist() == pytest.approx(closes("coinbase"))
        assert set(live.bars["exchange"]) == {"coinbase"} and "on coinbase" in live.status_text()
        assert live.figure.fig.layout.uirevision == "coinbase|BTC/USD|1m"  # a new view: zoom reset
        live.symbol_w.value = "ETH/USD"  # coinbase lacks it: the picker moves to the venue that has it
        assert (live.exchange, list(live.exchange_w.options)) == ("kraken", ["kraken"])
        assert live.shown_bars()["close"].tolist() == pytest.approx(closes("kraken", "ETH/USD"))
        assert np.isclose(charts.read_bars(settings, "1m", "BTC/USD", window=5, exchange="kraken")["close"],
                          closes("kraken")[-5:]).all()
    finally:
        live.close()
    assert LiveCandles(settings, symbol="BTC/USD", exchange="kraken", autostart=False).exchange == "kraken"
