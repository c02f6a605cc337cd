"""Whole-path runs for the bench: the pipeline as a user starts it, in child processes, watched from outside.

- :func:`live_run`: ``lakehouse demo`` (the three queries in one process) or the notebook flow (Bronze,
  Silver and Gold each in its own process, as notebooks 02-04 in separate kernels, plus ``lakehouse ingest``),
  fed at a steady rate; returns per-trade latency (:mod:`.latency`), the peak RSS of every process
  involved (broker JVM, Spark JVMs, Pythons), and how long each alert Gold raised took from its bar's final
  commit to the alerts topic (:mod:`.alerts`; the run's alerts go to a topic of its own).
- :func:`first_bar_run`: ``lakehouse demo`` launched cold (its own broker, a new data dir) until the first
  Gold bar is visible to a reader.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..procs import rss_mb
from .alerts import alert_latencies, stamped_alerts_topic, topic_alerts
from .latency import GoldPoller, kafka_arrivals, latencies, stamped_topic


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return kids


def tree_pids(roots: list[int]) -> set[int]:
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(_children(pid))
    return seen


def _label(pid: int) -> str:
    """A short name for a process: ``java <main class>`` or ``python <module or script>``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return str(pid)
    exe = Path(argv[0]).name
    if exe == "java":
        main = next((a for a in argv[1:] if not a.startswith("-") and "." in a and "/" not in a), "?")
        return f"java {main.rsplit('.', 1)[-1]}"
    rest = [a for a in argv[1:] if a and not a.startswith("-")]
    mod = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else (Path(rest[0]).name if rest else "")
    return f"{exe} {mod}".strip()


class RssSampler:
    """Peak summed RSS of the process trees under ``roots`` (sampled every ``interval`` s), and each process's
    share at that peak (``breakdown``: label -> MB), which says what stands in the way of a memory target;
    ``highest``: each label's own highest RSS over the run (a part that grew, or peaked at another time).
    ``names`` labels a root's tree (e.g. a kernel by its notebook: ``kernel 03``; its children ``kernel 03 /
    <label>``), where the command line alone would not tell processes apart."""

    def __init__(self, roots: list[int], interval: float = 1.0, names: dict[int, str] | None = None) -> None:
        self.roots, self.interval, self.peak_mb = list(roots), interval, 0.0
        self.names: dict[int, str] = dict(names or {})
        self.breakdown: dict[str, float] = {}
        self.highest: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _labels(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for root in list(self.roots):
            for pid in tree_pids([root]):
                if pid in out:
                    continue
                name = self.names.get(root)
                out[pid] = (name if pid == root else f"{name} / {_label(pid)}") if name else _label(pid)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            labels = self._labels()
            each = {pid: rss_mb([pid]) for pid in labels}
            shares: dict[str, float] = {}
            for pid, mb in each.items():
                if mb:
                    shares[labels[pid]] = round(shares.get(labels[pid], 0.0) + mb, 1)
            for label, mb in shares.items():
                self.highest[label] = max(self.highest.get(label, 0.0), mb)
            total = sum(each.values())
            if total > self.peak_mb:
                self.peak_mb = total
                self.breakdown = dict(sorted(shares.items(), key=lambda kv: -kv[1]))
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.highest = dict(sorted(self.highest.items(), key=lambda kv: -kv[1]))
        return self.peak_mb


def _lakehouse(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "lakehouse_utils.ops.cli", *args], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)


def _interrupt(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """Ctrl-C, as a user would; kill if it does not end."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


@dataclass
class LiveRun:
    flow: str
    feed: str
    wall_s: float
    peak_rss_mb: float
    latency: dict[str, Any]
    first_bar_s: float | None = None
    latency_with_cold_start: dict[str, Any] = field(default_factory=dict)  # every trade, the first ones too
    alerts: dict[str, Any] = field(default_factory=dict)  # bar final -> alert in the topic (alert_latencies)
    logs: list[str] = field(default_factory=list)


def live_run(root: Path, bootstrap: str, broker_pid: int | None, *, flow: str = "demo", source: str = "replay",
             venues: list[str] | None = None, speed: str = "20", pairs: list[str] | None = None,
             feed_seconds: float = 190.0,
             tail_seconds: float = 20.0, warmup_s: float = 0.0, trigger: str | None = None,
             extra_env: dict[str, str] | None = None, n_trades: int | None = None) -> LiveRun:
    """Feed ``source`` (or each of ``venues``' replays at once) for ``feed_seconds`` into a new topic, run the
    pipeline as ``flow`` does, measure."""
    name = f"{flow}-{'-'.join(venues) if venues else source}-{speed}".replace("/", "").replace(".", "_")
    data = root / name
    shutil.rmtree(data, ignore_errors=True)
    topic = f"bench.{name}"
    stamped_topic(bootstrap, topic)
    common = ["--data-dir", str(data), "--bootstrap", bootstrap, "--topic", topic]
    feed = (["--venues", ",".join(venues)] if venues else ["--source", source]) + \
        ["--speed", speed, *sum((["--pair", p] for p in pairs or []), [])]
    env = dict(extra_env or {})
    alerts_topic = env.setdefault("LAKEHOUSE_ALERTS_TOPIC", f"{topic}.alerts")
    stamped_alerts_topic(bootstrap, alerts_topic)
    if n_trades:
        env["LAKEHOUSE_BENCH_N_TRADES"] = str(n_trades)
    logs = root / "logs"
    poller = GoldPoller(data / "gold", logs / f"{name}.polls.jsonl")
    t0 = time.time()
    procs: list[subprocess.Popen] = []
    roots = [poller.proc.pid] + ([broker_pid] if broker_pid else [])
    if flow == "demo":
        tr = ["--trigger", trigger] if trigger else []
        procs.append(_lakehouse("demo", *common, *feed, *tr, "--duration", str(feed_seconds + tail_seconds),
                                log=logs / f"{name}.demo.log", env=env))
        sampler = RssSampler(roots + [procs[0].pid])
        procs[0].wait(feed_seconds + tail_seconds + 300)
    else:  # the notebook flow: each layer in its own process (kernel), started as 02, 03, 04 start them
        tr = ["--trigger", trigger] if trigger else []
        for layer in ("bronze", "silver", "gold"):
            procs.append(_lakehouse(layer, *common, *tr, log=logs / f"{name}.{layer}.log", env=env))
        sampler = RssSampler(roots + [p.pid for p in procs])
        # a user runs 02-04, sees each panel running, then presses 01's Start: feed once every query has started
        from ..layers.streaming import LAYER_CHECKPOINTS

        started = [data / "checkpoints" / name / "metadata" for name in LAYER_CHECKPOINTS]
        deadline = time.monotonic() + 180
        while not all(m.exists() for m in started) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        ingest = _lakehouse("ingest", *common, *feed, "--duration", str(feed_seconds), log=logs / f"{name}.ingest.log",
                            env=env)
        ingest.wait(feed_seconds + 120)
        time.sleep(tail_seconds)
        for p in procs:
            _interrupt(p)
    peak = sampler.stop()
    polls = poller.stop()
    wall = time.time() - t0
    arrivals = kafka_arrivals(bootstrap, topic)
    since = (arrivals["append_s"].min() + warmup_s) if warmup_s and len(arrivals) else None
    lat = latencies(arrivals, polls, since=since)
    return LiveRun(flow, f"{'+'.join(venues) if venues else source} x{speed}", wall, peak, lat.summary(),
                   latency_with_cold_start=latencies(arrivals, polls).summary(),
                   alerts=alert_latencies(data / "gold", topic_alerts(bootstrap, alerts_topic)),
                   logs=[str(p) for p in sorted(logs.glob(f"{name}.*"))])


def first_bar_run(root: Path, port: int, timeout: float = 180.0) -> float | None:
    """``lakehouse demo`` launched cold (own broker on ``port``, a new data dir) -> first Gold bar (s)."""
    data = root / "first-bar"
    shutil.rmtree(data, ignore_errors=True)
    poller = GoldPoller(data / "gold", root / "logs" / "first-bar.polls.jsonl", interval=0.1)
    t0 = time.time()
    proc = _lakehouse("demo", "--data-dir", str(data), "--broker-port", str(port), "--speed", "20",
                      log=root / "logs" / "first-bar.demo.log")
    first = None
    try:
        while time.time() - t0 < timeout and proc.poll() is None:
            first = poller.first_bar_time()
            if first is not None:
                break
            time.sleep(0.1)
    finally:
        _interrupt(proc)
        poller.stop()
        from ..kafka.broker import LocalKafka

        LocalKafka(data / "kafka", port).stop()
    return None if first is None else first - t0
