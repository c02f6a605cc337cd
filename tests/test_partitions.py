"""A trades topic of 3 partitions, keyed by exchange|symbol: each symbol in one partition, in order; Gold unchanged.

One synthetic stream of three symbols (seeded, so it can be made again for the expected values) goes into a
3-partition topic once per module.  Bronze, Silver and Gold run layer by layer on one data dir, the one-query
``lakehouse pipeline --partitions 3`` on another; both Golds must equal bars computed here in pandas from the
regenerated trades, and ``lakehouse check`` must pass with Bronze reconciled partition by partition.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid

import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition

from lakehouse_utils.config import TIMEFRAMES, Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.topics import end_offsets
from lakehouse_utils.ops.check import check, read_table
from lakehouse_utils.ops.cli import build_parser, main, settings_from
from lakehouse_utils.sources.synthetic import SyntheticSource

PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD"]
SEED, N = 20261126, 6000
PER_TRIGGER = 2000  # offsets per micro-batch: several batches, each across the partitions
WATERMARK = "10 seconds"  # the stream spans ~2 simulated minutes: some bars become final during the run
# murmur2(key) % 3 of the keys "synthetic|BTC/USD" ..., as Kafka's Java client places a key (checked with
# kafka-clients' Utils.murmur2); partition 0 gets none
JAVA_PARTITION = {"BTC/USD": 1, "ETH/USD": 1, "SOL/USD": 2}


def trades() -> list:
    """The stream the fixture produced, made again from its seed."""
    return list(SyntheticSource(PAIRS, seed=SEED, rate=None, n_trades=N).stream(threading.Event()))


@pytest.fixture(scope="module")
def produced(kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The seeded stream in a new 3-partition topic; settings of a fresh data dir for it."""
    from lakehouse_utils.kafka.producer import ProducerThread, TradeProducer, ensure_topics

    settings = Settings(data_dir=tmp_path_factory.mktemp("parts") / "layers", bootstrap=kafka.bootstrap,
                        topic=f"parts.{uuid.uuid4().hex[:8]}", partitions=3, spark_ui=False,
                        max_offsets_per_trigger=PER_TRIGGER, watermark=WATERMARK)
    ensure_topics(settings)
    thread = ProducerThread(SyntheticSource(PAIRS, seed=SEED, rate=None, n_trades=N),
                            TradeProducer.from_settings(settings))
    thread.start()
    thread.join()
    status = thread.stop()
    assert status.ok and status.delivered == N, status.line()
    return settings


def read_topic(bootstrap: str, topic: str) -> pd.DataFrame:
    """Every message of ``topic``: partition, offset, key and the trade's symbol and id."""
    ends = end_offsets(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-partitions", "enable.auto.commit": False})
    rows: list[dict] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        while len(rows) < sum(ends.values()):
            for msg in consumer.consume(1000, timeout=10):
                assert msg.error() is None, msg.error()
                t = json.loads(msg.value())
                rows.append({"partition": msg.partition(), "offset": msg.offset(), "key": msg.key().decode(),
                             "symbol": t["symbol"], "trade_id": int(t["trade_id"])})
    finally:
        consumer.close()
    return pd.DataFrame(rows)


def expected_bars(tf: str) -> pd.DataFrame:
    """Bars per (symbol, bar_start) from the regenerated trades, first/last by (event_time, trade_id)."""
    df = pd.DataFrame([{"symbol": t.symbol, "id": int(t.trade_id), "t": t.event_time, "price": t.price,
                        "qty": t.qty} for t in trades()])
    df = df.sort_values(["symbol", "t", "id"])
    df["bar_start"] = pd.to_datetime(df["t"], utc=True).dt.floor(f"{TIMEFRAMES[tf]}s")
    df["notional"] = df["price"] * df["qty"]
    g = df.groupby(["symbol", "bar_start"])
    return pd.DataFrame({"open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
                         "close": g["price"].last(), "volume": g["qty"].sum(), "trades": g.size(),
                         "vwap": g["notional"].sum() / g["qty"].sum()})


def assert_gold_equals_independent_bars(settings: Settings) -> None:
    from deltalake import DeltaTable

    for tf in TIMEFRAMES:
        exp = expected_bars(tf)
        got = DeltaTable(str(settings.bars_table(tf))).to_pandas()
        got["bar_start"] = pd.to_datetime(got["bar_start"], utc=True)
        got = got.set_index(["symbol", "bar_start"]).sort_index()
        assert list(got.index) == list(exp.index), tf
        for col in ("open", "high", "low", "close", "trades"):
            assert got[col].tolist() == exp[col].tolist(), (tf, col)
        for col in ("volume", "vwap"):
            assert got[col].to_numpy() == pytest.approx(exp[col].to_numpy(), rel=1e-9), (tf, col)
    assert len(expected_bars("1m")) > len(PAIRS)  # more than one bar per symbol
    for table in (settings.late_trades, settings.quarantine):
        rows = read_table(table)
        assert rows is None or rows.empty, table


def assert_check_passes_per_partition(settings: Settings) -> None:
    report = check(settings)
    assert report.ok, report.summary()
    ends = {p: n for p, n in end_offsets(settings.bootstrap, settings.topic).items() if n}
    assert report.facts["bronze_partitions"] == {
        f"{settings.topic}[{p}]": {"first": 0, "last": n - 1, "rows": n, "lag": 0} for p, n in ends.items()}
    assert report.facts["bronze_rows"] == report.facts["silver_rows"] == N


def test_each_symbol_is_in_one_partition_in_trade_id_order(produced: Settings) -> None:
    msgs = read_topic(produced.bootstrap, produced.topic)
    assert sorted(end_offsets(produced.bootstrap, produced.topic)) == [0, 1, 2]
    assert len(msgs) == N and (msgs["key"] == "synthetic|" + msgs["symbol"]).all()  # exchange|symbol
    where = msgs.groupby("symbol")["partition"].unique()
    assert {s: list(p) for s, p in where.items()} == {s: [p] for s, p in JAVA_PARTITION.items()}
    for symbol, rows in msgs.sort_values(["partition", "offset"]).groupby("symbol"):
        ids = rows["trade_id"].tolist()
        assert ids == list(range(1, len(ids) + 1)), symbol  # 1, 2, 3 ... in offset order


def test_layers_build_the_independent_bars_from_three_partitions(spark, produced: Settings) -> None:
    from lakehouse_utils.layers.bronze import start_bronze
    from lakehouse_utils.layers.gold import start_gold
    from lakehouse_utils.layers.silver import start_silver

    for start in (start_bronze, start_silver, start_gold):
        # Bronze's query maintains the tables every 2nd batch (the notebooks' flow has no pipeline query to do it)
        query = start(spark, produced.with_(maintain_every=2, maintain_retain="10m") if start is start_bronze
                      else produced, trigger="available-now")
        assert query.awaitTermination(300) and query.exception() is None
        if start is start_bronze:  # the topic was read in several batches, each across the partitions
            batches = [p["numInputRows"] for p in query.recentProgress if p["numInputRows"]]
            assert sum(batches) == N and len(batches) >= N // PER_TRIGGER and max(batches) <= PER_TRIGGER
            for thread in threading.enumerate():
                if thread.name == "lakehouse-maintain":
                    thread.join(120)
            # 3 versions: only maintenance checkpoints the log this early (delta-rs: every 100 commits)
            assert list((produced.bronze / "_delta_log").glob("*.checkpoint.parquet")), "no maintenance ran"
    assert_gold_equals_independent_bars(produced)
    assert_check_passes_per_partition(produced)


def test_pipeline_command_builds_the_same_bars(spark, produced: Settings) -> None:
    data = produced.data_dir.parent / "pipeline"
    assert main(["pipeline", "--data-dir", str(data), "--bootstrap", produced.bootstrap, "--topic", produced.topic,
                 "--partitions", "3", "--maxOffsetsPerTrigger", str(PER_TRIGGER), "--watermark", WATERMARK,
                 "--available-now"]) == 0
    settings = produced.with_(data_dir=data)
    assert_gold_equals_independent_bars(settings)
    assert_check_passes_per_partition(settings)


def test_partitions_from_flags_and_environment_and_an_existing_topic_is_kept(
        kafka: LocalKafka, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for cmd in (["ingest"], ["demo"], ["pipeline"], ["topic", "create"]):
        assert settings_from(parser.parse_args([*cmd, "--partitions", "3"])).partitions == 3, cmd
    common = ["--bootstrap", kafka.bootstrap]

    monkeypatch.setenv("LAKEHOUSE_PARTITIONS", "3")  # ingest creates the topic with the environment's count
    ingested = f"parts.env.{uuid.uuid4().hex[:8]}"
    assert main(["ingest", "--source", "synthetic", *sum((["--pair", p] for p in PAIRS), []), "--n-trades", "300",
                 "--topic", ingested, *common]) == 0
    ends = end_offsets(kafka.bootstrap, ingested)
    assert sorted(ends) == [0, 1, 2] and sum(ends.values()) == 300 and ends[0] == 0  # BTC in 1; ETH, SOL in 2
    monkeypatch.delenv("LAKEHOUSE_PARTITIONS")

    capsys.readouterr()
    made = f"parts.cli.{uuid.uuid4().hex[:8]}"
    assert main(["topic", "create", "--topic", made, "--partitions", "3", *common]) == 0
    assert capsys.readouterr().out.strip() == f"created {made}"
    with caplog.at_level(logging.WARNING, logger="lakehouse_utils.kafka.topics"):
        assert main(["topic", "create", "--topic", made, "--partitions", "2", *common]) == 0
    assert capsys.readouterr().out.strip() == f"exists {made}"
    assert f"topic {made} has 3 partition(s), 2 asked: kept as it is" in caplog.text
    assert sorted(end_offsets(kafka.bootstrap, made)) == [0, 1, 2]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lakehouse_utils.kafka.topics"):
        assert main(["topic", "create", "--topic", made, "--partitions", "3", *common]) == 0
    assert caplog.text == ""  # the count asked: nothing to say
