"""The layer jobs on a real Spark standalone cluster (master + 2 workers) over a 3-partition topic, one worker killed.

Real parts only: pyspark's own ``spark-class`` runs the master and workers, the jobs go through ``spark-submit``,
the broker is the session's embedded Kafka.  Gold is compared with bars computed in pandas from the sources.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from deltalake import DeltaTable

from lakehouse_utils.config import Settings
from lakehouse_utils.engine.cluster import ClusterSpec, LocalCluster, submit_env
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.ops.cli import main
from lakehouse_utils.ops.cluster_demo import SYNTHETIC_PAIRS, run_cluster_demo

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="--memory"):
        ClusterSpec(memory="lots")
    with pytest.raises(ValueError, match="--workers"):
        ClusterSpec(workers=0)


def test_jobs_on_two_workers_stay_exact_when_one_worker_is_killed(kafka: LocalKafka, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    port, ui = _free_port(), _free_port()
    flags = ["--data-dir", str(data), "--port", str(port), "--ui-port", str(ui)]
    settings = replace(Settings(data_dir=data, bootstrap=kafka.bootstrap, topic="cluster.trades", spark_ui=False),
                       max_offsets_per_trigger=2000)
    cluster = LocalCluster.for_settings(settings, port, ui)
    try:
        # `lakehouse cluster start`, then a second start reuses it (pid files), and status shows both workers
        assert main(["cluster", "start", "--workers", "2", "--cores", "1", "--memory", "1g", *flags]) == 0
        pids = {n: cluster.pid(n) for n in ("master", "worker-1", "worker-2")}
        assert all(pids.values())
        assert main(["cluster", "start", *flags]) == 0
        assert {n: cluster.pid(n) for n in pids} == pids
        capsys.readouterr()
        assert main(["cluster", "status", *flags]) == 0
        shown = capsys.readouterr().out
        assert f"spark://127.0.0.1:{port}" in shown and "workers: 2 alive of 2" in shown
        assert_only_applications_with_the_secret_get_in(cluster, list(pids.values()))

        killed: list[int] = []

        def kill_a_worker_mid_bronze(job: str, batches: int) -> None:
            if job == "bronze" and batches >= 1 and not killed:
                killed.append(cluster.kill_worker("worker-1"))

        result = run_cluster_demo(settings, ClusterSpec(2, 1, "1g"), cluster=cluster, partitions=3,
                                  synthetic_trades=3_000, start_broker=False, on_commit=kill_a_worker_mid_bronze)
        assert killed, "worker-1 was not killed during Bronze"
        bronze_run = next(j for j in result.jobs if j.job == "bronze")
        assert bronze_run.batches >= 3  # it went on, on the other worker, after the kill at its first commit
        # the driver saw its executor on the killed worker go, and the master saw the worker die
        log = (cluster.logs / "job-bronze.log").read_text(errors="replace")
        assert "Executor lost" in log or "Lost executor" in log or "executor lost" in log.lower(), log[-3000:]
        page = cluster.master_json()
        assert page is not None
        states = sorted(w["state"] for w in page["workers"])
        assert states == ["ALIVE", "DEAD"], states
        assert len(page["completedapps"]) == 3

        # exact: Gold equals the bars computed from the sources; check passes; nothing late or quarantined
        assert result.ok, result.summary()
        assert result.problems == [] and result.check_ok
        c = result.counts
        assert c["bronze"] == c["trades sent"] == 2672 + 3_000
        assert c["silver"] == c["distinct trades"] == 2671 + 3_000 and c["late"] == 0 and c["quarantine"] == 0

        # keyed by exchange|symbol: each symbol in one partition, in trade order; all 3 partitions hold trades
        bronze = DeltaTable(str(settings.bronze)).to_pandas(columns=["partition", "offset", "key", "value_raw"])
        bronze["symbol"] = [json.loads(v)["symbol"] for v in bronze["value_raw"]]
        assert (bronze["key"] == [f"{json.loads(v)['exchange']}|{json.loads(v)['symbol']}"
                                  for v in bronze["value_raw"]]).all()
        assert sorted(bronze["symbol"].unique()) == sorted(["BTC/USD", *SYNTHETIC_PAIRS])
        assert (bronze.groupby("symbol")["partition"].nunique() == 1).all()
        assert sorted(bronze["partition"].unique()) == [0, 1, 2]
        for _symbol, rows in bronze[bronze["symbol"] != "BTC/USD"].groupby("symbol"):
            ids = [int(json.loads(v)["trade_id"]) for v in rows.sort_values("offset")["value_raw"]]
            assert ids == sorted(ids)
    finally:
        main(["cluster", "stop", *flags])
    assert cluster.status().running is False and cluster.pid("master") is None


STRANGER = """
from pyspark.sql import SparkSession
SparkSession.builder.master({url!r}).appName("stranger").config("spark.ui.enabled", "false").getOrCreate()
print("REGISTERED", flush=True)
"""


def assert_only_applications_with_the_secret_get_in(cluster: LocalCluster, daemons: list[int]) -> None:
    """spark.authenticate: the secret lives in a 0600 properties file, on no command line; an application that
    does not know it is refused by the master (its log says why) and never registers."""
    auth = cluster.auth_file
    assert auth.stat().st_mode & 0o777 == 0o600
    secret = auth.read_text().split("spark.authenticate.secret ")[1].strip()
    assert len(secret) == 64
    for pid in daemons:
        assert secret not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    env = {k: v for k, v in submit_env().items() if k != "PYSPARK_SUBMIT_ARGS"}
    log = cluster.logs / "master.log"
    size = log.stat().st_size
    stranger = subprocess.Popen([sys.executable, "-c", STRANGER.format(url=cluster.master_url)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        refused = ""
        while time.monotonic() < deadline and not refused:
            with open(log, errors="replace") as fh:
                fh.seek(size)
                said = fh.read()
            refused = next((line for line in said.splitlines() if "SASL" in line or "Sasl" in line
                            or "uthenticat" in line), "")
            time.sleep(0.5)
        assert refused, f"the master did not refuse the stranger; its log since: {said[-2000:]}"
        page = cluster.master_json()
        assert page is not None and not any(a["name"] == "stranger" for a in page.get("activeapps", []))
    finally:
        os.killpg(stranger.pid, 9)
        stranger.wait(30)
    assert "REGISTERED" not in (stranger.stdout.read() if stranger.stdout else "")
