"""The shared engine's process: one Spark (one JVM) for every kernel, and a small control API.

``python -m lakehouse_utils.engine.serve --dir <data>/engine --data-dir <data> --port P --connect-port C`` (what
``lakehouse engine start`` runs, detached) starts:

- the process's Spark session, which also serves **Spark Connect** on 127.0.0.1:C with a token: a kernel's
  ``spark`` (for its own queries, SQL and the verification cells) is a Connect session to it, no JVM of its own;
- a :class:`~lakehouse_utils.engine.host.QueryHost`: the layer queries run here, in this driver, exactly as in
  ``lakehouse demo`` (their ``foreachBatch`` code, Gold's state and its idle finalizer in this one process), and
  any kernel finds, watches and stops them by name: a kernel's restart or an idle session never ends a query;
- the control API on 127.0.0.1:P (JSON over HTTP, ``Authorization: Bearer <token>``):
  ``GET /v1/status``, ``POST /v1/start``, ``POST /v1/find``, ``POST /v1/stop``, ``POST /v1/shutdown``.

The token is ``<dir>/token`` (mode 0600, made once), ``<dir>/engine.json`` says where the engine listens (written
once it serves), and ``<dir>/queries.json`` lists the queries to resume if the process is killed and started again.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..config import Settings
from ..procs import rss_mb
from .host import Hosted, QueryHost, key_of, warm_up
from .spark import get_spark

log = logging.getLogger(__name__)


def snapshot(hosted: Hosted) -> dict[str, Any]:
    """What a client sees of a hosted query (JSON): its progress, the layer's own numbers, its error if it died."""
    query = hosted.query
    active = bool(query is not None and query.isActive)
    error = None if active or query is None else query.exception()
    stats = {k: v for k, v in (getattr(query, "layer_stats", None) or {}).items() if k != "_counted"}
    return {
        "key": hosted.key, "layer": hosted.layer, "name": getattr(query, "name", hosted.layer),
        "id": str(getattr(query, "id", "")), "run_id": str(getattr(query, "runId", "")), "active": active,
        "progress": query.lastProgress if query is not None else None,
        "status": query.status if query is not None else None,
        "layer_stats": json.loads(json.dumps(stats, default=str)), "error": None if error is None else str(error),
        "trigger": hosted.trigger, "client": hosted.client, "started_at": hosted.started_at,
        "restarts": hosted.restarts, "messages": hosted.messages[-10:], "data_dir": str(hosted.settings.data_dir),
        "topic": hosted.settings.topic, "checkpoint": str(hosted.checkpoint),
    }


class Engine:
    """The engine's state: the Spark session, the query host, and what ``/v1/status`` tells."""

    def __init__(self, folder: Path, settings: Settings, connect_port: int, token: str) -> None:
        self.folder, self.settings, self.connect_port, self.token = folder, settings, connect_port, token
        self.started_at = time.time()
        self.spark = get_spark(settings, app_name="lakehouse-engine", connect=(connect_port, token))
        self.host = QueryHost(self.spark, folder / "queries.json", say=lambda line: print(line, flush=True))
        self.stopping = threading.Event()

    def status(self) -> dict[str, Any]:
        sc = self.spark.sparkContext
        jvm_pid = _jvm_pid(self.spark)
        return {
            "pid": os.getpid(), "jvm_pid": jvm_pid, "started_at": self.started_at, "spark": self.spark.version,
            "master": sc.master, "ui": sc.uiWebUrl, "connect_port": self.connect_port,
            "data_dir": str(self.settings.data_dir),
            "rss_mb": round(rss_mb([os.getpid(), *([jvm_pid] if jvm_pid else [])]), 1),
            "sessions": _connect_sessions(self.spark),
            "queries": [snapshot(h) for h in self.host.hosted.values()],
        }

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        settings = Settings.from_json(body["settings"])
        hosted = self.host.start(body["layer"], settings, body.get("trigger"), client=body.get("client", ""),
                                 checkpoint=body.get("checkpoint"), **(body.get("options") or {}))
        return snapshot(hosted)

    def find(self, body: dict[str, Any]) -> dict[str, Any] | None:
        key = body.get("key") or key_of(body["layer"], Settings.from_json(body["settings"]), body.get("checkpoint"))
        hosted = self.host.find(key)
        return None if hosted is None else snapshot(hosted)

    def stop(self, body: dict[str, Any]) -> dict[str, Any] | None:
        hosted = self.host.stop(body["key"])
        return None if hosted is None else snapshot(hosted)


def _jvm_pid(spark: Any) -> int | None:
    try:
        return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:
        return None


def _connect_sessions(spark: Any) -> list[dict[str, Any]]:
    """The Spark Connect sessions the engine holds (the kernels' ``spark``), as far as the JVM tells."""
    try:
        service = getattr(spark.sparkContext._jvm.org.apache.spark.sql.connect.service, "SparkConnectService$")
        manager = getattr(service, "MODULE$").sessionManager()  # the Scala object's instance
        infos = manager.listActiveSessions()
        out = []
        it = infos.iterator()
        while it.hasNext():
            info = it.next()
            out.append({"session_id": str(info.sessionId()), "user_id": str(info.userId()),
                        "idle_s": round((time.time() * 1000 - int(info.lastAccessTimeMs())) / 1000, 1)})
        return out
    except Exception:
        return []


def _handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {engine.token}".encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "lakehouse-engine"

        def log_message(self, format: str, *args: Any) -> None:  # no access log lines (the panels poll)
            pass

        def _reply(self, code: int, body: Any) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            given = (self.headers.get("Authorization") or "").encode()
            if hmac.compare_digest(given, expected):
                return True
            self._reply(401, {"error": "the engine's token is required (Authorization: Bearer <token>)"})
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if not self._authorized():
                return
            if self.path == "/v1/status":
                self._reply(200, engine.status())
            else:
                self._reply(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/v1/start":
                    self._reply(200, engine.start(body))
                elif self.path in ("/v1/find", "/v1/stop"):
                    found = engine.find(body) if self.path == "/v1/find" else engine.stop(body)
                    self._reply(200 if found is not None else 404, found or {"error": "no such query"})
                elif self.path == "/v1/shutdown":
                    self._reply(200, {"stopping": True})
                    engine.stopping.set()
                else:
                    self._reply(404, {"error": f"no such path {self.path}"})
            except Exception as exc:  # the client shows it: the engine goes on
                log.exception("request %s failed", self.path)
                self._reply(400, {"error": f"{type(exc).__name__}: {exc}"})

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the shared engine (started by `lakehouse engine start`)")
    ap.add_argument("--dir", required=True, help="the engine's folder (token, engine.json, queries.json)")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--port", type=int, required=True, help="the control API's port")
    ap.add_argument("--connect-port", type=int, required=True, help="Spark Connect's port")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # a line per callback from the JVM: noise in engine.log
    folder = Path(args.dir)
    token = (folder / "token").read_text().strip()
    settings = Settings.from_env(data_dir=args.data_dir)
    t0 = time.monotonic()
    engine = Engine(folder, settings, args.connect_port, token)
    server = ThreadingHTTPServer((settings.bind_host if settings.bind_host != "0.0.0.0" else "127.0.0.1",
                                  args.port), _handler(engine))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="engine-api", daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: engine.stopping.set())
    resumed = engine.host.resume()
    engine.host.watch()
    info = {"pid": os.getpid(), "port": args.port, "connect_port": args.connect_port, "started_at": engine.started_at,
            "spark": engine.spark.version, "data_dir": str(Path(args.data_dir).absolute())}
    tmp = folder / f"engine.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, folder / "engine.json")
    print(f"[engine] ready in {time.monotonic() - t0:.1f}s: control 127.0.0.1:{args.port}, Spark Connect "
          f"sc://localhost:{args.connect_port} (token in {folder / 'token'}), resumed {len(resumed)} query(ies)",
          flush=True)
    # while the user opens the notebooks: a micro-batch's code path once, so the first trade meets a warm JVM
    threading.Thread(target=lambda: print(f"[engine] warmed up in {warm_up(engine.spark):.1f}s", flush=True),
                     name="engine-warm-up", daemon=True).start()
    engine.stopping.wait()
    print("[engine] stopping: the queries stop between batches (their checkpoints keep their place)", flush=True)
    engine.host.close(forget=True)
    server.shutdown()
    (folder / "engine.json").unlink(missing_ok=True)
    engine.spark.stop()
    print("[engine] stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
