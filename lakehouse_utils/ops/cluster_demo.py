"""``make cluster-demo``: the three layer jobs on a Spark standalone cluster over a partitioned topic, checked.

:func:`run_cluster_demo` starts (or reuses) the embedded broker and a
:class:`~lakehouse_utils.engine.cluster.LocalCluster`, creates the trades topic with ``partitions`` partitions
(keyed by exchange|symbol), sends the bundled real hour (BTC/USD) and a seeded 3-symbol synthetic stream, then runs
Bronze, Silver and Gold one after another through ``spark-submit`` on the cluster, each with ``--available-now``
(it processes what is there, in batches of ``max_offsets_per_trigger`` for Bronze, then exits).  Gold is then
compared with bars computed here in pandas from the sources themselves (the recording's file and the same seeded
stream), and ``lakehouse check`` runs on the tables.  What the demo started is stopped on the way out.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import TIMEFRAMES, Settings
from ..engine.cluster import ClusterSpec, LocalCluster, submit_command, submit_env
from ..progress import ProgressLine

# beside the hour's BTC/USD; keyed by exchange|symbol (murmur2, as Java), 3 partitions get LTC / ETH / BTC+SOL
SYNTHETIC_PAIRS = ["ETH/USD", "SOL/USD", "LTC/USD"]
SYNTHETIC_SEED = 11
BRONZE_BATCH_OFFSETS = 5000
JOBS = ("bronze", "silver", "gold")
FREQ = {"1m": "1min", "5m": "5min", "1h": "1h"}
OnCommit = Callable[[str, int], None]  # (job, batches it committed so far)
# The demo's jobs are short (tens of seconds, small batches) on two shared cores: the JIT's top tier (C2) costs
# more CPU than it gives back there.  Measured, the Silver job on 22k trades, 1 worker: 54 s -> 40 s (twice each).
# Long catch-ups want C2: `lakehouse cluster` and the README's spark-submit line keep the JVM's default.
SHORT_JOB_CONF = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
                  "spark.executor.extraJavaOptions": "-XX:TieredStopAtLevel=1"}


@dataclass
class JobRun:
    job: str
    seconds: float
    batches: int


@dataclass
class ClusterDemoResult:
    produced: int
    jobs: list[JobRun] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    check_ok: bool = False

    @property
    def ok(self) -> bool:
        return self.check_ok and not self.problems

    def summary(self) -> str:
        jobs = ", ".join(f"{j.job} {j.seconds:.0f}s/{j.batches} batches" for j in self.jobs)
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        verdict = "Gold equals the independent bars; check passed" if self.ok else \
            "DIFFERENCES:\n  " + "\n  ".join(self.problems or ["lakehouse check failed"])
        return f"{self.produced} trades sent; jobs: {jobs}\n{counts}\n{verdict}"


# -- the sources and their bars, without Spark -------------------------------------------------------------
def source_trades(synthetic_trades: int, recording: str | Path | None = None) -> pd.DataFrame:
    """Every trade the demo sends: the recording's (one per symbol and trade id) and the seeded stream's."""
    from ..sources.replay import SAMPLE_RECORDING
    from ..sources.synthetic import SyntheticSource

    rows = []
    with gzip.open(recording or SAMPLE_RECORDING, "rt") as f:
        for line in f:
            frame = json.loads(line).get("frame", {})
            if isinstance(frame, dict) and frame.get("channel") == "trade":
                rows += [(t["symbol"], str(t["trade_id"]), float(t["price"]), float(t["qty"]),
                          pd.Timestamp(t["timestamp"])) for t in frame["data"]]
    src = SyntheticSource(SYNTHETIC_PAIRS, seed=SYNTHETIC_SEED, rate=None, n_trades=synthetic_trades)
    rows += [(t.symbol, t.trade_id, t.price, t.qty, pd.Timestamp(t.event_time)) for t in src.stream(threading.Event())]
    trades = pd.DataFrame(rows, columns=["symbol", "trade_id", "price", "qty", "t"])
    trades["t"] = pd.to_datetime(trades["t"], utc=True)
    trades["n"] = pd.to_numeric(trades["trade_id"])
    return trades.drop_duplicates(["symbol", "trade_id"]).sort_values(["symbol", "t", "n"])


def source_bars(trades: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """OHLCV + VWAP per symbol and bar, by timeframe, in pandas (trades ordered by time, then trade id)."""
    out = {}
    for tf in TIMEFRAMES:
        t = trades.assign(bar_start=trades["t"].dt.floor(FREQ[tf]), notional=trades["price"] * trades["qty"])
        g = t.groupby(["symbol", "bar_start"], sort=True)
        out[tf] = pd.DataFrame({"open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
                                "close": g["price"].last(), "volume": g["qty"].sum(), "trades": g.size(),
                                "vwap": g["notional"].sum() / g["qty"].sum()})
    return out


def gold_differences(settings: Settings, expected: dict[str, pd.DataFrame], examples: int = 3) -> list[str]:
    """Where Gold (read with deltalake) differs from ``expected``: prices and counts exact, sums to 1e-9."""
    from deltalake import DeltaTable

    problems = []
    for tf, want in expected.items():
        got = DeltaTable(str(settings.bars_table(tf))).to_pandas()
        got["bar_start"] = pd.to_datetime(got["bar_start"], utc=True)
        got = got.set_index(["symbol", "bar_start"]).sort_index()
        missing, extra = want.index.difference(got.index), got.index.difference(want.index)
        if len(missing) or len(extra):
            problems.append(f"{tf}: {len(missing)} bars missing {list(missing[:examples])}, "
                            f"{len(extra)} extra {list(extra[:examples])}")
            continue
        got = got.loc[want.index]
        for col in ("open", "high", "low", "close", "trades"):
            bad = want.index[(got[col].to_numpy() != want[col].to_numpy())]
            if len(bad):
                problems.append(f"{tf} {col}: {len(bad)} bars differ, e.g. {list(bad[:examples])}")
        for col in ("volume", "vwap"):
            rel = (got[col] - want[col]).abs() / want[col].abs().clip(lower=1e-300)
            bad = want.index[(rel > 1e-9).to_numpy()]
            if len(bad):
                problems.append(f"{tf} {col}: {len(bad)} bars differ by more than 1e-9, e.g. {list(bad[:examples])}")
    return problems


# -- the steps ------------------------------------------------------------------------------------------
def send_trades(settings: Settings, synthetic_trades: int, say: Callable[[str], None]) -> int:
    """The bundled hour, then the seeded synthetic stream, into the trades topic; returns how many were delivered."""
    from ..kafka.producer import ProducerThread, TradeProducer, make_source

    delivered = 0
    for kind, pairs in (("replay", None), ("synthetic", SYNTHETIC_PAIRS)):
        src, cleanup = make_source(kind, pairs, speed="max", seed=SYNTHETIC_SEED, n_trades=synthetic_trades)
        thread = ProducerThread(src, TradeProducer.from_settings(settings), name=kind, cleanup=cleanup).start()
        while thread.running:
            say(thread.status().line())
            time.sleep(0.5)
        status = thread.stop()
        if status.error or status.delivery_errors:
            raise RuntimeError(f"{kind}: {status.delivery_errors} trades not delivered ({status.error})")
        delivered += status.delivered
    return delivered


def commits(settings: Settings, job: str) -> int:
    """Batches a layer committed (Bronze's Spark checkpoint, or a follower's state)."""
    from ..layers.follow import batches_committed
    from ..layers.streaming import LAYER_CHECKPOINTS

    return batches_committed(settings.checkpoint(LAYER_CHECKPOINTS[JOBS.index(job)]))


def submit_job(settings: Settings, cluster: LocalCluster, job: str, *, on_commit: OnCommit | None = None,
               say: Callable[[str], None] = lambda _s: None, timeout: float = 900.0) -> JobRun:
    """``spark-submit`` one layer job (``--available-now``) to the cluster and wait for it; raises if it fails."""
    args = ["--data-dir", str(settings.data_dir.resolve()), "--bootstrap", settings.bootstrap,
            "--topic", settings.topic, "--available-now"]
    if job == "bronze" and settings.max_offsets_per_trigger:
        args += ["--maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger)]
    cmd = submit_command(settings, cluster.master_url, job, *args, conf=SHORT_JOB_CONF,  # with its secret
                         properties_file=cluster.auth_file if cluster.auth_file.exists() else None)
    log = cluster.logs / f"job-{job}.log"
    before, seen, t0 = commits(settings, job), 0, time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=submit_env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            while proc.poll() is None:
                done = commits(settings, job) - before
                if done != seen and on_commit is not None:
                    on_commit(job, done)
                seen = done
                say(f"{job} on {cluster.master_url}: {done} batches committed, {time.monotonic() - t0:.0f}s")
                if time.monotonic() - t0 > timeout:
                    proc.kill()
                    raise TimeoutError(f"{job}: not finished after {timeout:.0f}s (log: {log})")
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{job} exited with {proc.returncode} on the cluster (log: {log}):\n{tail}")
    return JobRun(job, time.monotonic() - t0, commits(settings, job) - before)


def run_cluster_demo(settings: Settings, spec: ClusterSpec | None = None, *, cluster: LocalCluster | None = None,
                     partitions: int = 3,
                     synthetic_trades: int = 30_000, start_broker: bool = True,
                     on_commit: OnCommit | None = None, progress: ProgressLine | None = None) -> ClusterDemoResult:
    """Broker (unless ``start_broker`` is false: one was named), cluster (``cluster``, else the data dir's),
    trades, the three jobs, the comparison; stops what it started.  ``on_commit`` is told of each batch a job
    commits (the slow test kills a worker there)."""
    from dataclasses import replace

    from ..kafka.broker import LocalKafka
    from ..kafka.producer import ensure_topics
    from ..kafka.topics import ensure_topic
    from .check import check

    spec = spec or ClusterSpec()
    progress = progress or ProgressLine()
    say = progress.update
    # Bronze in batches (several commits, so a job can be watched, or faulted, mid-run) unless the caller chose
    settings = replace(settings, partitions=partitions,
                       max_offsets_per_trigger=settings.max_offsets_per_trigger or BRONZE_BATCH_OFFSETS)
    kafka = LocalKafka.for_settings(settings) if start_broker else None
    started_broker = kafka is not None and not kafka.is_running()
    cluster = cluster or LocalCluster.for_settings(settings)
    started_cluster = cluster.pid("master") is None
    try:
        if kafka is not None:
            say(f"starting the broker {kafka.bootstrap}", force=True)
            kafka.start()
        ensure_topic(settings, settings.topic, partitions, settings.retention_ms)
        ensure_topics(settings)
        result = ClusterDemoResult(send_trades(settings, synthetic_trades, say))
        progress.done(f"sent {result.produced} trades to {settings.topic} ({partitions} partitions, "
                      "keyed by exchange|symbol)")
        cluster.start(spec, progress=progress.done)
        for job in JOBS:
            run = submit_job(settings, cluster, job, on_commit=on_commit, say=say)
            result.jobs.append(run)
            progress.done(f"{job}: done on the cluster in {run.seconds:.0f}s ({run.batches} batches)")
        say("comparing Gold with bars computed from the sources", force=True)
        trades = source_trades(synthetic_trades)
        result.problems = gold_differences(settings, source_bars(trades))
        report = check(settings)
        result.check_ok = report.ok
        if not report.ok:
            result.problems.append(report.summary())
        facts = report.facts
        result.counts = {"trades sent": result.produced, "distinct trades": len(trades),
                         "bronze": facts.get("bronze_rows", 0), "silver": facts.get("silver_rows", 0),
                         "quarantine": facts.get("quarantine_rows", 0),
                         "late": (facts.get("gold") or {}).get("late", 0)}
        if result.counts["late"] or result.counts["quarantine"]:
            result.problems.append(f"{result.counts['late']} late and {result.counts['quarantine']} quarantined "
                                   "trades: every trade sent should be in Gold")
        progress.done()
        return result
    finally:
        if started_cluster:
            cluster.stop()
        if started_broker and kafka is not None:
            kafka.stop()

