"""Silver and Gold follow the table before them version by version, and join its batches when it runs in the
same process (``layers/follow.py``): the fused path of the shared engine, with per-layer Start and Stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from lakehouse_utils.config import Settings
from lakehouse_utils.engine.host import QueryHost, key_of
from lakehouse_utils.kafka.producer import ProducerThread, TradeProducer, ensure_topics
from lakehouse_utils.layers import gold, silver
from lakehouse_utils.layers.follow import STATE, latest_version
from lakehouse_utils.layers.streaming import wait_until
from lakehouse_utils.ops.check import check
from tests.test_faults import PacedSynthetic, assert_gold_is_bars_of, made_trades, rows

pytestmark = pytest.mark.slow
TRIGGER = "500 milliseconds"


def _state(settings: Settings, layer) -> dict:
    return json.loads((settings.checkpoint(layer.CHECKPOINT) / STATE).read_text())


def test_layers_join_bronzes_batches_and_silver_stopped_then_started_catches_up_and_joins_again(
        spark, kafka, tmp_path: Path, topic: str) -> None:
    # Bronze's query maintains the tables every 8 batches (~4 s) beside the fused batches and a stopped Silver
    settings = Settings(data_dir=tmp_path / "data", bootstrap=kafka.bootstrap, topic=topic, spark_ui=False,
                        trigger=TRIGGER, maintain_every=8, maintain_retain="10m")
    ensure_topics(settings)
    host = QueryHost(spark)
    n = 2400
    source = PacedSynthetic(n, rate=200, first=200)
    producer = ProducerThread(source, TradeProducer.from_settings(settings))
    try:
        for layer in ("bronze", "silver", "gold"):
            host.start(layer, settings, TRIGGER)
        s, g = (host.find(key_of(layer, settings)).query for layer in ("silver", "gold"))
        producer.start()
        wait_until(lambda: rows(settings.bronze) >= 200 and s.joined and g.joined, 180, 0.3, "Silver and Gold to join")
        source.go.set()
        wait_until(lambda: s.lastProgress and s.lastProgress["mode"] == "fused" and g.lastProgress
                   and g.lastProgress["mode"] == "fused", 60, 0.3, "a fused batch")
        # a fused batch is Bronze's versions for Silver, Silver's for Gold: the followers' positions say so
        wait_until(lambda: _state(settings, silver)["done"] == latest_version(settings.bronze), 30, 0.2, "in step")

        host.stop(key_of("silver", settings))  # Stop in 03: Bronze goes on alone, Gold waits for Silver
        assert not s.isActive and s.exception() is None and not s.joined
        held = rows(settings.silver)
        wait_until(lambda: rows(settings.bronze) >= held + 400, 60, 0.3, "Bronze to go on without Silver")
        assert rows(settings.silver) == held

        s2 = host.start("silver", settings, TRIGGER).query  # Start in 03: it catches up from Bronze's table ...
        assert s2 is not s
        wait_until(lambda: s2.recentProgress, 60, 0.2, "Silver's first batch")
        first = s2.recentProgress[0]  # not lastProgress: the next batch, fused, can come within a poll under load
        assert first["mode"] == "follow" and first["numInputRows"] >= 400, s2.recentProgress
        assert producer.join(120) and producer.status().delivered == n
        # ... then joins Bronze's batches again, and Gold follows
        wait_until(lambda: s2.joined and rows(settings.silver) == n, 120, 0.3, "Silver to catch up and join")
        wait_until(lambda: sum(DeltaTable(str(settings.bars_table("1m"))).to_pandas(columns=["trades"])["trades"])
                   == n, 120, 0.3, "Gold to hold every trade")
    finally:
        producer.stop()
        host.close()
    report = check(settings)
    assert report.ok, report.summary()
    assert_gold_is_bars_of(settings, made_trades(n))
    assert rows(settings.bronze) == rows(settings.silver) == n
    for table in (settings.bronze, settings.silver):  # < 100 versions: only maintenance checkpoints them
        assert list((table / "_delta_log").glob("*.checkpoint.parquet")), f"no maintenance of {table}"


def test_a_follower_batch_cut_short_is_done_again_with_the_same_versions(spark, tmp_path: Path) -> None:
    """A crash after Silver's commit but before its position was written: the restart redoes exactly that batch
    (the planned versions, the same batch id), and the idempotent commits keep every row once."""
    from lakehouse_utils.layers import bronze
    from tests.test_layers import T0 as t0
    from tests.test_layers import bronze_df, trade_json

    settings = Settings(data_dir=tmp_path / "data", spark_ui=False)
    silver.ensure_tables(spark, settings)
    for b in range(3):  # three Bronze commits of two trades each, one of them a bad row
        values = [trade_json(f"{b}{i}", 100.0 + i, 1.0, t0) for i in range(2)] + ["not json"]
        bronze.write_batch(settings, bronze_df(spark, values, start_offset=3 * b).toArrow(), "bronze-x", b)
    run = silver.start_silver(spark, settings, trigger="available-now")
    assert run.awaitTermination(120) and run.exception() is None
    state = _state(settings, silver)
    assert state == {"batch": 0, "done": latest_version(settings.bronze)}
    assert (rows(settings.silver), rows(settings.quarantine)) == (6, 3)

    # as if the process died between the commits and the new position: batch 0 still planned
    (settings.checkpoint(silver.CHECKPOINT) / STATE).write_text(
        json.dumps({"batch": -1, "done": -1, "planned": [0, -1, state["done"]]}))
    bronze.write_batch(settings, bronze_df(spark, [trade_json("9", 99.0, 2.0, t0)], start_offset=9).toArrow(),
                       "bronze-x", 3)  # and Bronze moved on meanwhile
    again = silver.start_silver(spark, settings, trigger="available-now")
    assert again.awaitTermination(120) and again.exception() is None
    assert (rows(settings.silver), rows(settings.quarantine)) == (7, 3)  # batch 0 again: nothing twice
    assert _state(settings, silver) == {"batch": 1, "done": latest_version(settings.bronze)}

    g = gold.start_gold(spark, settings, trigger="available-now")
    assert g.awaitTermination(120) and g.exception() is None
    bars = DeltaTable(str(settings.bars_table("1m"))).to_pandas()
    assert bars["trades"].sum() == 7 and _state(settings, gold)["done"] == latest_version(settings.silver)
