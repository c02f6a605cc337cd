"""Signals against hand-computed values; alerts into a real Delta table and onto a real Kafka topic."""

from __future__ import annotations

import json
import math
import statistics
import uuid
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from lakehouse_utils.bench.charts import gold_frame
from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.topics import end_offsets, last_messages
from lakehouse_utils.views import analytics


def small(symbol: str = "BTC/USD", final_last: bool = False) -> pd.DataFrame:
    """close 100 -> 110 -> 99 -> 99 -> 108.9: returns +10%, -10%, 0, +10%."""
    return gold_frame(pd.DataFrame({
        "symbol": symbol,
        "bar_start": pd.date_range("2026-01-01", periods=5, freq="1min", tz="UTC"),
        "open": [100.0, 101.0, 108.0, 99.5, 100.0],
        "high": [101.0, 111.0, 109.0, 100.0, 109.0],
        "low": [99.0, 100.0, 98.0, 98.5, 99.0],
        "close": [100.0, 110.0, 99.0, 99.0, 108.9],
        "volume": [1.0, 2.0, 3.0, 4.0, 10.0],
        "vwap": [100.0, 105.0, 103.0, 99.2, 104.0],
        "trades": [1, 2, 3, 4, 10],
        "buy_volume": [1.0, 1.0, 1.0, 2.0, 5.0],
        "sell_volume": [0.0, 1.0, 2.0, 2.0, 5.0],
        "is_final": [True, True, True, True, final_last],
    }))


def test_returns_volatility_zscores_gaps_by_hand() -> None:
    s = analytics.add_signals(small(), window=3, annualize=analytics.periods_per_year("1m"))
    assert math.isnan(s.ret[0]) and math.isnan(s.log_ret[0]) and math.isnan(s.gap[0])
    assert s.ret[1:].tolist() == pytest.approx([0.1, -0.1, 0.0, 0.1])
    assert s.move_pct[1:].tolist() == pytest.approx([10.0, -10.0, 0.0, 10.0])
    lr = [math.log(1.1), math.log(0.9), 0.0, math.log(1.1)]
    assert s.log_ret[1:].tolist() == pytest.approx(lr)
    # vol: sample std of the last 3 log returns (current included), full window needed
    assert s.vol[:3].isna().all()
    assert s.vol[3] == pytest.approx(statistics.stdev(lr[0:3]))
    assert s.vol[4] == pytest.approx(statistics.stdev(lr[1:4]))
    assert s.vol_annual[4] == pytest.approx(statistics.stdev(lr[1:4]) * math.sqrt(525_600))
    # z vs the 3 bars before: returns (.1, -.1, 0) -> mean 0, std .1; volume (2, 3, 4) -> mean 3, std 1
    assert s.ret_z[:4].isna().all()  # bar 3's previous returns include the first bar's NaN
    assert s.ret_z[4] == pytest.approx(1.0)
    assert s.volume_z[:3].isna().all()
    assert s.volume_z[3] == pytest.approx((4 - 2) / 1) and s.volume_z[4] == pytest.approx((10 - 3) / 1)
    # gap: open - previous close
    assert s.gap[1:].tolist() == pytest.approx([1.0, -2.0, 0.5, 1.0])
    assert s.gap_pct[2] == pytest.approx(-2 / 110 * 100)


def test_signals_are_per_symbol() -> None:
    both = pd.concat([small("BTC/USD"), small("ETH/USD").assign(close=lambda d: d.close * 20)])
    s = analytics.add_signals(both.sample(frac=1, random_state=1), window=3)
    for _sym, g in s.groupby("symbol"):
        assert g.bar_start.is_monotonic_increasing
        assert g.ret.tolist()[1:] == pytest.approx([0.1, -0.1, 0.0, 0.1])
        assert g.volume_z.tolist()[3:] == pytest.approx([2.0, 7.0])


def test_alerts_on_final_bars_only_with_deterministic_ids() -> None:
    s = analytics.add_signals(small(), window=3)
    alerts = analytics.detect_alerts(s, z_threshold=3.0, move_pct=5.0)
    assert list(alerts.columns) == analytics.ALERT_COLUMNS
    assert alerts[["kind", "value"]].values.tolist() == [["move_pct", pytest.approx(10.0)],
                                                         ["move_pct", pytest.approx(-10.0)]]
    assert alerts.alert_id.tolist() == ["kraken|BTC/USD|1m|2026-01-01T00:01:00Z|move_pct",
                                        "kraken|BTC/USD|1m|2026-01-01T00:02:00Z|move_pct"]
    assert alerts.timeframe.unique().tolist() == ["1m"] and alerts.is_final.all()
    # the forming last bar crosses two thresholds; it is only a preview until it is final
    preview = analytics.detect_alerts(s, z_threshold=3.0, move_pct=5.0, final_only=False)
    assert preview[~preview.is_final].kind.tolist() == ["volume_z", "move_pct"]
    again = analytics.detect_alerts(analytics.add_signals(small(final_last=True), window=3), 3.0, 5.0)
    assert again.alert_id.tolist() == preview.alert_id.tolist()
    assert analytics.detect_alerts(analytics.add_signals(small(), window=3), 1000, 1000).empty


def test_alerts_go_to_the_delta_table_and_the_topic_once(kafka: LocalKafka, tmp_path: Path, spark) -> None:
    settings = Settings(data_dir=tmp_path / "data", bootstrap=kafka.bootstrap,
                        alerts_topic=f"alerts.{uuid.uuid4().hex[:8]}")
    first = analytics.detect_alerts(analytics.add_signals(small(), window=3), 3.0, 5.0)
    assert analytics.write_alerts(first, settings) == 2
    assert analytics.write_alerts(first, settings) == 0  # the same alerts again: nothing new
    table = DeltaTable(str(analytics.alerts_path(settings))).to_pandas()
    assert sorted(table.alert_id) == sorted(first.alert_id)
    assert end_offsets(kafka.bootstrap, settings.alerts_topic) == {0: 2}
    msgs = last_messages(kafka.bootstrap, settings.alerts_topic, 10)
    assert [m.key for m in msgs] == first.alert_id.tolist()
    body = msgs[0].json()
    assert body["kind"] == "move_pct" and body["value"] == pytest.approx(10.0) and body["close"] == 110.0
    assert body["bar_start"] == "2026-01-01T00:01:00.000000Z" and body["is_final"] is True

    # the last bar became final: its two alerts are new, the old two are not written again
    later = analytics.detect_alerts(analytics.add_signals(small(final_last=True), window=3), 3.0, 5.0)
    assert len(later) == 4 and analytics.write_alerts(later, settings) == 2
    assert end_offsets(kafka.bootstrap, settings.alerts_topic) == {0: 4}
    stored = analytics.read_alerts(settings)
    assert len(stored) == 4 and stored.alert_id.is_unique
    assert len(analytics.read_alerts(settings, symbol="BTC/USD", timeframe="1m")) == 4
    assert analytics.read_alerts(settings, symbol="ETH/USD").empty
    assert analytics.alert_counts(settings) == {"table": 4, "topic": 4}
    # Delta Spark reads the table deltalake wrote
    assert spark.read.format("delta").load(str(analytics.alerts_path(settings))).count() == 4


def test_alerts_on_the_hour_are_stable(hour) -> None:
    from lakehouse_utils.views.charts import read_bars

    settings, _ = hour
    bars = read_bars(settings, "1m")
    a1 = analytics.detect_alerts(analytics.add_signals(bars), timeframe="1m")
    final = set(bars[bars.is_final].bar_start)
    assert set(a1.bar_start) <= final and a1.alert_id.is_unique
    # reading more history never changes the alerts of the bars already judged
    tail = analytics.detect_alerts(analytics.add_signals(bars.tail(40)), timeframe="1m")
    assert set(tail.alert_id) <= set(a1.alert_id)
    for _, row in a1.iterrows():
        assert json.loads(analytics.alert_json(row.to_dict()))["alert_id"] == row.alert_id


def test_the_live_chart_shows_the_stored_alerts_and_raises_none(tmp_path: Path) -> None:
    """Charts only read alerts: Gold raises them (tests/test_gold_alerts.py); a chart with a spike in view and an
    empty alerts table shows no marker and writes nothing."""
    from lakehouse_utils.bench.charts import synthetic_bars, write_gold_bars
    from lakehouse_utils.views.charts import figure_alerts, table_path
    from lakehouse_utils.views.live import LiveCandles

    settings = Settings(data_dir=tmp_path / "data", bootstrap="127.0.0.1:1")
    bars = synthetic_bars(60, forming=2)
    bars.loc[40, "volume"] *= 50  # a volume spike on a final bar
    write_gold_bars(table_path(settings, "1m"), bars)
    live = LiveCandles(settings, window=30, autostart=False)
    try:
        assert live.alerts.empty and figure_alerts(live.figure) == 0
        assert not settings.alerts_table.exists()  # the chart wrote nothing
        # what Gold would store: the spike's alert, one on a bar before the window shown, one of another symbol
        found = analytics.detect_alerts(analytics.add_signals(bars), timeframe="1m")
        assert found.kind.tolist() == ["volume_z"]
        early = found.assign(bar_start=bars.bar_start.iloc[5], alert_id="early", kind="move_pct")
        other = found.assign(symbol="ETH/USD", alert_id="other")
        assert analytics.write_alerts(pd.concat([found, early, other]), settings, publish=False) == 3
        live.refresh_once()
        assert live.alerts.alert_id.tolist() == found.alert_id.tolist() and figure_alerts(live.figure) == 1
        live.kind_w.value = "move_pct"  # the dropdown only filters what is shown
        assert live.alerts.empty and figure_alerts(live.figure) == 0
        live.kind_w.value = "volume_z"
        assert figure_alerts(live.figure) == 1 and len(analytics.read_alerts(settings)) == 3
    finally:
        live.close()
