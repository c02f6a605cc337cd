"""``make bench``: speed and memory numbers against their targets (real broker, real Spark, real sockets).

Prints one line per measurement and writes ``<data-dir>/bench.json``; exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .broker import LocalKafka, end_offsets
from .config import Settings


@dataclass
class Measurement:
    name: str
    value: float
    unit: str
    target: float
    higher_is_better: bool

    @property
    def ok(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        mark = "ok  " if self.ok else "MISS"
        return f"{mark} {self.name:<42} {self.value:>10.2f} {self.unit:<10} (target {op} {self.target})"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_broker_start(root: Path) -> tuple[LocalKafka, Measurement]:
    kafka = LocalKafka(root / "kafka", _free_port())
    t0 = time.monotonic()
    kafka.start()
    return kafka, Measurement("broker cold start (format + ready)", time.monotonic() - t0, "s", 30, False)


def bench_producer(settings: Settings) -> Measurement:
    from .producer import ProducerThread, TradeProducer, make_source

    source, cleanup = make_source("replay", ["BTC/USD"], speed="max")
    thread = ProducerThread(source, TradeProducer.from_settings(settings), cleanup=cleanup)
    t0 = time.monotonic()
    thread.start()
    thread.join()
    status = thread.stop()
    elapsed = time.monotonic() - t0
    assert status.delivered == 2672, status.line()
    return Measurement("producer: replay socket -> Kafka (real hour)", status.delivered / elapsed, "trades/s",
                       1000, True)


def bench_producer_memory(n: int = 200_000) -> Measurement:
    """Memory stays bounded while the broker is down: a tiny queue, a closed port, many trades offered."""
    import threading

    from .producer import TradeProducer
    from .synthetic import SyntheticSource

    before = _rss_mb()
    stop = threading.Event()
    producer = TradeProducer(f"127.0.0.1:{_free_port()}", "bench", queue_max_messages=10_000,
                             queue_max_kbytes=4096, ensure_topics=False, stop=stop)
    source = SyntheticSource(["BTC/USD"], rate=None, n_trades=n)
    timer = threading.Timer(5.0, stop.set)  # the producer blocks (backpressure) once the queue is full
    timer.start()
    peak = before
    for item in source.stream(stop):
        if stop.is_set():
            break
        producer.send(item, "synthetic", stop=stop)
        peak = max(peak, _rss_mb())
    timer.cancel()
    producer.close(timeout=2)
    return Measurement("producer RSS growth, broker down", peak - before, "MB", 150, False)


def bench_spark_start(settings: Settings) -> Measurement:
    from .spark import get_spark

    t0 = time.monotonic()
    get_spark(settings)
    return Measurement("spark session start", time.monotonic() - t0, "s", 30, False)


def bench_demo(settings: Settings) -> list[Measurement]:
    from .demo import run_demo

    result = run_demo(settings, start_broker=False, until_drained=True, write_report=False)
    assert result.counts.silver == 2671, result.counts
    return [Measurement("demo: real hour until drained (wall)", result.wall_seconds, "s", 180, False),
            Measurement("demo: driver RSS after the hour", _rss_mb(), "MB", 1500, False)]


def bench_chart_refresh() -> list[Measurement]:
    from . import bench_charts

    out = []
    for commits, target in ((20, 1.0), (200, 2.0)):
        seconds = bench_charts.bench(500, commits, repeats=5)["refresh_once"]
        out.append(Measurement(f"live chart refresh, 500 bars in {commits} commits", seconds, "s", target, False))
    return out


def run(root: Path) -> list[Measurement]:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    kafka, m = bench_broker_start(root)
    print(m.line(), flush=True)
    results = [m]
    settings = Settings(data_dir=root / "data", bootstrap=kafka.bootstrap, topic="bench.trades", spark_ui=False)
    steps: list[Callable[[], Measurement | list[Measurement]]] = [
        lambda: bench_producer(settings.with_(topic="bench.producer")),
        bench_producer_memory,
        lambda: bench_spark_start(settings),
        lambda: bench_demo(settings),
        bench_chart_refresh,
    ]
    try:
        for step in steps:
            out = step()
            for item in out if isinstance(out, list) else [out]:
                print(item.line(), flush=True)
                results.append(item)
        offsets = end_offsets(kafka.bootstrap, "bench.producer")
        assert offsets == {0: 2672}, offsets
    finally:
        kafka.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="data/bench")
    args = ap.parse_args(argv)
    root = Path(args.data_dir)
    results = run(root)
    (root / "bench.json").write_text(json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=2))
    missed = [r for r in results if not r.ok]
    print(f"{len(results) - len(missed)} of {len(results)} targets met; details in {root / 'bench.json'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
