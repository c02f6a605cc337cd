"""The shared engine as a detached process: start (or reuse), status, stop, as the embedded broker is run.

``EngineServer.for_settings(settings).start()`` runs ``python -m lakehouse_utils.engine.serve`` (see there)
detached, under ``<data>/engine``: ``engine.log`` (its output), ``token`` (mode 0600), ``engine.json`` (pid and
ports, once it serves) and ``queries.json``.  A second ``start`` reuses the running engine; two kernels starting
it at once start one (a file lock).  ``stop`` asks it to stop its queries between batches and leave, then makes
sure: SIGTERM, then SIGKILL to its process group (its JVM too).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..procs import port_open, wait_exit

CONNECT_PORT, CONTROL_PORT = 15002, 15003  # Spark Connect's usual port, and ours beside it (if free)


class EngineError(RuntimeError):
    """The engine refused a request, or is not there."""


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port on 127.0.0.1")


class EngineServer:
    """The engine process of one data dir (its folder is ``<data>/engine``)."""

    def __init__(self, folder: str | Path, data_dir: str | Path) -> None:
        self.folder = Path(folder).absolute()
        self.data_dir = Path(data_dir).absolute()

    @classmethod
    def for_settings(cls, settings: Settings) -> EngineServer:
        return cls(settings.data_dir / "engine", settings.data_dir)

    # -- files -----------------------------------------------------------------------------------
    @property
    def log(self) -> Path:
        return self.folder / "engine.log"

    @property
    def token(self) -> str:
        """The engine's token (made once, readable by this user only)."""
        path = self.folder / "token"
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def info(self) -> dict[str, Any] | None:
        """Where the running engine listens (``engine.json``), or ``None``."""
        try:
            info = json.loads((self.folder / "engine.json").read_text())
        except (OSError, ValueError):
            return None
        return info if self._alive(info.get("pid")) else None

    @property
    def connect_url(self) -> str:
        """The Spark Connect URL for this user (with the token: keep it to yourself)."""
        info = self.info()
        if info is None:
            raise EngineError(f"no engine runs for {self.data_dir}: "
                              f"`lakehouse engine start --data-dir {self.data_dir}`")
        # "localhost", not 127.0.0.1: pyspark sends a token over plain gRPC only to a host called localhost
        return f"sc://localhost:{info['connect_port']}/;token={self.token}"

    def _alive(self, pid: Any) -> bool:
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, TypeError, ValueError):
            return False
        return "lakehouse_utils.engine.serve" in cmdline and str(self.folder) in cmdline

    def pid(self) -> int | None:
        info = self.info()
        return None if info is None else int(info["pid"])

    def is_running(self) -> bool:
        return self.pid() is not None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 240.0, say: Callable[[str], None] | None = None,
              env: dict[str, str] | None = None) -> EngineServer:
        """Start the engine, or reuse the running one; returns once it answers.  ``env``: more variables for a
        new engine (e.g. ``LAKEHOUSE_SPARK_MASTER``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two kernels starting it at once: the second one reuses it
            if self.is_running():
                self.request("GET", "/v1/status")
                return self
            self.token  # noqa: B018 (made before the engine reads it)
            (self.folder / "engine.json").unlink(missing_ok=True)
            port, connect_port = _free_port(CONTROL_PORT), _free_port(CONNECT_PORT)
            if port == connect_port:
                port = _free_port(0)
            argv = [sys.executable, "-m", "lakehouse_utils.engine.serve", "--dir", str(self.folder),
                    "--data-dir", str(self.data_dir), "--port", str(port), "--connect-port", str(connect_port)]
            env = {**os.environ, **(env or {}), "PYSPARK_PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
            with open(self.log, "ab") as out:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True)  # outlives the kernel that started it
            if say:
                say(f"[engine] starting the shared engine (Spark) for {self.data_dir} (pid {proc.pid}, log {self.log})")
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout:
                if proc.poll() is not None:
                    raise EngineError(f"the engine exited with code {proc.returncode}:\n{self.log_tail()}")
                if self.info() is not None and port_open(port):
                    if say:
                        say(f"[engine] ready in {time.monotonic() - t0:.1f}s")
                    return self
                time.sleep(0.2)
            self._kill_group(proc.pid)
            raise EngineError(f"the engine did not start within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 90.0) -> bool:
        """Stop its queries (between batches) and the engine; True if one was running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            self.request("POST", "/v1/shutdown", timeout=5)
        except EngineError:
            os.kill(pid, signal.SIGTERM)
        if not wait_exit(pid, timeout):
            self._kill_group(pid)
        return True

    def kill(self) -> None:
        """``kill -9`` of the engine's process group (its JVM too), as a crash: for the tests."""
        pid = self.pid()
        if pid is not None:
            self._kill_group(pid)

    def _kill_group(self, pid: int) -> None:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except OSError:
            return
        wait_exit(pid, 15)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no engine log)"

    # -- the control API -------------------------------------------------------------------------
    def request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0,
                missing_ok: bool = False) -> dict[str, Any] | None:
        info = self.info()
        if info is None:
            raise EngineError(f"the shared engine of {self.data_dir} is not running: `lakehouse engine start "
                              f"--data-dir {self.data_dir}` starts it (its queries resume from their checkpoints)")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{info['port']}{path}", data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            try:
                message = json.loads(exc.read()).get("error", str(exc))
            except ValueError:
                message = str(exc)
            raise EngineError(f"engine: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise EngineError(f"the shared engine of {self.data_dir} does not answer ({exc})") from None

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/v1/status") or {}


__all__ = ["CONNECT_PORT", "CONTROL_PORT", "EngineError", "EngineServer"]
