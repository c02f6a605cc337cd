"""Broker faults while everything runs (issue 10, part 2), against a broker of each test's own.

The trades are the seeded synthetic stream (simulated clock, so the test can compute them again) sent at a
fixed pace of wall time, so a fault lands while the producer and the queries are busy. After each fault the
oracle is ``lakehouse check`` (Bronze vs the topic, Silver vs Bronze, Gold vs Silver) plus Gold compared with
bars computed here, in pandas, from the trades the source made.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from lakehouse_utils.config import TIMEFRAMES, Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.producer import ProducerThread, TradeProducer, ensure_topics
from lakehouse_utils.kafka.topics import end_offsets
from lakehouse_utils.layers.jobs import Supervisor
from lakehouse_utils.layers.streaming import join_helpers, wait_until
from lakehouse_utils.ops.check import check, read_table
from lakehouse_utils.ops.demo import _wait_caught_up, table_counts
from lakehouse_utils.ops.reconcile_gold import BAR_KEY, expected_bars
from lakehouse_utils.procs import free_port_pair
from lakehouse_utils.progress import ProgressLine
from lakehouse_utils.sources.synthetic import SyntheticSource
from lakehouse_utils.sources.trades import Rejected, Trade

pytestmark = pytest.mark.slow
PAIRS = ["BTC/USD", "ETH/USD"]
TRIGGER = "500 milliseconds"


class PacedSynthetic:
    """``n`` seeded synthetic trades (simulated clock: reproducible) at ``rate`` trades per second of wall time.

    The first ``first`` trades go at once; the rest wait for ``go`` (set it once the queries are warm, so
    the fault lands while trades flow, however long Spark took to start).
    """

    name = "synthetic"

    def __init__(self, n: int, rate: float, first: int = 0, seed: int = 7) -> None:
        self.inner = SyntheticSource(PAIRS, seed=seed, rate=None, n_trades=n)
        self.stats = self.inner.stats
        self.rate, self.first = rate, first
        self.go = threading.Event()

    def stream(self, stop: threading.Event) -> Iterator[Trade | Rejected]:
        t0 = None
        for i, item in enumerate(self.inner.stream(stop)):
            if i >= self.first:
                if t0 is None:
                    while not self.go.wait(0.1):
                        if stop.is_set():
                            return
                    t0 = time.monotonic()
                wait = t0 + (i - self.first) / self.rate - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    return
            yield item


def made_trades(n: int, seed: int = 7) -> pd.DataFrame:
    """The trades ``PacedSynthetic(n, ..., seed)`` sends, made again (Silver's columns)."""
    trades = SyntheticSource(PAIRS, seed=seed, rate=None, n_trades=n).stream(threading.Event())
    df = pd.DataFrame([t._asdict() for t in trades])
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    return df


def assert_gold_is_bars_of(settings: Settings, trades: pd.DataFrame) -> None:
    """Every Gold table equals the bars of ``trades`` computed in pandas (no late trade expected)."""
    late = read_table(settings.late_trades)
    assert late is None or len(late) == 0
    for tf in TIMEFRAMES:
        want = expected_bars(trades, tf)
        have = read_table(settings.bars_table(tf))
        assert have is not None, tf
        have["bar_start"] = pd.to_datetime(have["bar_start"], utc=True).astype("datetime64[us, UTC]").astype("int64")
        m = want.merge(have, on=BAR_KEY, how="outer", suffixes=("", "_gold"), indicator=True)
        assert (m["_merge"] == "both").all(), (tf, m["_merge"].value_counts().to_dict())
        for col in ("trades", "open", "high", "low", "close"):
            assert m[col].astype(float).tolist() == m[f"{col}_gold"].astype(float).tolist(), (tf, col)
        for col in ("volume", "buy_volume", "sell_volume"):
            assert m[f"{col}_gold"].to_numpy() == pytest.approx(m[col].to_numpy(), rel=1e-9), (tf, col)
        assert int(have["trades"].sum()) == len(trades), tf


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker for this test alone (the session's shared one must never be killed)."""
    kafka = LocalKafka(tmp_path / "kafka", free_port_pair(), config={"log.retention.check.interval.ms": "500"})
    kafka.start(timeout=120)
    yield kafka
    kafka.stop()


@pytest.fixture
def fsettings(tmp_path: Path, broker: LocalKafka) -> Settings:
    return Settings(data_dir=tmp_path / "data", bootstrap=broker.bootstrap, topic=f"f.{uuid.uuid4().hex[:8]}",
                    spark_ui=False, trigger=TRIGGER)


@pytest.fixture
def shared_settings(tmp_path: Path, kafka: LocalKafka) -> Settings:
    """The session's broker, for a test that does not fault it (a broker start saved)."""
    return Settings(data_dir=tmp_path / "data", bootstrap=kafka.bootstrap, topic=f"f.{uuid.uuid4().hex[:8]}",
                    spark_ui=False, trigger=TRIGGER)


def rows(path: Path) -> int:
    """Rows of a Delta table, read without Spark (cheap enough to poll while the queries run)."""
    df = read_table(path, ["offset"])
    return 0 if df is None else len(df)


def drain(spark, settings: Settings, queries: dict, producer: ProducerThread, check=None) -> None:
    _wait_caught_up(spark, settings, queries, producer, ProgressLine(log_every=5.0), 0.5, timeout=300, check=check)


def stop_all(queries: dict) -> None:
    for q in queries.values():
        if q.isActive:
            q.stop()
        join_helpers(q)


def test_kill9_of_the_broker_mid_run_loses_and_doubles_nothing(spark, broker: LocalKafka,
                                                               fsettings: Settings) -> None:
    from lakehouse_utils.layers.pipeline import start_pipeline

    n = 3000
    # a second start on the broker's data dir reuses the running broker (its pid file)
    assert LocalKafka(broker.data_dir, broker.port).start().pid() == broker.pid()
    ensure_topics(fsettings)
    # the job's policy: a query failed on a Kafka error is restarted from its checkpoint, with a line saying so
    said: list[str] = []
    supervisor = Supervisor({"pipeline": lambda: start_pipeline(spark, fsettings, trigger=TRIGGER)}, said.append)
    queries = supervisor.start()
    source = PacedSynthetic(n, rate=300, first=500)
    producer = ProducerThread(source, TradeProducer.from_settings(fsettings))
    try:
        producer.start()
        wait_until(lambda: rows(fsettings.silver) > 0, 120, 0.3, "trades in Silver")
        source.go.set()
        time.sleep(1.5)
        broker.kill()  # kill -9: no clean shutdown
        killed_at = producer.status()
        assert not broker.is_running()
        time.sleep(4)
        broker.start(timeout=120)  # same port, same data dir: the log is recovered
        assert producer.join(180)
        final = producer.status()
        assert killed_at.sent < n, "the fault came after the producer was done"
        assert (final.state, final.sent, final.delivered, final.delivery_errors) == ("finished", n, n, 0)
        drain(spark, fsettings, queries, producer, supervisor.check)
        for name, q in queries.items():
            assert q.isActive and q.exception() is None, name
        assert queries["pipeline"].layer_stats.get("skipped_offsets", 0) == 0
        print("\n".join(said))  # the query recovered by itself (nothing said) or was restarted (said so)
        assert all(m.startswith("pipeline: query failed on a Kafka error (") and
                   m.endswith("restarting it from its checkpoint (1 of at most 3)") for m in said[:1]), said
    finally:
        producer.stop()
        stop_all(queries)
    assert end_offsets(fsettings, fsettings.topic) == {0: n}  # idempotent producer: no retried message twice
    report = check(fsettings)
    assert report.ok, report.summary()
    counts = table_counts(spark, fsettings)
    assert (counts.bronze, counts.silver, counts.quarantine, counts.late) == (n, n, 0, 0)
    assert_gold_is_bars_of(fsettings, made_trades(n))


def set_retention(settings: Settings, ms: int) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    entry = ConfigEntry("retention.ms", str(ms), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, settings.topic, incremental_configs=[entry])
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(30)


def low_watermark(settings: Settings) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "faults-low"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(settings.topic, 0), timeout=10)[0]
    finally:
        consumer.close()


def send(settings: Settings, trades: list[Trade]) -> None:
    producer = TradeProducer.from_settings(settings)
    with producer:
        for t in trades:
            assert producer.send(t, "synthetic")
        assert producer.flush(60) == 0
    assert producer.delivered == len(trades) and producer.delivery_errors == 0


def bronze_offsets(settings: Settings) -> list[int]:
    df = read_table(settings.bronze, ["offset"])
    return [] if df is None else sorted(df["offset"].tolist())


def test_offsets_deleted_by_retention_stop_bronze_unless_data_loss_is_allowed(
        spark, shared_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    fsettings = shared_settings  # its retention is its topic's own (the session's broker checks every 500 ms)

    from lakehouse_utils.layers.bronze import SKIPPED, start_bronze
    from lakehouse_utils.layers.jobs import run_query

    trades = list(SyntheticSource(PAIRS, seed=3, rate=None, n_trades=600).stream(threading.Event()))
    ensure_topics(fsettings)
    send(fsettings, trades[:200])
    assert run_query(start_bronze(spark, fsettings, trigger="available-now"), progress=ProgressLine(io.StringIO())) == 0
    assert bronze_offsets(fsettings) == list(range(200))

    # Bronze is down; 300 more messages come, and retention deletes them (and the 200 Bronze holds)
    send(fsettings, trades[200:500])
    set_retention(fsettings, 1000)
    wait_until(lambda: low_watermark(fsettings) == 500, 90, 0.5, "retention to delete offsets 0..499")
    set_retention(fsettings, 7 * 24 * 3600 * 1000)
    send(fsettings, trades[500:])
    assert end_offsets(fsettings, fsettings.topic) == {0: 600} and low_watermark(fsettings) == 500

    out = io.StringIO()
    query = start_bronze(spark, fsettings, trigger="available-now")
    assert run_query(query, progress=ProgressLine(out)) == 1
    assert out.getvalue().splitlines()[-1] == (
        f"bronze: stopped with error: Kafka data loss: messages (from offset 200 of {fsettings.topic}-0) were "
        "deleted (by retention) before bronze read them, and failOnDataLoss is on. Restart with --allow-data-loss "
        "to skip them (the job reports how many), or `lakehouse reset` to rebuild from what the topic holds.")
    assert bronze_offsets(fsettings) == list(range(200))  # nothing written past the hole

    out = io.StringIO()
    query = start_bronze(spark, fsettings, trigger="available-now", fail_on_data_loss=False)
    capsys.readouterr()
    assert run_query(query, progress=ProgressLine(out)) == 0
    assert query.layer_stats[SKIPPED] == 300  # the low watermark (500) minus where Bronze had stopped (200)
    assert out.getvalue().splitlines()[-1] == (
        "bronze: 300 offset(s) were no longer in Kafka (deleted by retention) and were skipped (--allow-data-loss); "
        "`lakehouse check` shows where Bronze has the gap")
    assert (f"[bronze] batch 1: 300 of the offsets 200..599 of {fsettings.topic}[0] were no longer in Kafka "
            "(deleted by retention) and were skipped (--allow-data-loss)") in capsys.readouterr().err
    assert bronze_offsets(fsettings) == list(range(200)) + list(range(500, 600))
    report = check(fsettings)
    assert [(f.table, f.kind, f.count, f.examples) for f in report.findings] == [
        ("bronze", f"offsets missing in {fsettings.topic}[0]", 300, ["200..499"])]


def test_broker_stopped_while_the_producer_runs_blocks_it_and_loses_nothing(broker: LocalKafka,
                                                                           fsettings: Settings) -> None:
    from tests.test_producer import read_raw

    n, outage = 3000, 30.0  # the 30 s: well past librdkafka's 10 s maximum reconnect backoff
    source = PacedSynthetic(n, rate=300)
    source.go.set()
    producer = TradeProducer.from_settings(fsettings, queue_max_messages=50)
    thread = ProducerThread(source, producer).start()
    try:
        wait_until(lambda: thread.status().delivered >= 300, 60, 0.1, "300 trades delivered")
        assert broker.stop()  # the broker is down: connections refused
        stopped = time.monotonic()
        lines = []
        while time.monotonic() - stopped < outage:
            status = thread.status()
            lines.append(status.line())
            # the queue is bounded: what the source gave beyond the queue waits in send(), nothing piles up
            assert status.in_flight <= 50 and status.received - status.sent <= 1, status.line()
            time.sleep(0.5)
        during = thread.status()
        broker.start(timeout=120)
        assert thread.join(120)
    finally:
        thread.stop()
    print("\n".join(lines[-3:]))
    assert during.state == "running" and during.blocked_for is not None and during.blocked_for > outage - 5
    assert during.sent < n and during.delivery_errors == 0
    blocked = during.line()
    assert f"BLOCKED {during.blocked_for:.0f}s: queue full (50 waiting), not reading the source; broker " \
           "unreachable: _TRANSPORT" in blocked, blocked
    assert "Connection refused" in blocked, blocked
    final = thread.status()
    assert (final.state, final.received, final.sent, final.delivered, final.delivery_errors) == (
        "finished", n, n, n, 0)
    assert final.backpressure_waits >= 1 and final.blocked_s >= outage - 5 and final.blocked_for is None
    assert "BLOCKED" not in final.line() and f"blocked={final.backpressure_waits}x/" in final.line()
    # every accepted trade is in the topic once, in the order it was sent (the producer is idempotent)
    assert end_offsets(fsettings, fsettings.topic) == {0: n}
    sent = made_trades(n)
    got = [(k.decode(), json.loads(v)["trade_id"]) for k, v, _ in read_raw(fsettings.bootstrap, fsettings.topic)]
    assert got == [(f"synthetic|{symbol}", trade_id)  # keyed exchange|symbol
                   for symbol, trade_id in zip(sent["symbol"], sent["trade_id"], strict=True)]


def test_silver_stopped_and_started_from_its_panel_mid_run_loses_and_doubles_nothing(
        spark, shared_settings: Settings) -> None:
    fsettings = shared_settings
    from lakehouse_utils.layers import bronze, gold, silver
    from lakehouse_utils.views.widgets import QueryPanel

    n = 3000
    ensure_topics(fsettings)
    panel = QueryPanel("silver", lambda trigger: silver.start_silver(spark, fsettings, trigger=trigger), TRIGGER)
    queries = {"bronze": bronze.start_bronze(spark, fsettings, trigger=TRIGGER), "silver": panel.start(),
               "gold": gold.start_gold(spark, fsettings, trigger=TRIGGER)}
    source = PacedSynthetic(n, rate=300, first=300)
    producer = ProducerThread(source, TradeProducer.from_settings(fsettings))
    try:
        producer.start()
        wait_until(lambda: rows(fsettings.silver) > 0, 120, 0.3, "trades in Silver")
        source.go.set()
        time.sleep(1.0)
        first = queries["silver"]
        line = panel.stop()  # the Stop button, mid-run (a batch may be running: it is stopped with it)
        assert not first.isActive and line.startswith("silver: batch ") and panel.error() is None
        held = rows(fsettings.silver)
        wait_until(lambda: rows(fsettings.bronze) >= held + 500, 60, 0.5, "Bronze to move on")
        assert rows(fsettings.silver) == held  # Silver is stopped indeed
        queries["silver"] = panel.start()  # the Start button: the same checkpoint carries on
        assert queries["silver"] is not first and queries["silver"].isActive
        assert producer.join(120)
        final = producer.status()
        assert (final.state, final.delivered, final.delivery_errors) == ("finished", n, 0)
        drain(spark, fsettings, queries, producer)
    finally:
        producer.stop()
        panel.stop()
        stop_all(queries)
        panel.close()
    report = check(fsettings)
    assert report.ok, report.summary()
    counts = table_counts(spark, fsettings)
    assert (counts.bronze, counts.silver, counts.quarantine, counts.late) == (n, n, 0, 0)
    assert_gold_is_bars_of(fsettings, made_trades(n))


def test_the_supervisor_restarts_a_query_failed_on_a_kafka_error_and_raises_on_others(spark,
                                                                                      tmp_path: Path) -> None:
    """The job's restart policy on real queries whose batch fails (the error text is what Spark's Kafka
    source gives when the broker stays away longer than its timeouts, which would take minutes here)."""
    from lakehouse_utils.layers.jobs import Supervisor

    started: list[str] = []

    def starter(name: str, error: Exception):
        def start():
            first = name not in started
            started.append(name)

            def run(batch, batch_id: int) -> None:
                if first:
                    raise error

            return (spark.readStream.format("rate").option("rowsPerSecond", 5).load()
                    .writeStream.queryName(name).foreachBatch(run).trigger(processingTime="200 milliseconds")
                    .option("checkpointLocation", str(tmp_path / name)).start())
        return start

    said: list[str] = []
    kafka = starter("kafka_error", RuntimeError("org.apache.kafka.common.errors.TimeoutException: Timed out "
                                                "waiting for a node assignment. Call: describeTopics"))
    other = starter("bug", ValueError("a bug, not Kafka"))
    supervisor = Supervisor({"kafka_error": kafka}, said.append)
    queries = supervisor.start()
    other_supervisor = Supervisor({"bug": other}, said.append)
    other_supervisor.start()
    try:
        first = queries["kafka_error"]

        def restarted() -> bool:
            supervisor.check()
            q = queries["kafka_error"]
            return q is not first and q.lastProgress is not None and q.lastProgress["batchId"] >= 1

        wait_until(restarted, 90, 0.2, "the query restarted and past its failed batch")
        assert said == ["kafka_error: query failed on a Kafka error (org.apache.kafka.common.errors.TimeoutException);"
                        " restarting it from its checkpoint (1 of at most 3)"]
        assert started.count("kafka_error") == 2 and queries["kafka_error"].exception() is None
        with pytest.raises(RuntimeError, match=r"(?s)^bug query failed: .*ValueError: a bug, not Kafka"):
            wait_until(lambda: other_supervisor.check() or False, 60, 0.2, "the bug to surface")
        assert started.count("bug") == 1  # not restarted
    finally:
        stop_all({**queries, **other_supervisor.queries})


def test_a_refused_login_or_permission_is_not_a_kafka_error_a_restart_gets_past() -> None:
    """The restart policy (the demo's Supervisor, the engine's watcher) restarts a query after the broker was away,
    never after a wrong password, a refused certificate or a missing ACL: those fail the same way every time."""
    from lakehouse_utils.layers.jobs import is_transient

    errors = "org.apache.kafka.common.errors"
    assert is_transient(f"{errors}.TimeoutException: Timed out waiting for a node assignment")
    assert is_transient(f"Caused by: {errors}.DisconnectException\n\tat org.apache.kafka.clients...")
    assert is_transient("org.apache.kafka.common.KafkaException: Failed to construct kafka consumer")
    for refused in ("SaslAuthenticationException: Authentication failed during authentication due to invalid "
                    "credentials with SASL mechanism SCRAM-SHA-512", "SslAuthenticationException: SSL handshake failed",
                    "TopicAuthorizationException: Not authorized to access topics: [trades]",
                    "GroupAuthorizationException: Not authorized to access group: spark-kafka-source"):
        assert not is_transient(f"org.apache.kafka.common.KafkaException: ...\nCaused by: {errors}.{refused}"), refused
    assert not is_transient("ValueError: a bug, not Kafka")
