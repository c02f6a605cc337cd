"""Processes and ports on this machine: wait for a process to exit, probe a TCP port, find free ports, RSS.

The embedded broker (``kafka.broker``) and the standalone Spark cluster (``engine.cluster``) run detached JVMs
tracked by pid files; both wait for them with :func:`wait_exit` and probe their ports with :func:`reachable`.
"""

from __future__ import annotations

import os
import socket
import time


def reachable(bootstrap: str, timeout: float = 0.5) -> bool:
    """Does the first bootstrap server accept a TCP connection? (no client log spam when it is down)"""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def port_open(port: int) -> bool:
    return reachable(f"127.0.0.1:{port}")


def free_port_pair() -> int:
    """A port p with p and p + 1 free on 127.0.0.1 (a broker and its controller)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free pair of ports on 127.0.0.1")


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for process ``pid`` to end (reaping it if it is our child); True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap if it is our child
            if done == pid:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.1)
    return False


__all__ = ["free_port_pair", "port_open", "reachable", "wait_exit"]


def rss_mb(pids: list[int] | set[int]) -> float:
    """The resident memory of ``pids`` together (MB, from ``/proc``); a pid gone meanwhile counts 0."""
    from pathlib import Path

    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024
