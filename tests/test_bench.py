"""The bench's own arithmetic, and a short smoke run of ``make bench`` against the real pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lakehouse_utils.bench.latency import latencies
from lakehouse_utils.bench.suite import TARGETS, table


def test_latency_per_trade_from_counts_seen_by_the_reader() -> None:
    arrivals = pd.DataFrame({
        "symbol": ["A", "A", "B", "A", "B"], "trade_id": ["1", "2", "1", "3", "2"], "partition": 0,
        "offset": [0, 1, 2, 3, 4], "append_s": [100.0, 100.5, 101.0, 102.0, 102.5]})
    polls = [{"t": 99.0, "start": True}, {"t": 101.2, "counts": {"A": 2}}, {"t": 101.4, "counts": {"A": 2, "B": 1}},
             {"t": 104.0, "counts": {"A": 3, "B": 1}}]
    r = latencies(arrivals, polls)
    assert sorted(round(x, 2) for x in r.seconds) == [0.4, 0.7, 1.2, 2.0]  # A1 1.2, A2 0.7, B1 0.4, A3 2.0
    assert (r.trades, r.unseen) == (5, 1)  # B2 never counted
    assert latencies(arrivals, polls, since=101.5).summary()["seen"] == 1  # only A3 left after the warm-up


@pytest.mark.slow
def test_bench_smoke_writes_every_field_it_ran(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "lakehouse_utils.bench", "--data-dir", str(out), "--quick",
                           "--only", "e2e", "--only", "chart"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "latest.json").read_text())
    results = report["results"]
    assert set(results) == {"e2e_latency_p50_s", "e2e_latency_p95_s", "peak_rss_mb", "chart_refresh_ms_500_bars"}
    assert all(name in TARGETS for name in results)
    e2e = report["details"]["e2e"]["latency"]
    assert e2e["seen"] > 50 and 0 < results["e2e_latency_p50_s"] <= results["e2e_latency_p95_s"] < 120
    assert 500 < results["peak_rss_mb"] < 8000 and results["chart_refresh_ms_500_bars"] > 0
    assert "e2e_latency_p50_s" in table(results) and "e2e_latency_p50_s" in proc.stdout
