"""The bench: every figure of the Performance table, measured in one run, written to ``<dir>/latest.json``.

Each measurement is a function ``(ctx) -> {field: value}``; targets live here, not in timed tests (the
machine is shared and noisy: compare figures of the same run).  ``--only`` runs some of them, ``--quick``
shortens the feeds and sizes (``tests/test_bench.py`` runs every measurement that way, in this order); a quick
run checks that every field is produced, not that targets are met.  Each measurement gets a data dir of its own,
new for it (``<dir>/runs/<name>``); they share one broker, each on topics of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Settings
from ..kafka.broker import LocalKafka
from ..procs import free_port_pair

# field -> (target, higher is better, unit)
TARGETS: dict[str, tuple[float | None, bool, str]] = {
    "e2e_latency_p50_s": (3.0, False, "s"),
    "e2e_latency_p95_s": (6.0, False, "s"),
    "e2e_latency_p95_s_500tps": (6.0, False, "s"),
    "e2e_latency_p50_s_3venues": (3.0, False, "s"),  # Kraken, Coinbase and Binance replays at once, ~40 trades/s
    "e2e_latency_p95_s_3venues": (6.0, False, "s"),
    "alert_latency_s": (2.0, False, "s"),  # p95: a bar's final commit in Gold -> its alert on the alerts topic
    "notebook_flow_latency_p50_s": (3.0, False, "s"),
    "notebook_flow_latency_p95_s": (6.0, False, "s"),
    "notebook_flow_peak_rss_mb": (3000.0, False, "MB"),
    "trade_to_pixel_p50_s": (3.0, False, "s"),  # JupyterLab in Chromium: the trade drawn on 05's chart
    "trade_to_pixel_p95_s": (6.0, False, "s"),
    "warm_first_candle_s": (5.0, False, "s"),  # engine and broker running: Start in 01 -> first candle on 05
    "first_bar_s": (20.0, False, "s"),
    "catchup_trades_per_s": (50_000.0, True, "trades/s"),
    "catchup_layers_trades_per_s": (None, True, "trades/s"),
    "catchup_layers_trades_per_s_1p": (None, True, "trades/s"),  # the same catch-up, a 1-partition topic
    "catchup_layers_trades_per_s_3p": (None, True, "trades/s"),  # ... and a 3-partition one (same trades)
    "cluster_catchup_trades_per_s_1w": (None, True, "trades/s"),  # 3 partitions, on a cluster of 1 worker
    "cluster_catchup_trades_per_s_2w": (None, True, "trades/s"),  # ... and of 2 workers (1 core, 1 GB each)
    "check_catchup_s": (60.0, False, "s"),  # lakehouse check on the (layer by layer) caught-up tables
    "check_peak_rss_mb_2m": (1000.0, False, "MB"),  # lakehouse check (its process) on 2M caught-up trades
    "check_s_2m": (None, False, "s"),
    "producer_trades_per_s": (20_000.0, True, "trades/s"),
    "producer_synthetic_trades_per_s": (100_000.0, True, "trades/s"),
    "peak_rss_mb": (3000.0, False, "MB"),
    "chart_refresh_ms_500_bars": (200.0, False, "ms"),
    "seed_style_e2e_latency_p50_s": (None, False, "s"),
    "e2e_latency_p50_s_realtime": (3.0, False, "s"),
}


# What a --quick run cannot measure: the seed's way emits a bar only once its 2-minute watermark has passed it,
# after the quick real-time feed (60 s) has ended.
QUICK_WITHOUT = {"seed_style_e2e_latency_p50_s"}

# Live latencies leave out the trades appended in the first seconds of a run: they wait for the cold start
# (JVM, first Spark job), which first_bar_s measures.  Each run's details keep the figures with them too.
WARMUP_S = 15.0
ALERT_MOVE_PCT = 0.05  # the e2e run's move threshold (%): alerts on most final bars of the hour (m_e2e)


@dataclass
class Context:
    root: Path
    kafka: LocalKafka
    quick: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap


def m_e2e(ctx: Context) -> dict[str, Any]:
    """The demo on the real hour at x20; its Gold raises alerts with a move threshold of 0.05 % (most final 1m bars
    raise one, so a short feed measures ``alert_latency_s`` too: how long an alert takes does not depend on its
    threshold)."""
    from .runs import live_run

    run = live_run(ctx.root, ctx.bootstrap, ctx.kafka.pid(), flow="demo", speed="20",
                   feed_seconds=25 if ctx.quick else 190, tail_seconds=10 if ctx.quick else 20, warmup_s=WARMUP_S,
                   extra_env={"LAKEHOUSE_ALERT_MOVE_PCT": str(ALERT_MOVE_PCT)})
    ctx.details["e2e"] = asdict(run)
    return {"e2e_latency_p50_s": run.latency["p50_s"], "e2e_latency_p95_s": run.latency["p95_s"],
            "peak_rss_mb": run.peak_rss_mb, "alert_latency_s": run.alerts["p95_s"]}


def m_e2e_500(ctx: Context) -> dict[str, Any]:
    from .runs import live_run

    run = live_run(ctx.root, ctx.bootstrap, ctx.kafka.pid(), flow="demo", source="synthetic", speed="10",
                   pairs=["BTC/USD", "ETH/USD", "SOL/USD"], feed_seconds=25 if ctx.quick else 90, warmup_s=WARMUP_S)
    ctx.details["e2e_500tps"] = asdict(run)
    return {"e2e_latency_p95_s_500tps": run.latency["p95_s"]}


def m_venues(ctx: Context) -> dict[str, Any]:
    """``lakehouse demo --venues kraken,coinbase,binance``: the real hour (2,672 trades) through three replay
    servers, each in its venue's wire format, at x18 (about 13 trades/s each, 40 together): trade -> its venue's
    bar in Gold."""
    from .runs import live_run

    feed = 25 if ctx.quick else 190
    run = live_run(ctx.root, ctx.bootstrap, ctx.kafka.pid(), flow="demo", venues=["kraken", "coinbase", "binance"],
                   speed="18", feed_seconds=feed, tail_seconds=10 if ctx.quick else 20, warmup_s=WARMUP_S)
    ctx.details["venues"] = {**asdict(run), "trades_per_s": run.latency_with_cold_start["trades"] / feed}
    return {"e2e_latency_p50_s_3venues": run.latency["p50_s"], "e2e_latency_p95_s_3venues": run.latency["p95_s"]}


def m_notebook_flow(ctx: Context) -> dict[str, Any]:
    """Notebooks 01-04 in four real kernels, as stored (Run All, then Start): on the shared engine, and with
    ``LAKEHOUSE_BENCH_NOTEBOOK_ENGINES=shared,local`` also with a Spark per kernel (details only)."""
    from .kernels import notebook_flow_run

    engines = os.environ.get("LAKEHOUSE_BENCH_NOTEBOOK_ENGINES", "shared").split(",")
    runs = {e: notebook_flow_run(ctx.root, ctx.bootstrap, ctx.kafka.pid(), engine=e, speed="20",
                                 feed_seconds=30 if ctx.quick else 190, warmup_s=WARMUP_S) for e in engines}
    ctx.details["notebook_flow"] = {e: asdict(r) for e, r in runs.items()}
    run = runs[engines[0]]
    return {"notebook_flow_latency_p50_s": run.latency["p50_s"], "notebook_flow_latency_p95_s": run.latency["p95_s"],
            "notebook_flow_peak_rss_mb": run.peak_rss_mb}


def m_pixels(ctx: Context) -> dict[str, Any]:
    """JupyterLab in Chromium running 01-05 as a user does (Run All, Start in 02-04, then 01): trade -> the candle
    on 05's chart that counts it (:mod:`.pixels`)."""
    from .pixels import pixel_run

    run = pixel_run(ctx.root, ctx.bootstrap, speed="20", feed_seconds=45 if ctx.quick else 150, warmup_s=WARMUP_S)
    ctx.details["pixels"] = asdict(run)
    return {"trade_to_pixel_p50_s": run.latency["p50_s"], "trade_to_pixel_p95_s": run.latency["p95_s"],
            "warm_first_candle_s": run.warm_first_candle_s}


def m_first_bar(ctx: Context) -> dict[str, Any]:
    from .runs import first_bar_run

    return {"first_bar_s": first_bar_run(ctx.root, free_port_pair())}


def _catchup(ctx: Context, flow: str, n: int, partitions: int = 1, master: str | None = None,
             name: str | None = None, checked: bool = True) -> dict[str, Any]:
    """In its own process (its own Spark): N synthetic trades in Kafka -> Bronze -> Silver -> Gold."""
    name = name or f"catchup-{flow}" + (f"-{partitions}p" if partitions != 1 else "")
    proc = subprocess.run([sys.executable, "-m", "lakehouse_utils.bench.catchup", "--data-dir",
                           str(ctx.root / name), "--bootstrap", ctx.bootstrap, "--n", str(n),
                           "--flow", flow, "--partitions", str(partitions), *(["--master", master] if master else []),
                           *([] if checked else ["--no-check"])],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"catch-up ({flow}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def m_catchup(ctx: Context) -> dict[str, Any]:
    """The one-query pipeline (as the demo catches up), then the layers one after another (as notebooks do)."""
    n = 10_000 if ctx.quick else 1_000_000
    together = _catchup(ctx, "pipeline", n)
    layers = _catchup(ctx, "layers", n)
    ctx.details["catchup"] = {"pipeline": together | {"order": "together, one query (available-now)"},
                              "layers": layers | {"order": "one after another (available-now each)"}}
    return {"catchup_trades_per_s": together["catchup_trades_per_s"],
            "catchup_layers_trades_per_s": layers["catchup_trades_per_s"], "check_catchup_s": layers["check_s"]}


def m_check(ctx: Context) -> dict[str, Any]:
    """``lakehouse check`` on 2M trades the one-query pipeline caught up: its peak RSS (its own process, the
    kernel's count of its pages at their highest) and its time. The tables must pass."""
    n = 20_000 if ctx.quick else 2_000_000
    caught = _catchup(ctx, "pipeline", n, name="check-2m", checked=False)
    with subprocess.Popen([sys.executable, "-m", "lakehouse_utils.ops.cli", "check", "--json", "--data-dir",
                           str(ctx.root / "check-2m"), "--bootstrap", ctx.bootstrap],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    report = json.loads(out)
    if proc.returncode != 0 or not report["ok"]:
        raise RuntimeError(f"lakehouse check on the caught-up trades failed: {out[-3000:]}")
    peak = usage.ru_maxrss / 1024  # KiB -> MiB
    facts = report["facts"]
    ctx.details["check"] = {"trades": caught["trades"], "seconds": report["seconds"], "peak_rss_mb": peak,
                            "bronze_rows": facts["bronze_rows"], "silver_rows": facts["silver_rows"]}
    return {"check_peak_rss_mb_2m": peak, "check_s_2m": report["seconds"]}


def m_partitions(ctx: Context) -> dict[str, Any]:
    """The layer-by-layer catch-up of the same N trades (3 symbols, keyed by symbol) from 1, then 3 partitions."""
    n = 5_000 if ctx.quick else 500_000
    runs = {p: _catchup(ctx, "layers", n, partitions=p) for p in (1, 3)}
    ctx.details["partitions"] = {f"{p}p": r for p, r in runs.items()}
    return {f"catchup_layers_trades_per_s_{p}p": r["catchup_trades_per_s"] for p, r in runs.items()}


def m_cluster(ctx: Context) -> dict[str, Any]:
    """The same layer-by-layer catch-up (3 partitions) on a Spark standalone cluster of 1, then 2 workers.

    Each worker offers 1 core and 1 GB; the bench process's Spark session is the driver (as a notebook's kernel
    with ``spark_master`` set), the executors run on the workers."""
    from ..engine.cluster import ClusterSpec, LocalCluster
    from ..procs import free_port_pair

    n = 5_000 if ctx.quick else 300_000
    runs = {}
    for workers in (1, 2):
        port = free_port_pair()
        cluster = LocalCluster(ctx.root / f"cluster-{workers}w", port=port, ui_port=port + 1)
        cluster.start(ClusterSpec(workers, 1, "1g"))
        os.environ["LAKEHOUSE_SPARK_PROPERTIES"] = str(cluster.auth_file)  # the driver's secret (spark.authenticate)
        try:
            runs[workers] = _catchup(ctx, "layers", n, partitions=3, master=cluster.master_url,
                                     name=f"catchup-cluster-{workers}w")
        finally:
            os.environ.pop("LAKEHOUSE_SPARK_PROPERTIES", None)
            cluster.stop()
    ctx.details["cluster"] = {f"{w}w": r for w, r in runs.items()}
    return {f"cluster_catchup_trades_per_s_{w}w": r["catchup_trades_per_s"] for w, r in runs.items()}


def m_producer(ctx: Context) -> dict[str, Any]:
    from .producer import producer_replay_rate, producer_synthetic_rate

    work = ctx.root / "producer"
    work.mkdir(parents=True, exist_ok=True)
    return {"producer_trades_per_s": producer_replay_rate(ctx.bootstrap, work, 10_000 if ctx.quick else 100_000),
            "producer_synthetic_trades_per_s": producer_synthetic_rate(ctx.bootstrap, work,
                                                                       20_000 if ctx.quick else 500_000)}


def m_chart(ctx: Context) -> dict[str, Any]:
    from .charts import bench

    parts = bench(500, 200, repeats=2 if ctx.quick else 10)
    ctx.details["chart_refresh_parts_ms"] = {k: 1000 * v for k, v in parts.items()}
    return {"chart_refresh_ms_500_bars": 1000 * parts["refresh_once"]}


def m_realtime(ctx: Context) -> dict[str, Any]:
    """Ours and the seed's Gold side by side on one real-time feed (``--speed 1``), one reader each."""
    from .latency import GoldPoller, kafka_arrivals, latencies, stamped_topic
    from .runs import RssSampler, _interrupt
    from .seed import seed_gold_dir

    feed = 60.0 if ctx.quick else 8 * 60.0
    data = ctx.root / "realtime"
    topic = "bench.realtime"
    stamped_topic(ctx.bootstrap, topic)
    logs = ctx.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ours = GoldPoller(data / "gold", logs / "realtime.ours.jsonl")
    seed = GoldPoller(seed_gold_dir(Settings(data_dir=data)), logs / "realtime.seed.jsonl")
    proc = subprocess.Popen([sys.executable, "-m", "lakehouse_utils.bench.seed", "--data-dir", str(data),
                             "--bootstrap", ctx.bootstrap, "--topic", topic, "--speed", "1", "--duration",
                             str(feed)], stdout=open(logs / "realtime.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    sampler = RssSampler([proc.pid])
    try:
        proc.wait(feed + 300)
    finally:
        _interrupt(proc)
        sampler.stop()
    arrivals = kafka_arrivals(ctx.bootstrap, topic)
    mine, theirs = latencies(arrivals, ours.stop()), latencies(arrivals, seed.stop())
    ctx.details["realtime"] = {"ours": mine.summary(), "seed": theirs.summary(), "feed_s": feed}
    return {"seed_style_e2e_latency_p50_s": theirs.pct(50), "e2e_latency_p50_s_realtime": mine.pct(50)}


MEASUREMENTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "producer": m_producer,
    "chart": m_chart,
    "e2e": m_e2e,
    "e2e_500": m_e2e_500,
    "venues": m_venues,
    "first_bar": m_first_bar,
    "catchup": m_catchup,
    "check": m_check,
    "partitions": m_partitions,
    "cluster": m_cluster,
    "notebook_flow": m_notebook_flow,
    "pixels": m_pixels,
    "realtime": m_realtime,
}


def verdict(name: str, value: Any) -> str:
    target, higher, _ = TARGETS.get(name, (None, False, ""))
    if value is None:
        return "n/a"
    if target is None:
        return ""
    return "ok" if (value >= target if higher else value <= target) else "MISS"


def table(results: dict[str, Any]) -> str:
    lines = [f"{'field':<34} {'value':>12}  {'unit':<9} {'target':>12}  verdict"]
    for name, value in results.items():
        target, higher, unit = TARGETS.get(name, (None, False, ""))
        goal = "" if target is None else f"{'>=' if higher else '<='} {target:g}"
        shown = "-" if value is None else f"{value:,.2f}"
        lines.append(f"{name:<34} {shown:>12}  {unit:<9} {goal:>12}  {verdict(name, value)}")
    return "\n".join(lines)


def run(root: Path, only: list[str] | None = None, quick: bool = False) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()  # kernels, JupyterLab and the engine run in other directories: hand them absolute paths
    for sub in ("runs", "logs", "kafka"):
        shutil.rmtree(root / sub, ignore_errors=True)
    kafka = LocalKafka(root / "kafka", free_port_pair())
    kafka.start()
    ctx = Context(root / "runs", kafka, quick)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    try:
        for name, fn in MEASUREMENTS.items():
            if only and name not in only:
                continue
            print(f"[bench] {name} ...", flush=True)
            t0 = time.monotonic()
            # a data dir (tables, checkpoints, logs) of its own, new for this measurement: nothing one leaves
            # behind (a checkpoint of another topic, say) can reach the next; the broker is shared, topics are new
            own = ctx.root / name
            shutil.rmtree(own, ignore_errors=True)
            own.mkdir(parents=True)
            out = fn(replace(ctx, root=own))
            timings[name] = round(time.monotonic() - t0, 1)
            for k, v in out.items():
                print(f"[bench]   {k} = {v}", flush=True)
            results.update(out)
    finally:
        kafka.stop()
    report = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick,
              "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
              "results": results, "verdicts": {k: verdict(k, v) for k, v in results.items()},
              "seconds": timings, "details": ctx.details}
    (root / "latest.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="data/bench")
    ap.add_argument("--only", action="append", choices=list(MEASUREMENTS), help="run only these (repeatable)")
    ap.add_argument("--quick", action="store_true", help="short feeds: checks the fields, not the targets")
    args = ap.parse_args(argv)
    report = run(Path(args.data_dir), args.only, args.quick)
    print(table(report["results"]))
    print(f"written: {Path(args.data_dir) / 'latest.json'}")
    return 0
