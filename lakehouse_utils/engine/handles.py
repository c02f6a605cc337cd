"""What a notebook (or the CLI) holds of the engine: ``open_engine(settings)`` -> a handle with ``spark``,
``start(layer, ...)``, ``find(layer, ...)`` and ``describe()``, the same for both kinds:

- :class:`SharedEngine` (the default, ``Settings.engine == "shared"``): the one engine every kernel uses
  (``lakehouse engine start``; opened here if it is not running).  ``spark`` is a Spark Connect session to it,
  and a query started here runs there: ``start`` returns a :class:`RemoteQuery`, which answers the questions a
  panel asks of a ``StreamingQuery`` (``isActive``, ``lastProgress``, ``status``, ``exception()``, ``stop()``,
  ``awaitTermination()``) from the engine.
- :class:`LocalEngine` (``LAKEHOUSE_ENGINE=local``): this process's own Spark and query host, as before.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from .server import EngineError, EngineServer


class RemoteQueryError(Exception):
    """The error a query of the shared engine failed with (its text as the engine tells it)."""


class RemoteQuery:
    """A query running in the shared engine, as a kernel sees it (refreshed at most every ``max_age`` s)."""

    stops_between_batches = True  # the engine stops it so (QueryHost.stop)

    def __init__(self, server: EngineServer, snap: dict[str, Any], max_age: float = 0.25) -> None:
        self._server, self._snap, self._max_age = server, snap, max_age
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def refresh(self, max_age: float | None = None) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at >= (self._max_age if max_age is None else max_age):
                try:
                    snap = self._server.request("POST", "/v1/find", {"key": self.key}, timeout=15, missing_ok=True)
                    if snap is None:
                        snap = {**self._snap, "active": False,
                                "error": "the engine no longer knows this query (it was restarted without it)"}
                except EngineError as exc:
                    snap = {**self._snap, "active": False, "error": str(exc)}
                self._snap, self._at = snap, time.monotonic()
            return self._snap

    @property
    def key(self) -> str:
        return self._snap["key"]

    @property
    def name(self) -> str:
        return self._snap.get("name") or self._snap["layer"]

    @property
    def id(self) -> str:
        return self._snap.get("id", "")

    @property
    def runId(self) -> str:  # noqa: N802 (StreamingQuery's name)
        return self._snap.get("run_id", "")

    @property
    def isActive(self) -> bool:  # noqa: N802
        return bool(self.refresh()["active"])

    @property
    def lastProgress(self) -> dict[str, Any] | None:  # noqa: N802
        return self.refresh()["progress"]

    @property
    def status(self) -> dict[str, Any]:
        return self.refresh()["status"] or {}

    @property
    def layer_stats(self) -> dict[str, Any]:
        return self.refresh()["layer_stats"] or {}

    @property
    def messages(self) -> list[str]:
        return list(self.refresh().get("messages") or [])

    def exception(self) -> RemoteQueryError | None:
        error = self.refresh()["error"]
        return None if error is None else RemoteQueryError(error)

    def stop(self) -> None:
        snap = self._server.request("POST", "/v1/stop", {"key": self.key}, missing_ok=True)
        with self._lock:
            if snap is not None:
                self._snap, self._at = snap, time.monotonic()

    def awaitTermination(self, timeout: float | None = None) -> bool:  # noqa: N802
        """Wait until the query ends (True) or ``timeout`` s pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh(max_age=0.0)["active"]:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.25)
        return True

    def __repr__(self) -> str:
        return f"RemoteQuery({self.name!r}, active={self._snap.get('active')}, engine={self._server.data_dir})"


_sessions: dict[str, Any] = {}  # one Spark Connect session per engine URL in this process


def _client() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


class SharedEngine:
    """The shared engine of ``settings.data_dir``, from a kernel (see the module doc)."""

    kind = "shared"

    def __init__(self, settings: Settings, server: EngineServer) -> None:
        self.settings, self.server = settings, server

    @classmethod
    def open(cls, settings: Settings, say: Callable[[str], None] | None = print) -> SharedEngine:
        """The running engine of ``settings.data_dir``, started first if there is none (with the Spark master and
        the UI setting of ``settings``; a running engine keeps its own)."""
        env = {"LAKEHOUSE_SPARK_MASTER": settings.spark_master, "LAKEHOUSE_SPARK_UI": str(settings.spark_ui).lower(),
               "LAKEHOUSE_BIND_HOST": settings.bind_host}
        return cls(settings, EngineServer.for_settings(settings).start(say=say, env=env))

    @property
    def spark(self) -> Any:
        """A Spark Connect session to the engine (this process's one)."""
        from pyspark.sql import SparkSession

        url = self.server.connect_url
        if url not in _sessions:
            _sessions[url] = SparkSession.builder.remote(url).getOrCreate()
        return _sessions[url]

    def start(self, layer: str, settings: Settings | None = None, trigger: str | None = None, *,
              checkpoint: str | Path | None = None, **options: Any) -> RemoteQuery:
        """Start ``layer`` in the engine (or get the running one): Bronze, Silver, Gold or the pipeline."""
        settings = settings or self.settings
        snap = self.server.request("POST", "/v1/start", {
            "layer": layer, "settings": settings.to_json(reveal=True), "trigger": trigger, "client": _client(),
            "checkpoint": None if checkpoint is None else str(Path(checkpoint).absolute()), "options": options})
        assert snap is not None
        return RemoteQuery(self.server, snap)

    def find(self, layer: str, settings: Settings | None = None, *,
             checkpoint: str | Path | None = None) -> RemoteQuery | None:
        """The engine's query of that layer and checkpoint (running or ended), or ``None``."""
        settings = settings or self.settings
        snap = self.server.request("POST", "/v1/find", {
            "layer": layer, "settings": settings.to_json(),
            "checkpoint": None if checkpoint is None else str(Path(checkpoint).absolute())}, missing_ok=True)
        return None if snap is None else RemoteQuery(self.server, snap)

    def queries(self) -> list[RemoteQuery]:
        return [RemoteQuery(self.server, q) for q in self.server.status().get("queries", [])]

    def describe(self) -> str:
        status = self.server.status()
        master = status["master"]
        note = "" if master == self.settings.spark_master else f" (not {self.settings.spark_master}: it keeps the " \
            "master it was started with; `lakehouse engine stop` first to change it)"
        return (f"shared engine (pid {status['pid']}, Spark {status['spark']}, {master}{note}) for "
                f"{status['data_dir']}: {len([q for q in status['queries'] if q['active']])} query(ies) running; "
                f"this kernel holds no JVM")


class LocalEngine:
    """This process's own Spark and layer queries (``LAKEHOUSE_ENGINE=local``)."""

    kind = "local"
    _host: Any = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def spark(self) -> Any:
        from .spark import get_spark

        return get_spark(self.settings)

    @property
    def host(self) -> Any:
        from .host import QueryHost

        if LocalEngine._host is None:
            LocalEngine._host = QueryHost(self.spark)
            LocalEngine._host.watch()
        return LocalEngine._host

    def start(self, layer: str, settings: Settings | None = None, trigger: str | None = None, *,
              checkpoint: str | Path | None = None, **options: Any) -> Any:
        return self.host.start(layer, settings or self.settings, trigger, client=_client(), checkpoint=checkpoint,
                               **options).query

    def find(self, layer: str, settings: Settings | None = None, *, checkpoint: str | Path | None = None) -> Any:
        from .host import key_of

        hosted = self.host.find(key_of(layer, settings or self.settings, checkpoint))
        return None if hosted is None else hosted.query

    def stop(self, layer: str, settings: Settings | None = None, *, checkpoint: str | Path | None = None) -> None:
        """Stop ``layer``'s query between batches; the watcher no longer restarts it."""
        from .host import key_of

        self.host.stop(key_of(layer, settings or self.settings, checkpoint))

    def describe(self) -> str:
        spark = self.spark
        return (f"this kernel's own Spark {spark.version} ({spark.sparkContext.master}, LAKEHOUSE_ENGINE=local): "
                "a JVM in this kernel")


def open_engine(settings: Settings, say: Callable[[str], None] | None = print) -> SharedEngine | LocalEngine:
    """The engine ``settings.engine`` names: ``shared`` (started if need be) or ``local`` (this process's)."""
    if settings.engine == "local":
        return LocalEngine(settings)
    if settings.engine != "shared":
        raise ValueError(f"LAKEHOUSE_ENGINE={settings.engine!r}: expected 'shared' (the default) or 'local'")
    return SharedEngine.open(settings, say=say)


__all__ = ["LocalEngine", "RemoteQuery", "RemoteQueryError", "SharedEngine", "open_engine"]
