"""The real hour end to end: `lakehouse demo --until-drained` against Gold bars computed independently."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.layers.gold_tables import bars_path
from lakehouse_utils.layers.maintenance import maintain
from lakehouse_utils.ops.demo import run_demo
from lakehouse_utils.procs import free_port_pair
from lakehouse_utils.sources.replay import SAMPLE_RECORDING

pytestmark = pytest.mark.slow
FRAMES = {"1m": "1min", "5m": "5min", "1h": "1h"}


def expected_bars(recording: Path = SAMPLE_RECORDING) -> dict[str, pd.DataFrame]:
    """Bars from a Kraken v2 recording itself (pandas), deduplicated on trade_id, ordered by (time, id)."""
    items = []
    with gzip.open(recording, "rt") as f:
        for line in f:
            frame = json.loads(line).get("frame", {})
            if frame.get("channel") == "trade":
                items += frame["data"]
    trades = pd.DataFrame(items).drop_duplicates("trade_id")
    trades["t"] = pd.to_datetime(trades["timestamp"], utc=True)
    trades = trades.sort_values(["t", "trade_id"])
    out = {}
    for tf, freq in FRAMES.items():
        trades["bar_start"] = trades["t"].dt.floor(freq)
        trades["notional"] = trades["price"] * trades["qty"]
        g = trades.groupby("bar_start")
        bars = pd.DataFrame({"open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
                             "close": g["price"].last(), "volume": g["qty"].sum(), "trades": g.size(),
                             "vwap": g["notional"].sum() / g["qty"].sum()})
        out[tf] = bars
    return out


def gold_bars(settings: Settings, tf: str) -> pd.DataFrame:
    """Gold read without a JVM (deltalake), keyed by bar_start in UTC."""
    df = DeltaTable(str(bars_path(settings, tf))).to_pandas()
    df["bar_start"] = pd.to_datetime(df["bar_start"], utc=True)
    return df.set_index("bar_start").sort_index()


def assert_gold_matches(settings: Settings, recording: Path | None = None) -> None:
    """Gold equals the bars of ``recording`` (default: the bundled hour, whose figures are also written out)."""
    expected = expected_bars(recording or SAMPLE_RECORDING)
    for tf, exp in expected.items():
        got = gold_bars(settings, tf)
        assert list(got.index) == list(exp.index), tf
        assert (got["symbol"] == "BTC/USD").all()
        for col in ("open", "high", "low", "close"):
            assert got[col].tolist() == exp[col].tolist(), (tf, col)
        assert got["trades"].tolist() == exp["trades"].tolist(), tf
        for col in ("volume", "vwap"):
            assert got[col].to_numpy() == pytest.approx(exp[col].to_numpy(), rel=1e-9), (tf, col)
    if recording is not None:
        return
    assert len(expected["1m"]) == 60 and len(expected["5m"]) == 12 and len(expected["1h"]) == 1
    hour = gold_bars(settings, "1h").iloc[0]
    assert (hour.open, hour.close, hour.high, hour.low) == (10749.4, 11014.3, 11041.8, 10600.0)


def assert_alerts_raised_once(settings: Settings) -> set[str]:
    """Gold raised the alerts of its final bars (the pipeline's thresholds), each once in the table and the topic."""
    from lakehouse_utils.kafka.topics import last_messages
    from lakehouse_utils.layers.alert_sink import read_alerts
    from lakehouse_utils.layers.alerts import add_signals, detect_alerts

    stored = read_alerts(settings)
    assert stored.alert_id.is_unique
    expected = set()
    for tf in FRAMES:
        finals = gold_bars(settings, tf).reset_index()
        finals = finals[finals["is_final"]]
        expected |= set(detect_alerts(add_signals(finals, window=settings.alert_window), settings.alert_z,
                                      settings.alert_move_pct, tf).alert_id)
    assert set(stored.alert_id) == expected
    keys = [m.key for m in last_messages(settings.bootstrap, settings.alerts_topic, 1000)]
    assert sorted(keys) == sorted(expected)
    return expected


def test_real_hour_through_the_demo_and_a_second_run_adds_nothing(hour) -> None:
    settings, first = hour
    assert first.drained
    assert first.producer["delivered"] == 2672 and first.topic_offsets == {0: 2672}
    c = first.counts
    assert (c.bronze, c.silver, c.quarantine, c.late) == (2672, 2671, 0, 0)
    assert c.bars == {"1m": 60, "5m": 12, "1h": 1}
    assert c.gold_trades == {"1m": 2671, "5m": 2671, "1h": 2671}
    assert_gold_matches(settings)
    assert (settings.reports / "summary.md").read_text().count("| silver trades | 2671 |") == 1
    alerts = assert_alerts_raised_once(settings)
    assert "kraken|BTC/USD|1m|2019-07-01T00:48:00Z|volume_z" in alerts  # the hour's volume spike
    # Bars may turn final while the feed is quiet (the watermark follows the wall clock): compare the rest.
    moving = ["updated_at", "is_final", "watermark", "batch_id"]
    before = {tf: gold_bars(settings, tf) for tf in FRAMES}

    # The same hour again on the same data dir: Kafka and Bronze record the re-sent messages (raw audit),
    # Silver and Gold do not change: replayed duplicates never double count.
    second = run_demo(settings, start_broker=False, until_drained=True)
    assert second.topic_offsets == {0: 2 * 2672}
    assert second.counts.bronze == 2 * 2672
    assert (second.counts.silver, second.counts.late) == (2671, 0)
    for tf in FRAMES:
        after = gold_bars(settings, tf)
        pd.testing.assert_frame_equal(after.drop(columns=moving), before[tf].drop(columns=moving))
        assert (after["is_final"] >= before[tf]["is_final"]).all()  # a final bar stays final
    assert assert_alerts_raised_once(settings) >= alerts  # Gold's restart raised none twice


def test_demo_restarts_after_kill9_without_loss_or_double_count(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port_pair()
    env = dict(os.environ, LAKEHOUSE_SPARK_UI="false")
    cmd = [sys.executable, "-m", "lakehouse_utils.ops.cli", "demo", "--data-dir", str(data), "--broker-port", str(port),
           "--speed", "200", "--duration", "600"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    settings = Settings(data_dir=data, spark_ui=False)
    silver_log = settings.silver / "_delta_log"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until Silver committed real rows, then pull the plug
            if len(list(silver_log.glob("*.json"))) >= 2:
                break
            assert proc.poll() is None, "demo exited early"
            time.sleep(0.5)
        else:
            pytest.fail("Silver got no rows in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9 of the demo (Spark's JVM goes with its parent)
        proc.wait(30)
        LocalKafka(data / "kafka", port).kill()  # ... and of the detached broker

    # the restart runs with `lakehouse maintain` beside it, every 3 s on another thread (issue 22): its
    # compactions race the batches' commits, which retry; nothing fails, Gold stays exact
    stop, runs, problems = threading.Event(), [], []

    def beside() -> None:
        while not stop.is_set():
            try:
                reports = maintain(settings, 60.0)
                runs.append(reports)
                problems.extend(n for r in reports for n in r.notes if n.startswith("failed"))
            except Exception as exc:  # noqa: BLE001 - the test reports it
                problems.append(repr(exc))
            stop.wait(3.0)

    thread = threading.Thread(target=beside, daemon=True)
    thread.start()
    try:
        result = run_demo(settings.with_(bootstrap=f"127.0.0.1:{port}"), start_broker=True, until_drained=True)
    finally:
        stop.set()
        thread.join(120)
    assert problems == [] and len(runs) >= 3
    assert any(r.compacted for reports in runs for r in reports)
    assert result.drained
    assert result.counts.silver == 2671 and result.counts.late == 0
    assert result.counts.gold_trades == {"1m": 2671, "5m": 2671, "1h": 2671}
    assert_gold_matches(settings)
    # the files and commits made two minutes older: maintenance deletes what compactions replaced, and every
    # table still reads whole
    for table in {log.parent for log in data.rglob("_delta_log")}:
        for file in [*table.rglob("*.parquet"), *table.glob("_delta_log/*.json")]:
            t = file.stat().st_mtime - 120
            os.utime(file, (t, t))
    assert sum(r.vacuumed for r in maintain(settings, 60.0)) > 0
    assert_gold_matches(settings)
    assert not LocalKafka(data / "kafka", port).is_running()  # the demo stops the broker it started
