"""Foundation: embedded KRaft broker, Spark's Kafka source into Delta, deltalake reads, restarts."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from deltalake import DeltaTable

from lakehouse_utils.config import Settings
from lakehouse_utils.engine.spark import get_spark
from lakehouse_utils.kafka import broker as brokers
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.topics import end_offsets, ensure_topic
from lakehouse_utils.procs import free_port_pair

N = 1000


def produce_json(bootstrap: str, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, key=f"k{i % 7}", value=json.dumps({"i": i, "price": 100.0 + i / 10}))
    assert producer.flush(30) == 0


def read_all(bootstrap: str, topic: str) -> list[dict]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    try:
        high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        consumer.assign([TopicPartition(topic, 0, 0)])
        out = []
        while len(out) < high:
            msg = consumer.poll(10)
            assert msg is not None, f"timed out after {len(out)} of {high} messages"
            if not msg.error():
                out.append(json.loads(msg.value()))
        return out
    finally:
        consumer.close()


def test_kafka_to_delta_available_now(kafka: LocalKafka, spark, topic: str, tmp_path: Path) -> None:
    ensure_topic(kafka.bootstrap, topic, partitions=1)
    produce_json(kafka.bootstrap, topic, N)
    assert end_offsets(kafka.bootstrap, topic) == {0: N}

    table = tmp_path / "raw"
    query = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka.bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("CAST(value AS STRING) AS value_raw", "partition", "offset")
        .writeStream.format("delta")
        .option("checkpointLocation", str(tmp_path / "chk"))
        .trigger(availableNow=True)
        .start(str(table))
    )
    query.awaitTermination(120)
    assert query.exception() is None

    rows = spark.read.format("delta").load(str(table)).orderBy("offset").collect()
    assert len(rows) == N
    assert [r.offset for r in rows] == list(range(N))
    assert [json.loads(r.value_raw)["i"] for r in rows] == list(range(N))

    # The same table without a JVM: deltalake -> pandas.
    pdf = DeltaTable(str(table)).to_pandas().sort_values("offset").reset_index(drop=True)
    assert len(pdf) == N
    assert pdf["offset"].tolist() == list(range(N))
    assert pdf["value_raw"].tolist() == [r.value_raw for r in rows]


def test_get_spark_is_one_session(spark, tmp_path: Path) -> None:
    assert get_spark() is spark
    assert get_spark(Settings(shuffle_partitions=7)) is spark
    assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"
    # Also from a foreachBatch callback, where Spark's "active session" is the query's clone.
    spark.range(3).write.format("delta").save(str(tmp_path / "t"))
    seen = []
    query = (spark.readStream.format("delta").load(str(tmp_path / "t")).writeStream
             .foreachBatch(lambda df, _: seen.append((get_spark() is spark, df.sparkSession is spark)))
             .option("checkpointLocation", str(tmp_path / "chk")).trigger(availableNow=True).start())
    query.awaitTermination(60)
    assert seen == [(True, False)]


def test_port_taken_by_a_stranger_is_a_clear_error(tmp_path: Path, kafka: LocalKafka) -> None:
    other = LocalKafka(tmp_path / "other", kafka.port)
    with pytest.raises(RuntimeError, match="taken by another process"):
        other.start()


def test_notebooks_start_no_broker_when_a_bootstrap_is_given(tmp_path: Path, kafka: LocalKafka) -> None:
    """``ensure_broker``: the bootstrap parameter or LAKEHOUSE_BOOTSTRAP names a broker; only neither starts one."""
    env = {"LAKEHOUSE_BOOTSTRAP": kafka.bootstrap}
    settings = Settings.from_env(env, data_dir=tmp_path)
    assert settings.bootstrap == kafka.bootstrap
    assert brokers.ensure_broker(settings, None, env) is None
    assert brokers.ensure_broker(settings, kafka.bootstrap, {}) is None
    assert not (tmp_path / "kafka").exists()
    # the same rule for `lakehouse demo` (its --bootstrap flag, or LAKEHOUSE_BOOTSTRAP)
    assert brokers.names_a_broker(None, env) and brokers.names_a_broker(kafka.bootstrap, {})
    assert not brokers.names_a_broker(None, {})
    # neither: the embedded broker under data_dir on the configured port (here taken, so it says so)
    with pytest.raises(RuntimeError, match="taken by another process"):
        brokers.ensure_broker(settings, None, {})


def test_settings_env_and_flags(tmp_path: Path) -> None:
    env = {"LAKEHOUSE_DATA_DIR": str(tmp_path), "LAKEHOUSE_TOPIC": "x.trades", "LAKEHOUSE_PARTITIONS": "3",
           "LAKEHOUSE_SPARK_UI": "false"}
    s = Settings.from_env(env, bootstrap="localhost:19092", topic=None)
    assert s.topic == "x.trades" and s.partitions == 3 and s.spark_ui is False
    assert s.bootstrap == "localhost:19092"
    assert s.bronze == tmp_path / "bronze" / "crypto_trades"
    assert s.silver == tmp_path / "silver" / "trades"
    assert s.quarantine == tmp_path / "silver" / "trades_quarantine"
    assert s.checkpoint("bronze") == tmp_path / "checkpoints" / "bronze"
    assert s.dlq_topic == "x.trades.dlq"
    assert Settings.from_env(env, data_dir="/elsewhere").gold == Path("/elsewhere/gold")


def test_broker_cli_start_status_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lakehouse_utils.ops.cli import main

    port, data = str(free_port_pair()), str(tmp_path / "kafka")
    try:
        # --data-dir is the data root, as for every command: the broker lives in <data>/kafka
        assert main(["broker", "start", "--port", port, "--data-dir", str(tmp_path)]) == 0
        assert "started broker 127.0.0.1:" + port in capsys.readouterr().out
        assert (tmp_path / "kafka" / "server.properties").exists()
        # the older spelling (the broker's own folder) still finds the same broker, and says what changed
        assert main(["broker", "start", "--port", port, "--data-dir", data]) == 0
        out = capsys.readouterr()
        assert "reusing broker" in out.out and f"Next time: --data-dir {tmp_path}" in out.err
        assert main(["broker", "status", "--port", port, "--data-dir", data]) == 0
        status = capsys.readouterr().out
        assert "running (pid" in status
        # its 256 MB heap is touched at start: the broker's memory is what it will be hours later (README: Soak)
        pid = int(status.split("running (pid")[1].split(")")[0].strip(" :="))
        assert psutil.Process(pid).memory_info().rss > 256 * 2**20
    finally:
        assert main(["broker", "stop", "--port", port, "--data-dir", data]) == 0
    assert main(["broker", "status", "--port", port, "--data-dir", data]) == 3  # stopped
    assert "stopped" in capsys.readouterr().out
