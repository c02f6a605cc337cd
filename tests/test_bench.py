"""The bench's own arithmetic, and ``make bench`` run whole with short feeds against the real pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lakehouse_utils.bench.latency import latencies, venue_key
from lakehouse_utils.bench.pixels import pixel_latencies
from lakehouse_utils.bench.suite import MEASUREMENTS, QUICK_WITHOUT, TARGETS, table


def test_latency_per_trade_from_counts_seen_by_the_reader() -> None:
    arrivals = pd.DataFrame({
        "key": ["A", "A", "B", "A", "B"], "trade_id": ["1", "2", "1", "3", "2"], "partition": 0,
        "offset": [0, 1, 2, 3, 4], "append_s": [100.0, 100.5, 101.0, 102.0, 102.5]})
    polls = [{"t": 99.0, "start": True}, {"t": 101.2, "counts": {"A": 2}}, {"t": 101.4, "counts": {"A": 2, "B": 1}},
             {"t": 104.0, "counts": {"A": 3, "B": 1}}]
    r = latencies(arrivals, polls)
    assert sorted(round(x, 2) for x in r.seconds) == [0.4, 0.7, 1.2, 2.0]  # A1 1.2, A2 0.7, B1 0.4, A3 2.0
    assert (r.trades, r.unseen) == (5, 1)  # B2 never counted
    assert latencies(arrivals, polls, since=101.5).summary()["seen"] == 1  # only A3 left after the warm-up


def test_latency_keeps_venues_of_one_symbol_apart() -> None:
    """Three venues replay one hour: the same symbol and trade ids on each. Each venue's trades are ranked against
    that venue's Gold count, and none is taken for another venue's duplicate."""
    arrivals = pd.DataFrame({
        "key": [venue_key(ex, "btc/usd") for ex in ("kraken", "coinbase", "kraken", "binance")],
        "trade_id": ["7", "7", "8", "7"], "partition": 0, "offset": [0, 1, 2, 3],
        "append_s": [100.0, 100.0, 100.5, 101.0]})
    polls = [{"t": 100.8, "counts": {"kraken|BTC/USD": 1, "coinbase|BTC/USD": 1}},
             {"t": 102.0, "counts": {"kraken|BTC/USD": 2, "coinbase|BTC/USD": 1, "binance|BTC/USD": 1}}]
    r = latencies(arrivals, polls)
    assert sorted(round(x, 2) for x in r.seconds) == [0.8, 0.8, 1.0, 1.5]
    assert (r.trades, r.unseen) == (4, 0)


def test_trade_on_screen_when_its_candle_shows_its_rank() -> None:
    """The pixel sampler's arithmetic: a trade is on screen once its candle holds at least its rank among the
    candle's trades (offset order); trades of other symbols, and candles never drawn, do not count."""
    arrivals = pd.DataFrame({
        "symbol": ["BTC/USD"] * 4 + ["ETH/USD"], "trade_id": ["1", "2", "3", "4", "9"], "partition": 0,
        "offset": [0, 1, 2, 3, 4], "append_s": [100.0, 100.4, 100.8, 101.0, 101.1],
        "event_time": ["2026-01-01T00:00:10.5Z", "2026-01-01T00:00:59Z", "2026-01-01T00:01:00Z",
                       "2026-01-01T00:02:00Z", "2026-01-01T00:00:30Z"]})
    samples = [{"t": 99.0, "bars": {}},
               {"t": 101.0, "bars": {"2026-01-01T00:00:00": 1}},
               {"t": 102.0, "bars": {"2026-01-01T00:00:00": 2, "2026-01-01T00:01:00": 1}}]
    r = pixel_latencies(arrivals, samples, "BTC/USD")
    assert sorted(round(x, 2) for x in r.seconds) == [1.0, 1.2, 1.6]  # #1 at 101, #2 and #3 at 102
    assert (r.trades, r.unseen) == (4, 1)  # #4's candle never drawn
    assert pixel_latencies(arrivals, samples, "BTC/USD", since=100.5).summary()["seen"] == 1


def test_alert_latency_from_the_final_commit_to_the_topic(tmp_path: Path) -> None:
    """A bar's final time is the commit that added it to the is_final=true partition (not its forming commits,
    not a compaction); an alert's latency is its first copy's append time minus that (a venue_spread: its venues'
    latest)."""
    from deltalake import DeltaTable

    from lakehouse_utils.bench.alerts import alert_latencies, final_times
    from lakehouse_utils.bench.charts import synthetic_bars, write_gold_bars

    path = tmp_path / "gold" / "bars_1m"
    bars = synthetic_bars(4, forming=4)  # all forming first, then the first two turn final, then the rest
    write_gold_bars(path, bars)
    write_gold_bars(path, bars.iloc[:2].assign(is_final=True))
    write_gold_bars(path, pd.concat([bars.iloc[2:].assign(is_final=True),
                                     bars.iloc[2:3].assign(is_final=True, exchange="coinbase")]))
    commits = {h["version"]: h["timestamp"] / 1000 for h in DeltaTable(str(path)).history()}
    times = final_times(path)
    starts = bars.bar_start.tolist()
    assert times[("kraken", "BTC/USD", starts[0])] == times[("kraken", "BTC/USD", starts[1])] == commits[1]
    assert times[("kraken", "BTC/USD", starts[3])] == times[("coinbase", "BTC/USD", starts[2])] == commits[2]
    alerts = pd.DataFrame({"alert_id": ["a", "a", "b", "c"], "exchange": ["kraken", "kraken", "*", "binance"],
                           "symbol": "BTC/USD", "timeframe": "1m",
                           "bar_start": [starts[1], starts[1], starts[2], starts[0]],
                           "append_s": [commits[1] + 0.5, commits[1] + 9, commits[2] + 1.5, commits[2]]})
    r = alert_latencies(tmp_path / "gold", alerts)
    assert (r["alerts"], r["unmatched"]) == (2, 1)  # "a" once (its first copy); "c": binance has no such bar
    assert r["max_s"] == pytest.approx(1.5) and r["p50_s"] == pytest.approx(1.0)


@pytest.mark.bench  # not in make test (its 20 minutes): make bench-smoke, which CI runs after make test
@pytest.mark.timeout(2700)
def test_bench_quick_runs_every_measurement_in_make_bench_order(tmp_path: Path) -> None:
    """``make bench`` as a whole (``--quick`` sizes): every measurement, in its order, on one broker; what one
    leaves behind must not break the next (the partitions catch-up once resumed the catchup measurement's Bronze
    checkpoint of another topic), and every field is written."""
    out = tmp_path / "bench"
    stale = out / "runs" / "partitions" / "catchup-layers" / "checkpoints" / "kafka_to_bronze_trades"
    stale.mkdir(parents=True)  # a leftover of an earlier run: each measurement starts from a new data dir
    (stale / "metadata").write_text('{"id":"0"}\n')
    # a relative --data-dir, as make bench passes it (data/bench): kernels and JupyterLab run elsewhere, so every
    # path the bench hands them must be absolute (a relative one once doubled into .../notebooks/data/bench/...)
    proc = subprocess.run([sys.executable, "-m", "lakehouse_utils.bench", "--data-dir", "bench", "--quick"],
                          capture_output=True, text=True, timeout=2400, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "latest.json").read_text())
    assert list(report["seconds"]) == list(MEASUREMENTS)  # all of them, in make bench's order
    results = report["results"]
    assert set(results) == set(TARGETS)  # every field of the Performance table
    missing = sorted(name for name, value in results.items() if value is None and name not in QUICK_WITHOUT)
    assert not missing, f"no figure for {missing}:\n{proc.stdout[-3000:]}"
    assert 0 < results["e2e_latency_p50_s"] <= results["e2e_latency_p95_s"] < 120
    assert report["details"]["e2e"]["latency"]["seen"] > 20
    assert 500 < results["peak_rss_mb"] < 8000 and results["chart_refresh_ms_500_bars"] > 0
    assert report["details"]["e2e"]["alerts"]["alerts"] > 0 and 0 < results["alert_latency_s"] < 60
    venues = report["details"]["venues"]  # three replay servers at once, each venue's trades ranked on its own
    assert venues["feed"] == "kraken+coinbase+binance x18" and venues["latency"]["seen"] > 100
    assert venues["trades_per_s"] > 20  # the three together: ~40/s over 190 s (make bench), more at the hour's start
    assert 0 < results["e2e_latency_p50_s_3venues"] <= results["e2e_latency_p95_s_3venues"] < 120
    check = report["details"]["check"]  # lakehouse check in its own process on the caught-up trades: passed
    assert check["trades"] == check["silver_rows"] == 20_000 and 50 < results["check_peak_rss_mb_2m"] < 8000
    catchup = report["details"]["partitions"]  # the layer-by-layer catch-up ran on its own topic and tables
    assert catchup["1p"]["trades"] == catchup["3p"]["trades"] == 5_000
    assert not (out / "runs" / "partitions" / "catchup-layers" / "checkpoints" / "kafka_to_bronze_trades"
                / "metadata").read_text().startswith('{"id":"0"}')
    assert "e2e_latency_p50_s" in table(results) and "e2e_latency_p50_s" in proc.stdout
    pixels = report["details"]["pixels"]  # the chart in Chromium showed the trades of its symbol
    assert pixels["symbol"] == "BTC/USD" and pixels["latency"]["seen"] > 20 and pixels["samples"] > 5
