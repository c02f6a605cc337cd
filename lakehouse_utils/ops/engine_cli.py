"""``lakehouse engine start|status|stop``: the shared engine every notebook kernel uses (``engine.server``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("engine", help="the shared Spark engine every notebook kernel uses: start | status | stop")
    p.add_argument("action", choices=["start", "status", "stop"])
    p.add_argument("--data-dir", dest="data_dir", help="data root, as for every command: the engine lives in "
                   "<data>/engine (default ./data)")


def _age(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def status_lines(status: dict[str, Any]) -> list[str]:
    """``lakehouse engine status``: the engine, then a line per Connect session and per query."""
    now = time.time()
    lines = [f"engine running (pid {status['pid']}, JVM {status.get('jvm_pid')}) for "
             f"{_age(now - status['started_at'])}: Spark {status['spark']} {status['master']}, "
             f"{status['rss_mb']:,.0f} MB; data {status['data_dir']}",
             f"  Spark Connect: sc://localhost:{status['connect_port']} (token in <data>/engine/token)"
             + (f"; UI {status['ui']}" if status.get("ui") else "")]
    sessions = status.get("sessions") or []
    lines.append(f"  sessions: {len(sessions)}" + "".join(
        f"\n    {s['session_id']} (user {s['user_id']}, idle {s['idle_s']:.0f}s)" for s in sessions))
    queries = status.get("queries") or []
    lines.append(f"  queries: {sum(q['active'] for q in queries)} running, {len(queries)} known")
    for q in queries:
        progress = q.get("progress") or {}
        state = "running" if q["active"] else ("FAILED: " + q["error"].splitlines()[0][:160] if q.get("error")
                                                else "stopped")
        lines.append(f"    {q['layer']:<8} {state}; batch {progress.get('batchId', '-')}, trigger {q['trigger']}, "
                     f"topic {q['topic']}, started {_age(now - q['started_at'])} ago by {q['client'] or '-'}; "
                     f"checkpoint {q['checkpoint']}")
        lines.extend(f"      {m}" for m in q.get("messages") or [])
    return lines


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..engine.server import EngineError, EngineServer

    server = EngineServer.for_settings(settings)
    if args.action == "start":
        try:
            server.start(say=lambda line: print(line, file=sys.stderr, flush=True))
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("\n".join(status_lines(server.status())))
        return 0
    if args.action == "stop":
        print("stopped" if server.stop() else "not running", server.data_dir)
        return 0
    if not server.is_running():
        print(f"engine not running for {server.data_dir} (`lakehouse engine start`)")
        return 3
    print("\n".join(status_lines(server.status())))
    return 0


__all__ = ["add_parser", "run", "status_lines"]
