"""Alerts raised by Gold itself: the rules (pandas), the older alerts table, and Gold's write path with real Spark,
Delta and Kafka (no chart or view code: only ``lakehouse_utils.layers``)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql.pandas.types import to_arrow_schema

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.topics import end_offsets, last_messages
from lakehouse_utils.layers import gold
from lakehouse_utils.layers.alert_sink import read_alerts, write_alerts
from lakehouse_utils.layers.alerts import add_signals, alert_id, detect_alerts, spread_alerts
from lakehouse_utils.layers.gold_alerts import STATE_FILE
from lakehouse_utils.layers.gold_writer import GoldWriter
from lakehouse_utils.layers.query_progress import LayerStats
from lakehouse_utils.layers.silver import SILVER_SCHEMA
from lakehouse_utils.procs import free_port_pair

T = datetime(2026, 1, 1, tzinfo=UTC)


def bars(closes: dict[str, list[float]], final: bool = True) -> pd.DataFrame:
    """1m bars of BTC/USD, one series per exchange."""
    rows = []
    for ex, cs in closes.items():
        for i, c in enumerate(cs):
            rows.append({"exchange": ex, "symbol": "BTC/USD", "bar_start": pd.Timestamp(T) + pd.Timedelta(minutes=i),
                         "bar_end": pd.Timestamp(T) + pd.Timedelta(minutes=i + 1), "open": c, "high": c, "low": c,
                         "close": c, "volume": 1.0, "is_final": final})
    return pd.DataFrame(rows)


def test_venue_spread_fires_at_the_threshold_once_per_symbol_and_bar() -> None:
    b = bars({"kraken": [100.0, 100.0, 100.0], "coinbase": [100.05, 100.4, 100.1], "binance": [100.0, 100.2, 99.99]})
    a = spread_alerts(b, spread_bp=25.0)
    assert a.alert_id.tolist() == ["*|BTC/USD|1m|2026-01-01T00:01:00Z|venue_spread"]
    row = a.iloc[0]
    assert row.exchange == "*" and row.detail == "coinbase>kraken" and row.threshold == 25.0
    assert row.value == pytest.approx(0.4 / 100.2 * 10_000)  # 39.9 bp: (high - low) / mid
    assert row.close == pytest.approx(100.2) and bool(row.is_final)
    assert spread_alerts(b, spread_bp=40.0).empty
    assert spread_alerts(b.assign(is_final=False), spread_bp=25.0).empty  # forming bars are never judged
    assert spread_alerts(b[b.exchange == "kraken"], spread_bp=0.1).empty  # one venue: no spread


def test_each_venue_has_its_own_series_and_ids() -> None:
    calm = [100.0 + 0.01 * ((i * 7) % 5) for i in range(25)]
    b = bars({"kraken": [*calm, calm[-1] * 1.03], "coinbase": [*calm, calm[-1] * 1.03]})
    a = detect_alerts(add_signals(b, window=20), z_threshold=3.0, move_pct=1.0)
    assert sorted(a.alert_id) == sorted(alert_id(ex, "BTC/USD", "1m", T + timedelta(minutes=25), kind)
                                        for ex in ("coinbase", "kraken") for kind in ("return_z", "move_pct"))
    assert a.alert_id.is_unique and set(a.exchange) == {"kraken", "coinbase"}


def test_a_table_of_the_older_schema_is_read_and_migrated_on_write(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ts = pa.timestamp("us", tz="UTC")
    old = pa.table({"alert_id": ["BTC/USD|1m|2026-01-01T00:01:00Z|move_pct"], "symbol": ["BTC/USD"],
                    "timeframe": ["1m"], "bar_start": pa.array([T], ts), "kind": ["move_pct"], "value": [1.5],
                    "threshold": [1.0], "close": [101.5], "is_final": [True], "detected_at": pa.array([T], ts)})
    write_deltalake(str(settings.alerts_table), old)  # as the release before exchange wrote it
    before = read_alerts(settings)
    assert before.alert_id.tolist() == old["alert_id"].to_pylist() and before.exchange.tolist() == [""]
    calm = [100.0 + 0.01 * ((i * 7) % 5) for i in range(25)]
    new = detect_alerts(add_signals(bars({"kraken": [*calm, calm[-1] * 1.03]})), 3.0, 1.0)
    assert write_alerts(new, settings, publish=False) == 2
    assert write_alerts(new, settings, publish=False) == 0
    stored = read_alerts(settings)
    assert len(stored) == 3 and stored.alert_id.is_unique
    assert sorted(stored.exchange) == ["", "kraken", "kraken"]
    assert {f.name for f in DeltaTable(str(settings.alerts_table)).schema().fields} >= {"exchange", "detail"}
    assert read_alerts(settings, exchange="kraken").alert_id.tolist() == sorted(new.alert_id)


def test_thresholds_are_settings_with_flags_and_environment_variables() -> None:
    from lakehouse_utils.ops.cli import build_parser, settings_from

    d = Settings()
    assert (d.alerts, d.alert_window, d.alert_z, d.alert_move_pct, d.alert_spread_bp) == (True, 20, 3.0, 1.0, 25.0)
    env = {"LAKEHOUSE_ALERTS": "0", "LAKEHOUSE_ALERT_Z": "4.5", "LAKEHOUSE_ALERT_SPREAD_BP": "10"}
    s = Settings.from_env(env)
    assert (s.alerts, s.alert_z, s.alert_spread_bp, s.alert_window) == (False, 4.5, 10.0, 20)
    back = Settings.from_json(s.to_json())  # as the shared engine is told them
    assert (back.alerts, back.alert_z, back.alert_spread_bp, back.alert_window) == (False, 4.5, 10.0, 20)
    args = build_parser().parse_args(["gold", "--alert-window", "30", "--alert-move-pct", "2.5", "--no-alerts"])
    s = settings_from(args)
    assert (s.alerts, s.alert_window, s.alert_move_pct) == (False, 30, 2.5)
    assert settings_from(build_parser().parse_args(["pipeline"])).alerts is True
    with pytest.raises(ValueError, match="alert_window"):
        Settings(alert_window=1)
    with pytest.raises(ValueError, match="alert_spread_bp"):
        Settings.from_env({"LAKEHOUSE_ALERT_SPREAD_BP": "-5"})


# -- Gold's own path: real Spark, Delta and Kafka ----------------------------------------------------------
def trades(minutes: range, seed: int = 3) -> list[pa.Table]:
    """Silver rows of kraken and coinbase, one trade a minute each, a batch per 5 minutes.

    Calm prices (a few bp of noise, coinbase 5 bp above kraken), except: coinbase 40 bp above kraken at 00:25
    (a venue_spread), kraken's close jumps 3 % at 00:27 and stays there (move_pct and return_z)."""
    rng = random.Random(seed)
    schema = to_arrow_schema(SILVER_SCHEMA, timezone="UTC")
    out, rows = [], []
    level = 100.0
    for m in minutes:
        kraken = 100.0 * (1 + rng.uniform(-3e-4, 3e-4))
        if m >= 27:
            level = 103.0
        kraken *= level / 100.0
        coinbase = kraken * (1.004 if m == 25 else 1.0005)
        at = T + timedelta(minutes=m, seconds=30)
        for ex, price in (("kraken", kraken), ("coinbase", coinbase)):
            rows.append({"exchange": ex, "symbol": "BTC/USD", "trade_id": f"{ex}{m}", "price": round(price, 4),
                         "qty": 1.0, "side": "buy", "ord_type": None, "event_time": at, "ingest_time": at,
                         "topic": "t", "partition": 0, "offset": len(rows), "event_date": at.date(),
                         "venue_symbol": None})
        if m % 5 == 4 or m == minutes[-1]:
            out.append(pa.Table.from_pylist(rows, schema))
            rows = []
    return out


def run_gold(spark, settings: Settings, batches: list[pa.Table], first_id: int = 0) -> tuple[GoldWriter, LayerStats]:
    w = GoldWriter(spark, settings, "g", settings.checkpoint(gold.CHECKPOINT))  # a new process each time
    stats = LayerStats()
    for i, b in enumerate(batches):
        w.process_arrow(b, first_id + i, stats)
    return w, stats


def topic_ids(bootstrap: str, topic: str) -> list[str]:
    return [m.key for m in last_messages(bootstrap, topic, 1000)]


@pytest.fixture
def gold_settings(tmp_path: Path, kafka: LocalKafka, spark):
    def make(name: str, **over) -> Settings:
        s = Settings(data_dir=tmp_path / name, bootstrap=kafka.bootstrap, watermark="1 minute",
                     alerts_topic=f"alerts.{uuid.uuid4().hex[:8]}", spark_ui=False).with_(**over)
        gold.ensure_tables(spark, s)
        return s
    return make


def test_gold_raises_alerts_into_the_table_and_the_topic_and_a_restart_adds_none(spark, kafka, gold_settings) -> None:
    s = gold_settings("a")
    data = trades(range(0, 41))
    w, stats = run_gold(spark, s, data[:-1])
    stored = read_alerts(s)
    spread = stored[stored.kind == "venue_spread"]
    assert spread.alert_id.tolist() == ["*|BTC/USD|1m|2026-01-01T00:25:00Z|venue_spread"]
    assert spread.detail.tolist() == ["coinbase>kraken"] and spread.value.iloc[0] == pytest.approx(39.9, abs=0.3)
    jump = stored[(stored.exchange == "kraken") & (stored.timeframe == "1m")]
    assert set(jump.alert_id) >= {"kraken|BTC/USD|1m|2026-01-01T00:27:00Z|move_pct",
                                  "kraken|BTC/USD|1m|2026-01-01T00:27:00Z|return_z"}
    assert jump[jump.kind == "move_pct"].value.tolist() == [pytest.approx(3.0, abs=0.1)]
    # the same values as the rules give on the final bars read back from Gold (nothing missed, nothing extra)
    finals = DeltaTable(str(s.bars_table("1m"))).to_pandas(filters=[("is_final", "=", True)])
    finals["bar_start"] = pd.to_datetime(finals["bar_start"], utc=True)
    expected = pd.concat([detect_alerts(add_signals(finals, window=20), 3.0, 1.0, "1m"),
                          spread_alerts(finals, 25.0, "1m")])
    assert set(stored[stored.timeframe == "1m"].alert_id) == set(expected.alert_id)
    assert stored.alert_id.is_unique and stats["alerts"] == len(stored) and "alert_errors" not in stats
    assert sorted(topic_ids(kafka.bootstrap, s.alerts_topic)) == sorted(stored.alert_id)

    # a restart (a new writer on the same checkpoint) and the last batch: no alert twice, in the table or the topic
    before = set(stored.alert_id)
    w2, _ = run_gold(spark, s, data[-1:], first_id=len(data) - 1)
    after = read_alerts(s)
    assert after.alert_id.is_unique and set(after.alert_id) >= before
    assert sorted(topic_ids(kafka.bootstrap, s.alerts_topic)) == sorted(after.alert_id)
    assert (Path(s.checkpoint(gold.CHECKPOINT)) / STATE_FILE).exists()


def test_an_unreachable_topic_does_not_stop_gold_and_a_restart_raises_what_was_missed(spark, kafka,
                                                                                       gold_settings) -> None:
    data = trades(range(0, 41))
    ref = gold_settings("ref")
    run_gold(spark, ref, data)
    expected = set(read_alerts(ref).alert_id)
    assert expected

    down = gold_settings("down", bootstrap=f"127.0.0.1:{free_port_pair()}")  # nothing listens there
    w, stats = run_gold(spark, down, data)
    # Gold made every bar as without alerts, counted the failures and says why
    assert DeltaTable(str(down.bars_table("1m"))).to_pandas().shape[0] == 41 * 2
    assert stats["alert_errors"] >= 1 and "unreachable" in stats["alert_error"] and stats["alerts"] == 0
    assert read_alerts(down).empty and w.alerts is not None and w.alerts.pending_bars > 0
    # the process dies with the alerts unwritten (kill -9: nothing more runs); it starts again, the broker is back
    up = down.with_(bootstrap=kafka.bootstrap)
    w2 = GoldWriter(spark, up, "g", up.checkpoint(gold.CHECKPOINT))
    stats2 = LayerStats()
    assert w2.raise_alerts(stats2) == len(expected)
    assert set(read_alerts(up).alert_id) == expected and stats2["alerts"] == len(expected)
    assert sorted(topic_ids(kafka.bootstrap, up.alerts_topic)) == sorted(expected)
    assert end_offsets(kafka.bootstrap, up.alerts_topic) == {0: len(expected)}


def test_alerts_can_be_turned_off(spark, gold_settings) -> None:
    s = gold_settings("off", alerts=False)
    w, stats = run_gold(spark, s, trades(range(0, 41)))
    assert w.alerts is None and not s.alerts_table.exists() and "alerts" not in stats
