"""Embedded Apache Kafka (KRaft, single node) as a child JVM bound to 127.0.0.1 (topics: ``topics``).

``LocalKafka(data_dir, port).start()`` formats the storage dir once, starts ``kafka.Kafka`` with the
jars from ``lakehouse_utils.jars``, and waits until an AdminClient gets metadata.  The process is
detached (it outlives a CLI call) and tracked by a pid file, so a second ``start`` on the same data
dir reuses the running broker, and a start after ``kill -9`` recovers the log and carries on.
``security=BrokerSecurity(...)`` makes the client listener SASL and/or TLS (``broker_security``).
Its probes are configured by ``kafka_conf``, over the secured listener if there is one.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from .. import jars
from ..config import ENV_PREFIX, Settings
from ..procs import port_open, wait_exit
from .broker_security import BrokerSecurity
from .kafka_conf import KafkaConnection, KafkaSecurityError, make_client, metadata

log = logging.getLogger(__name__)

DEFAULT_PORT = 19092

_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = info
"""


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    topics: list[str]

    def __str__(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        topics = ", ".join(self.topics) if self.topics else "-"
        return f"broker {self.bootstrap} {state}; data {self.data_dir}; topics: {topics}"


class LocalKafka:
    """A single-node KRaft broker+controller on 127.0.0.1:``port`` (controller on ``port + 1``)."""

    def __init__(self, data_dir: str | Path = "data/kafka", port: int = DEFAULT_PORT,
                 heap: str = "256m", security: BrokerSecurity | None = None,
                 config: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.heap = heap
        self.security = security
        self.config = dict(config or {})  # extra server.properties, e.g. a short log.retention.check.interval.ms

    @classmethod
    def for_settings(cls, settings: Settings) -> LocalKafka:
        """The embedded broker under ``settings.broker_dir`` on the port of ``settings.bootstrap``."""
        return cls(settings.broker_dir, settings.broker_port)

    # -- paths ---------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def connection(self) -> KafkaConnection:
        """How this broker's own probes connect (the first user, PLAIN, over the secured listener if any)."""
        return self.security.client(self.bootstrap) if self.security else KafkaConnection(self.bootstrap)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def server_log(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def properties(self) -> Path:
        return self.data_dir / "server.properties"

    # -- lifecycle -----------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of our broker JVM if it is alive, else ``None`` (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            try:  # non-Linux: fall back to a liveness probe
                os.kill(pid, 0)
                return pid
            except OSError:
                return None
        return pid if str(self.properties) in cmdline else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout: float = 90.0) -> LocalKafka:
        """Start (or reuse) the broker and return once it serves metadata."""
        if self.is_running():
            self.wait_ready(timeout)
            return self
        if port_open(self.port):
            raise RuntimeError(
                f"port {self.port} is taken by another process (not the broker of {self.data_dir}); "
                "stop it, or choose another --port / --bootstrap"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.log_dir / "meta.properties").exists():
            self._format()
        with open(self.server_log, "ab") as log:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.properties)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # detached: survives the CLI that started it and Ctrl-C
            )
        self.pid_file.write_text(str(proc.pid))
        try:
            self.wait_ready(timeout, proc)
        except Exception:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with code {proc.returncode}:\n{self.log_tail()}")
            if port_open(self.port):
                try:
                    admin, errors = make_client(AdminClient, self.connection)
                    metadata(admin, errors, self.connection, 5)
                    return
                except KafkaSecurityError:
                    raise
                except KafkaException:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"Kafka at {self.bootstrap} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        if not wait_exit(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            wait_exit(pid, 10)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """``kill -9`` the broker (for crash tests): no clean shutdown, the pid file stays behind."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_exit(pid, 10)

    def status(self) -> BrokerStatus:
        pid = self.pid()
        topics: list[str] = []
        if pid is not None:
            try:
                admin, errors = make_client(AdminClient, self.connection)
                meta = metadata(admin, errors, self.connection, 5)
                topics = sorted(t for t in meta.topics if not t.startswith("__"))
            except KafkaException:
                pass
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.data_dir, topics)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.server_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------
    def _java(self, main: str, *args: str) -> list[str]:
        java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if "JAVA_HOME" in os.environ else "java"
        classpath = os.pathsep.join(str(p) for p in jars.jars("kafka"))
        # the broker's heap is all there from the start (touched at once, ~0.1 s): its memory does not creep up
        # over hours as the heap fills to its cap (+70 MB over the 30-minute soak), it is flat from the first minute
        heap = [f"-Xms{self.heap}", "-XX:+AlwaysPreTouch"] if main == "kafka.Kafka" else ["-Xms32m"]
        # a one-shot tool (the storage format) compiles with C1 only: ~3.0 -> ~1.9 s, once per new broker
        jit = [] if main == "kafka.Kafka" else ["-XX:TieredStopAtLevel=1"]
        return [java, f"-Xmx{self.heap}", *heap, *jit, "-XX:+UseSerialGC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                "-cp", classpath, main, *args]

    def _format(self) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self.properties),
                       "--ignore-formatted", *(self.security.format_args() if self.security else [])),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            output = f"{result.stdout}\n{result.stderr}"
            for password in self.security.users.values() if self.security else []:
                output = output.replace(password.reveal(), "***")
            raise RuntimeError(f"formatting {self.log_dir} failed:\n{output}")

    def _write_config(self) -> None:
        ctl = self.port + 1
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{ctl}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{ctl}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "168",
        }
        if self.security is not None:
            props.update(self.security.server_properties(self.port))
        props.update(self.config)
        self.properties.touch(mode=0o600)  # it may hold the users' passwords
        self.properties.chmod(0o600)
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J)


def ensure_broker(settings: Settings, bootstrap: str | None = None,
                  env: dict[str, str] | None = None) -> LocalKafka | None:
    """The notebooks' ``bootstrap`` parameter: ``None``, with no ``LAKEHOUSE_BOOTSTRAP`` either, means the
    embedded broker under ``settings.data_dir`` (started, or reused if it runs), which is returned. A bootstrap
    given either way is someone else's broker: nothing is started (``None``).
    """
    if names_a_broker(bootstrap, env):
        return None
    return LocalKafka.for_settings(settings).start()


def names_a_broker(bootstrap: str | None, env: dict[str, str] | None = None) -> bool:
    """Was a broker named (a ``--bootstrap`` flag or parameter, or ``LAKEHOUSE_BOOTSTRAP``)?  Then the
    embedded one is not started: the named broker is someone else's (remote, secured, or the tests')."""
    env = os.environ if env is None else env
    return bootstrap is not None or ENV_PREFIX + "BOOTSTRAP" in env


if __name__ == "__main__":  # python -m lakehouse_utils.kafka.broker [data_dir] [port]
    kafka = LocalKafka(*(sys.argv[1:2] or ["data/kafka"]), *([int(sys.argv[2])] if len(sys.argv) > 2 else []))
    print(kafka.start().status())
