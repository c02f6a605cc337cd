"""A Spark standalone cluster on this machine: a master and N workers from the installed pyspark, on 127.0.0.1.

``LocalCluster.for_settings(settings).start(ClusterSpec(workers=2, cores=1, memory="1g"))`` runs
``org.apache.spark.deploy.master.Master`` and N ``...worker.Worker`` JVMs through pyspark's own ``spark-class``
(nothing to download), each detached in its own process group and tracked by a pid file under
``<data>/spark-cluster``, like the embedded broker: a second ``start`` reuses a running cluster, ``stop`` ends it.
Jobs reach it as ``spark://127.0.0.1:<port>``: through ``spark-submit`` (:func:`submit_command`, the README's
command with the local jar cache as ``--jars``) or from a notebook or the CLI with ``spark_master`` set
(``LAKEHOUSE_SPARK_MASTER``).  Every socket is on 127.0.0.1 and the master's REST submission server is off.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import jars
from ..config import Settings
from ..procs import reachable, wait_exit

DEFAULT_PORT = 17077  # Spark's 7077 + 10000, as the embedded broker's 19092
DEFAULT_UI_PORT = 18080
REPO = Path(__file__).resolve().parents[2]
JOB_SCRIPT = REPO / "infra" / "lakehouse_job.py"
_MEMORY = re.compile(r"^\d+[mMgG]$")


def spark_home() -> Path:
    """The installed pyspark: its ``bin/spark-class`` and ``jars/`` are a Spark distribution."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass(frozen=True)
class ClusterSpec:
    """What ``lakehouse cluster start`` asks for: workers, and the cores and memory each offers to executors."""

    workers: int = 2
    cores: int = 1
    memory: str = "1g"

    def __post_init__(self) -> None:
        if self.workers < 1 or self.cores < 1:
            raise ValueError(f"--workers and --cores must be >= 1 (got {self.workers}, {self.cores})")
        if not _MEMORY.match(self.memory):
            raise ValueError(f"--memory {self.memory!r}: expected a size such as 512m or 1g")


@dataclass
class WorkerState:
    name: str  # worker-1, worker-2, ...
    pid: int | None
    id: str = ""  # the master's id for it, once registered
    state: str = "NOT REGISTERED"  # ALIVE | DEAD | ... as the master sees it
    cores: int = 0
    cores_used: int = 0
    memory_mb: int = 0


@dataclass
class ClusterStatus:
    running: bool
    master_url: str
    ui_url: str
    master_pid: int | None
    workers: list[WorkerState] = field(default_factory=list)
    active_apps: list[str] = field(default_factory=list)
    completed_apps: int = 0

    @property
    def alive_workers(self) -> int:
        return sum(w.state == "ALIVE" for w in self.workers)

    def __str__(self) -> str:
        if not self.running:
            return "cluster: stopped"
        lines = [f"cluster: {self.master_url} (master pid {self.master_pid}), UI {self.ui_url}",
                 f"workers: {self.alive_workers} alive of {len(self.workers)}"]
        for w in self.workers:
            pid = f"pid {w.pid}" if w.pid else "not running"
            lines.append(f"  {w.name}: {w.state}, {w.cores} cores ({w.cores_used} used), {w.memory_mb} MB, {pid}")
        apps = ", ".join(self.active_apps) or "-"
        lines.append(f"applications: running {apps}; finished {self.completed_apps}")
        return "\n".join(lines)


class LocalCluster:
    """The master and workers under ``home`` (pid files, logs, the workers' scratch dirs)."""

    def __init__(self, home: str | Path, port: int = DEFAULT_PORT, ui_port: int = DEFAULT_UI_PORT) -> None:
        self.home = Path(home).resolve()
        self.port = port
        self.ui_port = ui_port

    @classmethod
    def for_settings(cls, settings: Settings, port: int | None = None, ui_port: int | None = None) -> LocalCluster:
        """The cluster of a data dir; a running one's ports come from its ``cluster.json``."""
        home = settings.data_dir / "spark-cluster"
        saved = _read_json(home / "cluster.json")
        return cls(home, port or saved.get("port", DEFAULT_PORT), ui_port or saved.get("ui_port", DEFAULT_UI_PORT))

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def auth_file(self) -> Path:
        """The cluster's Spark properties (mode 0600): ``spark.authenticate`` and its shared secret, made at the
        first start. The master, the workers and every application read it as a properties file, so the secret
        never appears on a command line (``ps``)."""
        return self.home / "auth.properties"

    def ensure_auth(self) -> Path:
        """The auth file, made with a new random secret if there is none (a master already running keeps its own)."""
        if not self.auth_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            tmp = self.auth_file.with_suffix(".tmp")
            tmp.touch(mode=0o600)
            tmp.chmod(0o600)
            tmp.write_text(f"spark.authenticate true\nspark.authenticate.secret {secrets.token_hex(32)}\n")
            os.replace(tmp, self.auth_file)
        return self.auth_file

    def serves(self, master: str) -> bool:
        """True when ``master`` is this cluster's master URL and the cluster has its secret."""
        return master.rstrip("/") == self.master_url and self.auth_file.exists()

    def _pid_file(self, name: str) -> Path:
        return self.home / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The pid of ``master`` or ``worker-N`` if it is alive and is ours, else ``None``."""
        try:
            pid = int(self._pid_file(name).read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if f"lakehouse.cluster={self.home}" in cmdline else None

    def _alive(self, name: str) -> bool:
        """Is the process of ``name``'s pid file alive (still the ``spark-class`` script, or its JVM)?"""
        try:
            pid = int(self._pid_file(name).read_text().strip())
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child, exited
                return False
        except ChildProcessError:
            pass
        except (OSError, ValueError):
            return True  # no pid file: nothing to judge
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False

    def worker_names(self) -> list[str]:
        return sorted((p.stem for p in self.home.glob("worker-*.pid")), key=lambda n: int(n.split("-")[1]))

    # -- start / stop ----------------------------------------------------------------------------
    def start(self, spec: ClusterSpec | None = None, timeout: float = 120.0,
              progress: Callable[[str], None] | None = None) -> LocalCluster:
        """Start the master and the workers that are not running, then wait until all are registered."""
        spec = spec or ClusterSpec()
        say = progress or (lambda _s: None)
        self.home.mkdir(parents=True, exist_ok=True)
        if self.pid("master") is None:
            if reachable(f"127.0.0.1:{self.port}") or reachable(f"127.0.0.1:{self.ui_port}"):
                raise RuntimeError(f"port {self.port} or {self.ui_port} is taken by another process (not the "
                                   f"cluster of {self.home}); choose others with --port / --ui-port")
            say(f"starting the master on {self.master_url} (applications authenticate: spark.authenticate)")
            self.ensure_auth()
            self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                        "--port", str(self.port), "--webui-port", str(self.ui_port),
                        "--properties-file", str(self.auth_file))
            _write_json(self.home / "cluster.json", {"port": self.port, "ui_port": self.ui_port, **asdict(spec)})
        else:
            saved = _read_json(self.home / "cluster.json")
            spec = ClusterSpec(saved.get("workers", spec.workers), saved.get("cores", spec.cores),
                               saved.get("memory", spec.memory)) if saved else spec
            say(f"reusing the running master {self.master_url} ({spec.workers} x {spec.cores} cores, {spec.memory})")
        self._wait(lambda s: s is not None, timeout, "the master's status page")
        for i in range(1, spec.workers + 1):
            name = f"worker-{i}"
            if self.pid(name) is None:
                say(f"starting {name}: {spec.cores} cores, {spec.memory}")
                work = self.home / "work" / name
                work.mkdir(parents=True, exist_ok=True)
                self._spawn(name, "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", "127.0.0.1",
                            "--cores", str(spec.cores), "--memory", spec.memory, "--webui-port", "0",
                            "--work-dir", str(work), "--properties-file", str(self.ensure_auth()))
        names = [f"worker-{i}" for i in range(1, spec.workers + 1)]
        self._wait(lambda s: s is not None and all(self._registered(s, n) for n in names), timeout,
                   f"{spec.workers} worker(s) registered")
        say(f"cluster up: {self.master_url}, UI {self.ui_url}")
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the workers (with their executors), then the master; True if anything was running."""
        names = [*self.worker_names(), "master"]
        running = [(n, p) for n in names if (p := self.pid(n)) is not None]
        for _name, pid in running:
            _signal_group(pid, signal.SIGTERM)
        for _name, pid in running:
            if not wait_exit(pid, timeout):
                _signal_group(pid, signal.SIGKILL)
                wait_exit(pid, 10)
        for n in names:
            self._pid_file(n).unlink(missing_ok=True)
        return bool(running)

    def kill_worker(self, name: str = "worker-1") -> int:
        """``kill -9`` a worker and its executors (its process group), as a lost machine; returns its pid."""
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        _signal_group(pid, signal.SIGKILL)
        wait_exit(pid, 10)
        return pid

    # -- status ----------------------------------------------------------------------------------
    def master_json(self) -> dict[str, Any] | None:
        """The master's ``/json/`` page (workers, cores, applications), or ``None`` when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=3) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def status(self) -> ClusterStatus:
        page = self.master_json() if self.pid("master") else None
        workers = []
        for name in self.worker_names():
            pid = self.pid(name)
            ws = WorkerState(name, pid)
            seen = self._registration(page, name) if page else None
            if seen:
                ws.id, ws.state, ws.cores = seen["id"], seen["state"], seen.get("cores", 0)
                ws.cores_used, ws.memory_mb = seen.get("coresused", 0), seen.get("memory", 0)
            workers.append(ws)
        apps = [f"{a['name']} ({a['id']}, {a['cores']} cores)" for a in (page or {}).get("activeapps", [])]
        return ClusterStatus(page is not None, self.master_url, self.ui_url, self.pid("master"), workers, apps,
                             len((page or {}).get("completedapps", [])))

    def _registration(self, page: dict[str, Any], name: str) -> dict[str, Any] | None:
        """The master's newest entry for worker ``name`` (found by the port in its log's "Starting Spark worker")."""
        port = _logged_worker_port(self.logs / f"{name}.log")
        found = [w for w in page.get("workers", []) if port is not None and _worker_port(w) == port]
        return max(found, key=lambda w: w.get("lastheartbeat", 0)) if found else None

    def _registered(self, page: dict[str, Any], name: str) -> bool:
        seen = self._registration(page, name)
        return seen is not None and seen["state"] == "ALIVE"

    # -- internals -------------------------------------------------------------------------------
    def _spawn(self, name: str, main: str, *args: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        home = spark_home()
        env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(self.logs),
                   SPARK_NO_DAEMONIZE="1", PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable))
        # the marker tells our JVMs from others (pid files may outlive a reboot); no REST submission server
        opts = f"-Dlakehouse.cluster={self.home} -Dspark.master.rest.enabled=false"
        env["SPARK_MASTER_OPTS" if name == "master" else "SPARK_WORKER_OPTS"] = opts
        env["SPARK_DAEMON_MEMORY"] = os.environ.get("LAKEHOUSE_CLUSTER_DAEMON_MEMORY", "256m")
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([str(home / "bin" / "spark-class"), main, *args], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._pid_file(name).write_text(str(proc.pid))

    def _wait(self, ready: Callable[[dict[str, Any] | None], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready(self.master_json()):
                return
            dead = [n for n in ["master", *self.worker_names()] if not self._alive(n)]
            if dead:
                raise RuntimeError(f"{dead[0]} exited while starting; its log {self.logs / (dead[0] + '.log')}:\n"
                                   + _tail(self.logs / f"{dead[0]}.log"))
            time.sleep(0.5)
        raise TimeoutError(f"{what}: not seen after {timeout:.0f}s; logs in {self.logs}")


def cluster_properties(settings: Settings, master: str) -> Path | None:
    """The properties file holding the secret of the cluster at ``master``: ``LAKEHOUSE_SPARK_PROPERTIES`` if set,
    else the data dir's own cluster's (``lakehouse cluster start``) when ``master`` is it; else ``None``."""
    named = os.environ.get("LAKEHOUSE_SPARK_PROPERTIES")
    if named:
        return Path(named)
    cluster = LocalCluster.for_settings(settings)
    return cluster.auth_file if master.startswith("spark://") and cluster.serves(master) else None


def submit_command(settings: Settings, master: str, job: str, *args: str, executor_memory: str = "768m",
                   python: str | None = None, conf: dict[str, str] | None = None,
                   properties_file: Path | None = None) -> list[str]:
    """The ``spark-submit`` line that runs ``lakehouse <job> <args>`` on ``master``: the README's command, with
    the local jar cache as ``--jars`` (the executors fetch them from the driver: nothing is downloaded) and, for
    the data dir's own cluster, its secret as ``--properties-file``."""
    properties_file = properties_file or cluster_properties(settings, master)
    submit = spark_home() / "bin" / "spark-submit"
    confs = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": settings.bind_host,
             "spark.executor.memory": executor_memory, "spark.ui.enabled": str(settings.spark_ui).lower(),
             "spark.pyspark.python": python or sys.executable, "spark.pyspark.driver.python": python or sys.executable,
             **(conf or {})}
    cmd = [str(submit), "--master", master, "--name", f"lakehouse-{job}",
           "--jars", ",".join(str(p) for p in jars.jars("spark")),
           *(["--properties-file", str(properties_file)] if properties_file else [])]
    for key, value in confs.items():
        cmd += ["--conf", f"{key}={value}"]
    return [*cmd, str(JOB_SCRIPT), job, *args]


def submit_env() -> dict[str, str]:
    """The environment for :func:`submit_command`: pyspark as SPARK_HOME, and no inherited py4j gateway."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env.update(SPARK_HOME=str(spark_home()), SPARK_LOCAL_IP="127.0.0.1", PYTHONPATH=os.pathsep.join(
        p for p in [str(REPO), env.get("PYTHONPATH", "")] if p))
    return env


# -- helpers -------------------------------------------------------------------------------------
def _worker_port(w: dict[str, Any]) -> int | None:
    port = w.get("port")
    return int(port) if isinstance(port, int) else None


def _logged_worker_port(log: Path) -> int | None:
    """The RPC port a worker logged ("Successfully started service 'sparkWorker' on port N"), newest first."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    ports = re.findall(r"service 'sparkWorker' on port (\d+)", text)
    return int(ports[-1]) if ports else None


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: its group is its pid
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
