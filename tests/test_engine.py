"""The shared engine (``lakehouse engine``): one Spark for every kernel, run like the embedded broker.

Real parts only: the engine process with its JVM, the session's Kafka broker, Jupyter kernels (jupyter_client),
Spark Connect clients, the real hour through the layers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from deltalake import DeltaTable

from lakehouse_utils.config import Settings
from lakehouse_utils.engine import EngineServer, SharedEngine
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.ops.check import check

pytestmark = pytest.mark.slow


def _group(pid: int) -> list[psutil.Process]:
    """The engine's processes: its Python and everything under it (the JVM)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _gone(procs: list[psutil.Process], timeout: float = 20.0) -> bool:
    """Have these processes ended (zombies count as ended)?"""
    def alive(p: psutil.Process) -> bool:
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while any(alive(p) for p in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lakehouse_utils.ops.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, kafka: LocalKafka) -> Iterator[EngineServer]:
    data = tmp_path_factory.mktemp("engine") / "data"
    server = EngineServer(data / "engine", data)
    env = {"LAKEHOUSE_SPARK_UI": "false", "LAKEHOUSE_BOOTSTRAP": kafka.bootstrap}
    proc = _cli("engine", "start", "--data-dir", str(data), env=env)
    assert proc.returncode == 0, proc.stderr
    yield server
    pid = server.pid()
    group = _group(pid) if pid else []
    server.stop()
    assert len(group) >= 2 and _gone(group)  # stop leaves nothing running: its Python and its JVM ended


def test_start_twice_reuses_it_status_lists_it_and_the_token_is_required(engine: EngineServer) -> None:
    pid = engine.pid()
    assert pid is not None
    again = _cli("engine", "start", "--data-dir", str(engine.data_dir))
    assert again.returncode == 0 and engine.pid() == pid  # the running engine, not a second one
    status = _cli("engine", "status", "--data-dir", str(engine.data_dir))
    assert status.returncode == 0 and f"engine running (pid {pid}" in status.stdout
    assert "Spark Connect: sc://localhost:" in status.stdout and engine.token not in status.stdout + again.stdout
    assert (engine.folder / "token").stat().st_mode & 0o777 == 0o600

    # every socket of the engine (its Python and its JVM) listens on 127.0.0.1 only
    listening = {c.laddr.ip.removeprefix("::ffff:") for p in _group(pid) for c in p.net_connections("inet")
                 if c.status == "LISTEN"}  # (an IPv6 socket bound to the IPv4 loopback says ::ffff:127.0.0.1)
    assert listening == {"127.0.0.1"}

    # the control API: nothing without the token, or with another one
    port = engine.info()["port"]
    for header in ({}, {"Authorization": "Bearer not-the-token"}):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/status", headers=header)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
    # Spark Connect: a session with another token is refused; with the token it runs a query
    code = ("import sys; from pyspark.sql import SparkSession; url = sys.argv[1]\n"
            "try:\n    print(SparkSession.builder.remote(url).create().range(7).count())\n"
            "except Exception as e:\n    print('refused', type(e).__name__, 'UNAUTHENTICATED' in str(e))\n")
    connect = engine.info()["connect_port"]
    outs = [subprocess.run([sys.executable, "-c", code, f"sc://localhost:{connect}/;token={token}"],
                           capture_output=True, text=True, timeout=120).stdout.strip()
            for token in ("wrong", engine.token)]
    assert outs == ["refused SparkConnectGrpcException True", "7"]


def _kernel(env: dict[str, str]):
    from jupyter_client.manager import start_new_kernel

    return start_new_kernel(kernel_name="python3", env={**os.environ, **env}, startup_timeout=120)


def _run(kc, code: str, timeout: float = 300) -> str:
    out: list[str] = []

    def hook(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    assert reply["content"]["status"] == "ok", "".join(out)
    return "".join(out)


OPEN = """
from lakehouse_utils.config import Settings
from lakehouse_utils.engine import open_engine
from lakehouse_utils.views.widgets import QueryPanel
settings = Settings.from_env()
engine = open_engine(settings, say=None)
"""


def test_a_query_belongs_to_the_engine_not_to_the_kernel_that_started_it(engine: EngineServer, kafka: LocalKafka,
                                                                         topic: str) -> None:
    env = {"LAKEHOUSE_DATA_DIR": str(engine.data_dir), "LAKEHOUSE_BOOTSTRAP": kafka.bootstrap,
           "LAKEHOUSE_TOPIC": topic}
    from lakehouse_utils.kafka.producer import ensure_topics

    ensure_topics(Settings(bootstrap=kafka.bootstrap, topic=topic))
    (km_a, kc_a), (km_b, kc_b) = _kernel(env), _kernel(env)
    try:
        assert "True" in _run(kc_a, OPEN + "q = engine.start('bronze', settings, '1 second'); print(q.isActive)")
        # another kernel sees it, and its panel shows it running
        assert "True True" in _run(kc_b, OPEN + "p = QueryPanel.for_layer(engine, 'bronze', settings)\n"
                                   "print(p.query is not None, p.query.isActive)")
        # a kernel that starts and watches queries holds no Spark client and no pandas (the engine does the work;
        # a verification cell that reads a table imports them when it needs them)
        assert _run(kc_b, "import sys; p._update(); print(p.status_w.value)\n"
                    "print(sorted(m for m in ('pyspark', 'pandas', 'pyarrow', 'grpc') if m in sys.modules))"
                    ).splitlines()[-1] == "[]"
        for km in (km_b, km_a):  # the kernels restart, the one that started it too: the query runs on
            km.restart_kernel(now=True)
            assert SharedEngine(Settings(data_dir=engine.data_dir), engine).find("bronze").isActive
        for km in (km_a, km_b):  # no kernel holds a JVM: Spark is the engine's
            assert not [p for p in psutil.Process(km.provisioner.pid).children(recursive=True)
                        if "java" in p.name()]
        kc_b.wait_for_ready(timeout=120)
        # a kernel that did not start it picks it up after its restart, and stops it
        out = _run(kc_b, OPEN + "p = QueryPanel.for_layer(engine, 'bronze', settings)\n"
                   "print(p.query.isActive); print(p.stop()); print(engine.spark.range(3).count())")
        assert out.splitlines()[0] == "True" and "bronze" in out and out.splitlines()[-1] == "3"
        status = engine.status()
        assert [q["active"] for q in status["queries"] if q["layer"] == "bronze"] == [False]
        assert any(s["idle_s"] < 10 for s in status["sessions"])  # kernel B's Spark Connect session (its `spark`)
    finally:
        for km, kc in ((km_a, kc_a), (km_b, kc_b)):
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def test_engine_killed_mid_run_resumes_its_queries_from_their_checkpoints(kafka: LocalKafka, topic: str,
                                                                          tmp_path: Path) -> None:
    """kill -9 of the engine (its JVM with it) while the hour flows through Bronze, Silver and Gold; started
    again, it resumes the three queries from their checkpoints and Gold equals the hour's own bars."""
    from lakehouse_utils.kafka.producer import ensure_topics
    from tests.test_pipeline import assert_gold_matches

    data = tmp_path / "data"
    settings = Settings(data_dir=data, bootstrap=kafka.bootstrap, topic=topic, spark_ui=False)
    ensure_topics(settings)
    engine = SharedEngine.open(settings, say=None)
    pid = engine.server.pid()
    try:
        for layer in ("bronze", "silver", "gold"):
            engine.start(layer, settings, "1 second")
        first = subprocess.Popen([sys.executable, "-m", "lakehouse_utils.ops.cli", "ingest", "--source", "replay",
                                  "--speed", "200", "--bootstrap", kafka.bootstrap, "--topic", topic, "--duration",
                                  "5"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:  # the first part of the hour, the engine killed while it comes in
            deadline = time.monotonic() + 240
            while len(list((settings.silver / "_delta_log").glob("*.json"))) < 2:  # Silver holds rows: pull the plug
                assert time.monotonic() < deadline, engine.server.log_tail()
                time.sleep(0.5)
            group = _group(pid)
            engine.server.kill()
        finally:
            _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
        assert len(group) >= 2 and _gone(group)  # the JVM went with it
        assert json.loads((engine.server.folder / "queries.json").read_text())  # what was running is written down

        feed = _cli("ingest", "--source", "replay", "--speed", "max", "--bootstrap", kafka.bootstrap,
                    "--topic", topic)  # all of the hour (its first part a second time: Silver dedups)
        assert feed.returncode == 0, feed.stderr
        engine = SharedEngine.open(settings, say=None)  # started again: it resumes bronze, silver, gold
        queries = {q.name: q for q in engine.queries()}
        assert sorted(queries) == ["bronze", "gold", "silver"] and all(q.isActive for q in queries.values())
        assert all("resumed from its checkpoint" in " ".join(q.messages) for q in queries.values())
        deadline = time.monotonic() + 300
        while True:
            gold = DeltaTable(str(settings.bars_table("1m"))).to_pandas(columns=["trades"])["trades"].sum()
            if gold >= 2671:
                break
            assert time.monotonic() < deadline, f"Gold holds {gold} trades\n{engine.server.log_tail()}"
            time.sleep(1)
        for name in ("bronze", "silver", "gold"):
            queries[name].stop()
        assert_gold_matches(settings)
        report = check(settings)
        assert report.ok, report.summary()
    finally:
        engine.server.stop()
    assert not engine.server.is_running() and _gone(_group(pid))
