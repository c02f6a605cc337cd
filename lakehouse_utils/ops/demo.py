"""The main job: broker, producer and the three streaming queries in one process, with progress.

``run_demo`` starts the embedded broker (unless a bootstrap is given), the one-query pipeline (Kafka ->
Bronze -> Silver -> Gold in each micro-batch, ``pipeline.py``) and a producer thread, and prints a progress
line.  With ``until_drained`` it
returns once the source is exhausted and every layer has caught up: Bronze holds every message of the
topic, no table has changed for a few trigger intervals while no query was busy, and Gold's 1-minute
bars hold every Silver trade (plus the late ones, counted apart).  Everything it
started is stopped on the way out (Ctrl-C included); checkpoints and Kafka's log make a rerun on the
same data dir carry on without losing or double counting anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import TIMEFRAMES, Settings, table_exists
from ..kafka.broker import LocalKafka
from ..kafka.topics import end_offsets
from ..layers.follow import latest_version
from ..layers.jobs import Supervisor
from ..layers.query_progress import progress_of
from ..layers.streaming import flow_of, parse_delay, stop_between_batches
from ..progress import ProgressLine


@dataclass
class LayerCounts:
    bronze: int = 0
    silver: int = 0
    quarantine: int = 0
    late: int = 0
    bars: dict[str, int] = field(default_factory=dict)
    gold_trades: dict[str, int] = field(default_factory=dict)
    bars_by_exchange: dict[str, dict[str, int]] = field(default_factory=dict)  # timeframe -> exchange -> bars


@dataclass
class DemoResult:
    drained: bool
    wall_seconds: float
    producer: dict[str, Any]
    topic_offsets: dict[int, int]
    counts: LayerCounts
    report: Path | None = None
    recordings: dict[str, str] = field(default_factory=dict)  # venue -> the recording its replay played


def table_counts(spark: Any, settings: Settings) -> LayerCounts:
    """Row counts of every table (Gold: bars and the trades they hold, per timeframe), read with deltalake from the
    log and Gold's two columns, without a Spark job (``spark`` is unused; kept for the callers): the demo's drain
    loop asks every half second, and Spark's count of a table of many small commits took seconds each time."""
    from deltalake import DeltaTable

    from ..views.verify import delta_count

    def count(path: Path) -> int:
        return delta_count(path) or 0

    counts = LayerCounts(count(settings.bronze), count(settings.silver), count(settings.quarantine),
                         count(settings.late_trades))
    for tf in TIMEFRAMES:
        path = settings.bars_table(tf)
        if table_exists(path):
            bars = DeltaTable(str(path)).to_pyarrow_table(columns=["exchange", "trades"])
            rows = bars.group_by("exchange").aggregate([("trades", "count"), ("trades", "sum")]).to_pylist()
            counts.bars[tf] = sum(int(r["trades_count"]) for r in rows)
            counts.gold_trades[tf] = sum(int(r["trades_sum"] or 0) for r in rows)
            counts.bars_by_exchange[tf] = {str(r["exchange"]): int(r["trades_count"])
                                           for r in sorted(rows, key=lambda r: str(r["exchange"]))}
    return counts


def venue_recordings(settings: Settings, venues: list[str]) -> dict[str, Path]:
    """The recording each venue's replay plays: the bundled hour (Kraken), re-encoded for the others and written
    to ``<data>/recordings/<venue>_btcusd_2019-07-01T00.jsonl.gz`` (once), where anyone can read it."""
    from ..sources.recording import SAMPLE_RECORDING
    from ..sources.reencode import write_venue_recording

    out: dict[str, Path] = {}
    for venue in venues:
        if venue == "kraken":
            out[venue] = SAMPLE_RECORDING
            continue
        path = settings.data_dir / "recordings" / f"{venue}_btcusd_2019-07-01T00.jsonl.gz"
        out[venue] = path if path.exists() else write_venue_recording(venue, path)
    return out


def run_demo(
    settings: Settings,
    *,
    source: str = "replay",
    venues: str | list[str] | None = None,
    file: str | None = None,
    pairs: list[str] | None = None,
    speed: str = "max",
    profile: str = "steady",
    start_broker: bool = True,
    broker_port: int | None = None,
    until_drained: bool = False,
    duration: float | None = None,
    trigger: str = "1 second",
    progress: ProgressLine | None = None,
    write_report: bool = True,
    extra_queries: dict[str, Callable[..., Any]] | None = None,
    drop: tuple[float, float] | None = None,
) -> DemoResult:
    from ..engine.spark import get_spark
    from ..kafka.group import make_producers, plan, release
    from ..kafka.producer import ensure_topics
    from ..layers import bronze, gold, silver
    from ..layers.pipeline import start_pipeline

    steps = plan(source, venues)  # a bad --source / --venues fails here, before anything starts
    recordings: dict[str, Path] = {}
    if file is None and len(steps) > 1 and all(kind == "replay" for kind, _ in steps):
        recordings = venue_recordings(settings, [venue for _, venue in steps])
    t0 = time.monotonic()
    progress = progress or ProgressLine()
    kafka = None
    # Spark's JVM boots while the broker's does (each takes seconds; both JVMs are cold at a first run)
    boot = ThreadPoolExecutor(1, thread_name_prefix="spark-boot")
    booting = boot.submit(get_spark, settings)
    boot.shutdown(wait=False)
    if start_broker:
        progress.update("starting the embedded broker and Spark ...")
        kafka = LocalKafka(settings.broker_dir, broker_port or settings.broker_port)
        owned = not kafka.is_running()
        kafka.start()
        settings = settings.with_(bootstrap=kafka.bootstrap)
        if not owned:
            kafka = None  # someone else's broker: leave it running

    ensure_topics(settings)  # the pipeline's Kafka source needs the topic before the first trade
    progress.update(f"broker ready at {settings.bootstrap} ({time.monotonic() - t0:.1f}s); starting Spark ...")
    spark = booting.result()
    starts: dict[str, Callable[[], Any]] = {}
    if flow_of(settings) == "layers":  # built by notebooks 02-04 or the layer jobs: keep to their checkpoints
        progress.done(f"{settings.data_dir} is run layer by layer (its checkpoints say so): the demo starts "
                      "the Bronze, Silver and Gold queries (the one-query pipeline is faster on a new data dir)")
        starts = {"bronze": lambda: bronze.start_bronze(spark, settings, trigger=trigger),
                  "silver": lambda: silver.start_silver(spark, settings, trigger=trigger),
                  "gold": lambda: gold.start_gold(spark, settings, trigger=trigger)}
    else:  # Kafka -> Bronze, Silver, Gold
        starts = {"pipeline": lambda: start_pipeline(spark, settings, trigger=trigger)}
    for name, start in (extra_queries or {}).items():  # e.g. the bench's seed-style Gold beside ours
        starts[name] = (lambda start=start: start(spark, settings))
    # a query failing on a Kafka error (the broker was killed) is restarted from its checkpoint, with a line
    supervisor = Supervisor(starts, say=progress.done)
    queries = supervisor.queries
    producer = None
    drained = False
    try:
        supervisor.start()
        # a replay: every symbol recorded; several venues: a producer thread each
        producer = make_producers(settings, source, pairs, venues=venues, file=file, files=recordings, speed=speed,
                                  drop=drop, profile=profile)
        try:
            producer.start()
        except BaseException:
            release(producer)
            raise
        # counted from the producer's start: a slow cold start (broker, Spark) must not eat the feed
        deadline = None if duration is None else time.monotonic() + duration
        while True:
            supervisor.check()
            progress.update(_line(producer, queries))
            if deadline is not None and time.monotonic() >= deadline:
                break
            if until_drained and not producer.running:
                break
            time.sleep(0.5)
        producer.stop()
        if until_drained:
            _wait_caught_up(spark, settings, queries, producer, progress, _interval_seconds(trigger),
                            check=supervisor.check)
            drained = True
    finally:
        if producer is not None and producer.running:
            producer.stop()
        for q in queries.values():
            stop_between_batches(q)
        if kafka is not None:
            offsets = end_offsets(settings, settings.topic)
            kafka.stop()
        else:
            offsets = None
    if offsets is None:
        offsets = end_offsets(settings, settings.topic)
    counts = table_counts(spark, settings)
    status = producer.status() if producer else None
    result = DemoResult(drained, time.monotonic() - t0, asdict(status) if status else {}, offsets, counts,
                        recordings={v: str(p) for v, p in recordings.items()})
    progress.done(_summary(result))
    if write_report:
        result.report = write_summary(settings, result)
    return result


def _interval_seconds(trigger: str) -> float:
    try:
        return parse_delay(trigger).total_seconds()
    except ValueError:
        return 1.0


def _wait_caught_up(spark, settings: Settings, queries: dict, producer, progress: ProgressLine,
                    interval: float, timeout: float = 600.0, check: Callable[[], None] | None = None) -> None:
    """Block until every layer reflects everything the source produced (see the module doc).

    ``check``: called on every look (e.g. ``Supervisor.check``, which restarts a query failed on a Kafka error);
    without it a failed query raises.
    """
    tables = [settings.bronze, settings.silver, settings.quarantine, settings.bars_table("1m")]
    quiet_for = 2 * interval + 2.0
    deadline = time.monotonic() + timeout
    last_versions, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        if check is not None:
            check()
        for name, q in queries.items():
            if q.exception() is not None:
                raise RuntimeError(f"{name} query failed: {q.exception()}")
        progress.update(_line(producer, queries))
        versions = [latest_version(Path(t)) for t in tables]
        busy = any(q.status.get("isTriggerActive") for q in queries.values())
        if versions != last_versions or busy:
            last_versions, quiet_since = versions, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_for:
            counts = table_counts(spark, settings)
            topic_total = sum(end_offsets(settings, settings.topic).values())
            if counts.bronze >= topic_total and counts.gold_trades.get("1m", 0) + counts.late == counts.silver:
                return
            quiet_since = time.monotonic()  # quiet but not complete: a trigger is due, look again
        time.sleep(0.25)
    raise TimeoutError(f"layers did not catch up within {timeout:.0f}s")


def _line(producer, queries: dict) -> str:
    parts = [producer.status().line()] if producer else []
    for name, q in queries.items():
        p = progress_of(q, name)
        extra = "".join(f" {k}={v}" for k, v in p.layer.items() if k in ("late", "quarantined", "alerts",
                                                                                     "alert_errors"))
        took = f" {p.batch_ms}ms" if p.batch_ms is not None else ""
        parts.append(f"{name} b{p.batch_id if p.batch_id is not None else '-'} {p.input_rows}r{took}{extra}")
    return " | ".join(parts)


def _summary(result: DemoResult) -> str:
    c = result.counts
    bars = " ".join(f"{tf}={n}" for tf, n in c.bars.items())
    per = c.bars_by_exchange.get("1m", {})
    venues = f" (1m per venue: {', '.join(f'{ex} {n}' for ex, n in per.items())})" if len(per) > 1 else ""
    return (f"{'drained' if result.drained else 'stopped'} in {result.wall_seconds:.1f}s: "
            f"topic={sum(result.topic_offsets.values())} bronze={c.bronze} silver={c.silver} "
            f"quarantine={c.quarantine} late={c.late} bars {bars}{venues}")


def write_summary(settings: Settings, result: DemoResult) -> Path:
    """``<data>/reports/summary.md`` (a table) and ``summary.json``."""
    out = settings.reports
    out.mkdir(parents=True, exist_ok=True)
    c = result.counts
    rows = [("topic messages", sum(result.topic_offsets.values())), ("bronze rows", c.bronze),
            ("silver trades", c.silver), ("quarantined rows", c.quarantine), ("late trades", c.late)]
    rows += [(f"gold bars {tf}", n) for tf, n in c.bars.items()]
    rows += [(f"gold bars {tf} {exchange}", n) for tf, per in c.bars_by_exchange.items() for exchange, n in per.items()
             if len(per) > 1]
    rows += [(f"gold trades {tf}", n) for tf, n in c.gold_trades.items()]
    p = result.producer
    rows += [("producer " + k, p.get(k)) for k in ("received", "sent", "delivered", "rejected", "dlq_sent",
                                                   "snapshot_trades", "missing_ids", "gaps_found", "ids_filled",
                                                   "ids_unfilled") if k in p]
    rows += [(f"producer {part['source']} sent", part["sent"]) for part in p.get("parts", ())]
    rows += [(f"recording {venue}", f"`{path}`") for venue, path in result.recordings.items()]
    rows += [("wall seconds", f"{result.wall_seconds:.1f}"), ("drained", result.drained)]
    md = ["# Demo report", "", f"generated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC", "",
          "| what | value |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows], ""]
    (out / "summary.md").write_text("\n".join(md))
    (out / "summary.json").write_text(json.dumps(asdict(result), default=str, indent=2))
    from ..views.charts import report_candles

    report_candles(settings)  # <data>/reports/candles.html, offline Plotly
    return out / "summary.md"
