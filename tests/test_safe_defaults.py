"""Safe by default (issue 10, part 5): every server the project starts listens on 127.0.0.1 only, as the OS
reports it (psutil), and JupyterLab, started the way `make lab` starts it, keeps its token."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.sources.replay import ReplayServer

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
LOOPBACK = "127.0.0.1"


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of ``pid`` and its descendants."""
    out: set[tuple[str, int]] = set()
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out |= {(c.laddr.ip.removeprefix("::ffff:"), c.laddr.port)  # the JVM's IPv4-mapped IPv6 sockets
                for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def assert_loopback_only(sockets: set[tuple[str, int]], what: str) -> None:
    assert sockets, f"{what}: no listening socket found (the check would prove nothing)"
    wide = sorted(s for s in sockets if s[0] != LOOPBACK)
    assert not wide, f"{what} listens beyond {LOOPBACK}: {wide}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def make_command(target: str, **variables: str) -> list[str]:
    """The command `make <target>` runs (its recipe's last line, as `make -n` prints it; setup taken as done)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    args = [make, "-n", "-o", "setup", "--no-print-directory", "-C", str(ROOT), target, f"VENV={VENV}",
            *(f"{k}={v}" for k, v in variables.items())]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return shlex.split([line for line in out.splitlines() if line.strip()][-1])


@contextmanager
def server(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    cmd_env = dict(env)
    while "=" in cmd[0]:  # VAR=value prefixes of the recipe
        key, _, value = cmd.pop(0).partition("=")
        cmd_env[key] = value
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=cmd_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.terminate()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_listening(pid: int, port: int, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p == port for _, p in listening(pid)):
            return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on {port} after {timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")


def http(url: str, token: str | None = None, method: str = "GET", body: bytes | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=body,
                                     headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def isolated_jupyter_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "LAKEHOUSE_BIND"))}
    env.update(JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return env


def test_broker_and_replay_server_listen_on_loopback_only(kafka: LocalKafka) -> None:
    broker = listening(kafka.pid())
    assert {kafka.port, kafka.port + 1} <= {p for _, p in broker}  # client and controller listeners
    assert_loopback_only(broker, "the embedded broker")
    with ReplayServer(speed="max") as replay:
        mine = listening(os.getpid())
        assert (LOOPBACK, replay.port) in mine
        assert_loopback_only(mine, "the test process (replay server, py4j callbacks)")


def test_spark_driver_and_ui_listen_on_loopback_only(tmp_path: Path) -> None:
    script = ("import sys, time\nfrom lakehouse_utils.engine.spark import get_spark\n"
              "from lakehouse_utils.config import Settings\nspark = get_spark(Settings(spark_ui=True))\n"
              "spark.range(10).count()\n"
              "print('UI', spark.sparkContext.uiWebUrl, flush=True)\ntime.sleep(120)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_LOCAL_IP", "LAKEHOUSE_BIND_HOST")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    log = tmp_path / "spark.log"
    with server([sys.executable, "-c", script], env, log) as proc:
        deadline = time.monotonic() + 180
        while "UI http" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        ui_port = int(log.read_text().split("UI http", 1)[1].split()[0].rsplit(":", 1)[1])
        sockets = listening(proc.pid)
        assert ui_port in {p for _, p in sockets}, sockets  # the UI is on, and it is one of the sockets checked
        assert len(sockets) >= 3, sockets  # UI, driver RPC, block manager (and py4j)
        assert_loopback_only(sockets, "the Spark driver (get_spark, UI on)")


def test_jupyter_lab_as_make_lab_starts_it_is_local_and_keeps_its_token(tmp_path: Path) -> None:
    port = free_port()
    cmd = make_command("lab", LAB_PORT=str(port))
    assert cmd[1] == "lab" and f"--port={port}" in cmd
    env = isolated_jupyter_env(tmp_path)
    log = tmp_path / "lab.log"
    with server([*cmd, "--no-browser"], env, log) as proc:
        wait_listening(proc.pid, port, log)
        base = f"http://{LOOPBACK}:{port}"
        runtime = [json.loads(p.read_text()) for p in (tmp_path / "runtime").glob("jpserver-*.json")]
        assert len(runtime) == 1 and runtime[0]["port"] == port
        token = runtime[0]["token"]
        assert len(token) >= 32  # a generated token, not an empty one
        assert http(f"{base}/api/contents") == 403
        assert http(f"{base}/api/contents", token="wrong-token") == 403
        assert http(f"{base}/api/contents", token=token) == 200
        # a kernel too (its ZMQ ports are the lab's children's sockets)
        assert http(f"{base}/api/kernels", token=token, method="POST", body=b"{}") == 201
        deadline = time.monotonic() + 60
        while len(listening(proc.pid)) < 6 and time.monotonic() < deadline:  # server + 5 kernel channels
            time.sleep(0.5)
        sockets = listening(proc.pid)
        assert len(sockets) >= 6, sockets
        assert_loopback_only(sockets, "JupyterLab and its kernel")


def test_voila_as_make_dashboard_starts_it_is_local(tmp_path: Path) -> None:
    port = free_port()
    cmd = make_command("dashboard", DASHBOARD_PORT=str(port), DATA=str(tmp_path / "data"))
    assert any(c.endswith("/voila") for c in cmd) and f"--port={port}" in cmd
    log = tmp_path / "voila.log"
    with server(cmd, isolated_jupyter_env(tmp_path), log) as proc:
        wait_listening(proc.pid, port, log)
        assert_loopback_only(listening(proc.pid), "Voila (make dashboard)")


def test_bind_host_is_a_setting_followed_by_make(tmp_path: Path) -> None:
    """'Unless told otherwise': LAKEHOUSE_BIND_HOST moves Spark and make's servers, the default stays loopback."""
    from lakehouse_utils.config import Settings

    assert Settings.from_env({}).bind_host == LOOPBACK
    assert Settings.from_env({"LAKEHOUSE_BIND_HOST": "0.0.0.0"}).bind_host == "0.0.0.0"
    assert "--ip=127.0.0.1" in make_command("lab")
    env = {**os.environ, "LAKEHOUSE_BIND_HOST": "0.0.0.0"}
    out = subprocess.run(["make", "-n", "-o", "setup", "--no-print-directory", "-C", str(ROOT), "lab", f"VENV={VENV}"],
                         env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "--ip=0.0.0.0" in out
