"""The seed's commands, with the seed's flags, through `lakehouse` (in-process and under spark-submit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from lakehouse_utils import jars
from lakehouse_utils.broker import LocalKafka
from lakehouse_utils.cli import main

REPO = Path(__file__).resolve().parents[1]


def rows(path: Path) -> int:
    return len(DeltaTable(str(path)).to_pandas())


def test_seed_commands_build_every_layer_then_reset(kafka: LocalKafka, spark, topic: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
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

    assert main(["reset", "--data-dir", str(d), "--yes"]) == 0
    assert not (d / "bronze").exists() and not (d / "checkpoints").exists() and not (d / "gold").exists()


def test_bronze_job_runs_unchanged_under_spark_submit(kafka: LocalKafka, topic: str, tmp_path: Path) -> None:
    assert main(["ingest", "--source", "synthetic", "--n-trades", "50", "--bootstrap", kafka.bootstrap,
                 "--topic", topic]) == 0
    out = tmp_path / "bronze"
    submit = Path(sys.executable).parent / "spark-submit"
    cmd = [str(submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
           "--jars", ",".join(str(p) for p in jars.jars("spark")),
           str(REPO / "infra" / "lakehouse_job.py"), "bronze", "--bootstrap", kafka.bootstrap, "--topic", topic,
           "--out", str(out), "--checkpoint", str(tmp_path / "chk"), "--available-now"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env["PYSPARK_PYTHON"] = sys.executable
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = DeltaTable(str(out)).to_pandas()
    assert len(table) == 50 and sorted(table["offset"]) == list(range(50))
