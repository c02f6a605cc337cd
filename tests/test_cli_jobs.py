"""The seed's commands, with the seed's flags, through `lakehouse` (under spark-submit on a cluster: test_cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable

from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.ops.cli import main

REPO = Path(__file__).resolve().parents[1]


def rows(path: Path) -> int:
    return len(DeltaTable(str(path)).to_pandas())


def test_seed_commands_build_every_layer_then_reset(kafka: LocalKafka, spark, topic: str, tmp_path: Path, hour,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    demo, _ = hour  # as after `make demo`: the default data dir holds the one-query pipeline's tables
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(demo.data_dir))
    d = tmp_path / "data"
    common = ["--bootstrap", kafka.bootstrap, "--topic", topic]
    assert main(["ingest", "--source", "synthetic", "--pair", "XBT/USDT", "--pair", "ETH/USD", "--n-trades", "400",
                 *common]) == 0
    assert main(["bronze", *common, "--out", str(d / "bronze/crypto_trades"),
                 "--checkpoint", str(d / "checkpoints/kafka_to_bronze_trades"),
                 "--startingOffsets", "earliest", "--trigger", "2 seconds", "--available-now"]) == 0
    assert main(["silver", "--bronze", str(d / "bronze/crypto_trades"), "--silver", str(d / "silver/trades"),
                 "--checkpoint", str(d / "checkpoints/bronze_to_silver_trades"), "--available-now"]) == 0
    assert main(["gold", "--silver", str(d / "silver/trades"), "--gold", str(d / "gold/bars_1m"),
                 "--checkpoint", str(d / "checkpoints/silver_to_gold_bars_1m"), "--available-now"]) == 0
    assert rows(d / "bronze/crypto_trades") == 400
    silver = DeltaTable(str(d / "silver/trades")).to_pandas()
    assert len(silver) == 400 and set(silver["symbol"]) == {"BTC/USDT", "ETH/USD"}
    bars = DeltaTable(str(d / "gold/bars_1m")).to_pandas()
    assert bars["trades"].sum() == 400 and set(bars["symbol"]) == {"BTC/USDT", "ETH/USD"}

    # a second available-now run finds nothing new and changes nothing
    assert main(["silver", "--bronze", str(d / "bronze/crypto_trades"), "--silver", str(d / "silver/trades"),
                 "--checkpoint", str(d / "checkpoints/bronze_to_silver_trades"), "--available-now"]) == 0
    assert rows(d / "silver/trades") == 400

    capsys.readouterr()
    assert main(["topic", "consume", *common, "-n", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3

    # the same commands pointed at the demo's own tables are refused, with one line, whatever checkpoint they get
    versions = {t: DeltaTable(str(t)).version() for t in (demo.bronze, demo.silver, demo.bars_table("1m"))}
    for argv in (["bronze", *common, "--out", str(demo.bronze), "--checkpoint", str(d / "checkpoints/b")],
                 ["silver", "--bronze", str(demo.bronze), "--silver", str(demo.silver)],
                 ["gold", "--silver", str(demo.silver), "--gold", str(demo.gold / "bars_1m"),
                  "--checkpoint", str(d / "checkpoints/g")]):
        capsys.readouterr()
        assert main([*argv, "--available-now"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "built by the one-query pipeline" in err, err
        assert str(demo.checkpoint("kafka_to_gold")) in err and "Traceback" not in err
    assert {t: DeltaTable(str(t)).version() for t in versions} == versions

    assert main(["reset", "--data-dir", str(d), "--yes"]) == 0
    assert not (d / "bronze").exists() and not (d / "checkpoints").exists() and not (d / "gold").exists()
    assert demo.bronze.exists()


