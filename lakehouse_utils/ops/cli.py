"""The ``lakehouse`` command: broker, topics, ingestion, the medallion jobs and the demo.

Flags keep the seed's names (``--bootstrap``, ``--topic``, ``--out``, ``--checkpoint``,
``--startingOffsets``, ``--trigger``, ``--bronze``, ``--silver``, ``--gold``, ``--pair``); every flag
not given falls back to ``LAKEHOUSE_*`` environment variables, then to the defaults in ``Settings``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import FlowConflict, Settings
from ..engine.server import EngineError
from ..kafka.kafka_conf import KafkaSecurityError

Handler = Callable[[argparse.Namespace, Settings], int]
_HANDLERS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn

    return register


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", dest="data_dir", help="root of tables, checkpoints, broker data (default ./data)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:19092)")
    p.add_argument("--topic", help="trades topic (default crypto.trades)")
    p.add_argument("--kafka-properties", dest="kafka_properties", metavar="FILE",
                   help="Kafka client security (security.protocol, sasl.*, ssl.*) from a properties file kept outside "
                        "the repo; LAKEHOUSE_KAFKA_* variables win over it (README: Operations)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lakehouse", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("broker", help="embedded Kafka (KRaft) broker: start | stop | status")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, default=None, help="client port (default 19092; controller uses port+1)")
    p.add_argument("--data-dir", dest="data_dir", help="data root, as for every command: the broker lives in "
                   "<data>/kafka (default ./data)")
    p.add_argument("--broker-dir", dest="broker_dir", default=None, help="the broker's own folder, if not <data>/kafka")

    p = sub.add_parser("topic", help="topics: create | list | consume (peek at the last messages)")
    p.add_argument("action", choices=["create", "list", "consume"])
    _common(p)
    p.add_argument("-n", type=int, default=5, help="consume: how many of the last messages")
    _partitions(p)

    p = sub.add_parser("jars", help="resolve the pinned connector jars into the local cache (needs Maven once)")
    p.add_argument("--force", action="store_true")

    from . import ingest

    p = sub.add_parser("ingest", help="trades from Kraken, Coinbase, Binance / a replay / a synthetic walk -> Kafka "
                                      "(+ DLQ)")
    _common(p)
    _partitions(p)
    ingest.add_arguments(p)

    p = sub.add_parser("bronze", help="Kafka -> Bronze Delta table (raw value + Kafka metadata)")
    _common(p)
    p.add_argument("--out", dest="bronze_path", help="Bronze table (default <data>/bronze/crypto_trades)")
    p.add_argument("--startingOffsets", dest="starting_offsets", help="earliest | latest | JSON (default earliest)")
    p.add_argument("--maxOffsetsPerTrigger", dest="max_offsets_per_trigger", type=int)
    p.add_argument("--allow-data-loss", action="store_true",
                   help="failOnDataLoss=false: skip offsets deleted by retention instead of failing")
    _job(p)

    p = sub.add_parser("silver", help="Bronze -> Silver trades (typed, deduplicated) + quarantine")
    _common(p)
    p.add_argument("--bronze", dest="bronze_path")
    p.add_argument("--silver", dest="silver_path")
    p.add_argument("--quarantine", dest="quarantine_path")
    _job(p)

    p = sub.add_parser("gold", help="Silver -> Gold bars_1m / bars_5m / bars_1h (OHLCV + VWAP)")
    _common(p)
    p.add_argument("--silver", dest="silver_path")
    p.add_argument("--gold", dest="gold_path", help="Gold folder (a seed-style .../bars_1m path means its folder)")
    p.add_argument("--watermark", help="event-time lateness allowed before a bar is final (default 2 minutes)")
    _alerts(p)
    _job(p)

    p = sub.add_parser("pipeline", help="Kafka -> Bronze -> Silver -> Gold as one streaming query (the demo's)")
    _common(p)
    p.add_argument("--startingOffsets", dest="starting_offsets", help="earliest | latest | JSON (default earliest)")
    p.add_argument("--maxOffsetsPerTrigger", dest="max_offsets_per_trigger", type=int)
    p.add_argument("--allow-data-loss", action="store_true",
                   help="failOnDataLoss=false: skip offsets deleted by retention instead of failing")
    p.add_argument("--watermark", help="event-time lateness allowed before a bar is final (default 2 minutes)")
    _alerts(p)
    _partitions(p)
    _job(p)

    p = sub.add_parser("demo", help="the main job: broker + producer + Bronze/Silver/Gold in one process")
    _common(p)
    ingest.add_source_arguments(p)
    p.add_argument("--broker-port", type=int, help="port of the embedded broker (default 19092)")
    p.add_argument("--trigger", default="1 second", help="processing-time trigger of the pipeline query")
    p.add_argument("--watermark")
    _alerts(p)
    _partitions(p)
    end = p.add_mutually_exclusive_group()
    end.add_argument("--until-drained", action="store_true",
                     help="exit 0 once the source is exhausted and every layer has caught up")
    end.add_argument("--duration", type=float,
                     help="feed for S seconds (counted from the producer's start, once broker and Spark are up)")

    from . import backfill_cli, engine_cli, maintain_cli, sql_cli

    engine_cli.add_parser(sub)
    # commands of their own modules
    for name, module in (("backfill", backfill_cli), ("sql", sql_cli), ("maintain", maintain_cli)):
        module.add_parser(sub)
        command(name)(module.run)

    p = sub.add_parser("check", help="reconcile Bronze with the topic, Silver/quarantine with Bronze, Gold with "
                                     "Silver; exit 1 naming each difference")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON (no progress line)")
    p.add_argument("--examples", type=int, default=5, help="keys shown per kind of difference (default 5)")

    p = sub.add_parser("cluster", help="a Spark standalone cluster on this machine: start | status | stop | demo")
    p.add_argument("action", choices=["start", "status", "stop", "demo"])
    _common(p)
    p.add_argument("--workers", type=int, default=2, help="workers to start (default 2)")
    p.add_argument("--cores", type=int, default=1, help="cores each worker offers (default 1)")
    p.add_argument("--memory", default="1g", help="memory each worker offers to executors (default 1g)")
    p.add_argument("--port", type=int, default=None, help="the master's port (default 17077)")
    p.add_argument("--ui-port", dest="ui_port", type=int, default=None, help="the master's web UI (default 18080)")
    p.add_argument("--partitions", type=int, default=3, help="demo: partitions of the trades topic (default 3)")
    p.add_argument("--synthetic-trades", dest="synthetic_trades", type=int, default=30_000,
                   help="demo: trades of the 3-symbol synthetic stream sent after the hour (default 30000)")
    p.add_argument("--maxOffsetsPerTrigger", dest="max_offsets_per_trigger", type=int,
                   help="demo: Bronze's batch size in offsets (default 5000)")

    p = sub.add_parser("reset", help="dev reset: delete the tables and checkpoints (asks first)")
    _common(p)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--broker", action="store_true", help="also delete the embedded broker's data (stops it)")
    return parser


def _job(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="this job's checkpoint dir (default <data>/checkpoints/<job>)")
    p.add_argument("--trigger", help="processing-time interval, e.g. '2 seconds' (default from settings)")
    p.add_argument("--available-now", action="store_true", help="process what is there, then exit")
    p.add_argument("--duration", type=float, help="stop after S seconds")
    p.add_argument("--engine", action="store_true",
                   help="run it in the shared engine (`lakehouse engine start`; started if need be) and follow it "
                        "here: Ctrl-C stops it; a notebook's panel sees it and can stop it too")


def _alerts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("alerts Gold raises on the bars it makes final (README: Alerts)")
    g.add_argument("--no-alerts", dest="alerts", action="store_const", const=False,
                   help="raise none (LAKEHOUSE_ALERTS=0)")
    for flag, kind, meta, what in (
            ("window", int, "BARS", "bars a z-score is measured against (default 20)"),
            ("z", float, "Z", "return_z / volume_z at |z| >= Z (default 3.0)"),
            ("move-pct", float, "PCT", "move_pct at a close-to-close move >= PCT %% (default 1.0)"),
            ("spread-bp", float, "BP", "venue_spread: a symbol's venues close >= BP bp apart (default 25)")):
        g.add_argument(f"--alert-{flag}", dest=f"alert_{flag.replace('-', '_')}", type=kind, metavar=meta, help=what)


def _partitions(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partitions", type=int, default=None, metavar="N",
                   help="partitions of the trades topic if it is created here (default 1; keyed by exchange|symbol, "
                        "so each symbol keeps its order); an existing topic is kept as it is, with a warning")


def settings_from(args: argparse.Namespace) -> Settings:
    keys = ("data_dir", "bootstrap", "kafka_properties", "topic", "partitions", "bronze_path", "silver_path",
            "quarantine_path", "gold_path", "starting_offsets", "max_offsets_per_trigger", "watermark",
            "alerts", "alert_window", "alert_z", "alert_move_pct", "alert_spread_bp", "gap_fill", "rest_url")
    values = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    gold = values.get("gold_path")
    if gold and Path(gold).name.startswith("bars_"):  # the seed passed --gold data/gold/bars_1m
        values["gold_path"] = str(Path(gold).parent)
    return Settings.from_env(**values)


def _run_layer(args: argparse.Namespace, settings: Settings, layer: str, **kwargs: Any) -> int:
    from ..engine import LocalEngine, SharedEngine
    from ..layers.jobs import run_query

    trigger = "available-now" if args.available_now else (args.trigger or settings.trigger)
    if args.engine:
        engine: Any = SharedEngine.open(settings, say=lambda line: print(line, file=sys.stderr, flush=True))
    else:
        engine = LocalEngine(settings)
    query = engine.start(layer, settings, trigger, checkpoint=args.checkpoint, **kwargs)
    try:
        return run_query(query, duration=args.duration)
    finally:
        if isinstance(engine, LocalEngine):  # the job is over: its watcher must not start it again
            engine.stop(layer, settings, checkpoint=args.checkpoint)


@command("ingest")
def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from . import ingest

    return ingest.run(args, settings)


@command("bronze")
def _bronze(args: argparse.Namespace, settings: Settings) -> int:
    return _run_layer(args, settings, "bronze", fail_on_data_loss=not args.allow_data_loss)


@command("silver")
def _silver(args: argparse.Namespace, settings: Settings) -> int:
    return _run_layer(args, settings, "silver")


@command("gold")
def _gold(args: argparse.Namespace, settings: Settings) -> int:
    return _run_layer(args, settings, "gold")


@command("pipeline")
def _pipeline(args: argparse.Namespace, settings: Settings) -> int:
    from ..kafka.producer import ensure_topics

    ensure_topics(settings)  # created with --partitions before the query reads it (as the demo does)
    return _run_layer(args, settings, "pipeline", fail_on_data_loss=not args.allow_data_loss)


@command("demo")
def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from ..kafka.broker import names_a_broker
    from ..kafka.group import plan
    from .demo import run_demo

    try:
        plan(args.source, args.venues)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_demo(settings, source=args.source, venues=args.venues, file=args.file, pairs=args.pairs,
                      speed=args.speed, profile=args.rate_profile,
                      start_broker=not names_a_broker(args.bootstrap), broker_port=args.broker_port,
                      until_drained=args.until_drained, duration=args.duration, trigger=args.trigger, drop=args.drop)
    if result.report:
        print(f"report: {result.report}")
    return 0 if (result.drained or not args.until_drained) else 1


@command("engine")
def _engine(args: argparse.Namespace, settings: Settings) -> int:
    from . import engine_cli

    return engine_cli.run(args, settings)


@command("check")
def _check(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from .check import check

    tty = sys.stderr.isatty()

    def progress(step: str) -> None:  # one line rewritten in place on a terminal, a line per step in a log
        print(f"\r[check] {step} ...".ljust(60) if tty else f"[check] {step}", end="" if tty else "\n",
              file=sys.stderr, flush=True)

    report = check(settings, examples=args.examples, progress=None if args.json else progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        if tty:
            print("\r" + " " * 60, end="\r", file=sys.stderr, flush=True)
        print(report.summary())
    return 0 if report.ok else 1


@command("cluster")
def _cluster(args: argparse.Namespace, settings: Settings) -> int:
    from ..engine.cluster import ClusterSpec, LocalCluster

    cluster = LocalCluster.for_settings(settings, args.port, args.ui_port)
    if args.action == "status":
        status = cluster.status()
        print(status)
        return 0 if status.running else 3
    if args.action == "stop":
        print("stopped" if cluster.stop() else "not running", cluster.master_url)
        return 0
    try:
        spec = ClusterSpec(args.workers, args.cores, args.memory)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "start":
        cluster.start(spec, progress=lambda s: print(f"[cluster] {s}", file=sys.stderr, flush=True))
        print(cluster.status())
        print(f"jobs: LAKEHOUSE_SPARK_MASTER={cluster.master_url} (notebooks: spark_master), or spark-submit "
              f"--master {cluster.master_url} --properties-file {cluster.auth_file} (its secret; README: Scale)")
        return 0
    from ..kafka.broker import names_a_broker
    from .cluster_demo import run_cluster_demo

    result = run_cluster_demo(settings, spec, partitions=args.partitions, synthetic_trades=args.synthetic_trades,
                              start_broker=not names_a_broker(args.bootstrap))
    print(result.summary())
    return 0 if result.ok else 1


@command("reset")
def _reset(args: argparse.Namespace, settings: Settings) -> int:
    from .reset import reset, reset_targets

    targets = reset_targets(settings, broker=args.broker)
    if not targets:
        print("nothing to delete")
        return 0
    print("will delete:\n  " + "\n  ".join(str(t) for t in targets))
    if not args.yes:
        if not sys.stdin.isatty():
            print("refusing without --yes (no terminal to ask)", file=sys.stderr)
            return 2
        if input("delete these? [y/N] ").strip().lower() not in ("y", "yes"):
            print("kept everything")
            return 1
    reset(settings, broker=args.broker)
    print("deleted")
    return 0


def _broker_dir(settings: Settings) -> Path:
    """``<data>/kafka``; an older spelling passed the broker's own folder as ``--data-dir``: still honoured."""
    given = settings.data_dir
    if (given / "server.properties").exists() or (given.name == "kafka" and not (given / "kafka").exists()):
        print(f"note: --data-dir is the data root for every command (the broker lives in <data>/kafka); {given} "
              f"is a broker folder, so it is used as one. Next time: --data-dir {given.parent} "
              f"(or --broker-dir {given}).", file=sys.stderr)
        return given
    return settings.broker_dir


@command("broker")
def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from ..kafka.broker import DEFAULT_PORT, LocalKafka

    kafka = LocalKafka(args.broker_dir or _broker_dir(settings), args.port or DEFAULT_PORT)
    if args.action == "start":
        was_running = kafka.is_running()
        kafka.start()
        print(("reusing " if was_running else "started ") + str(kafka.status()))
    elif args.action == "stop":
        print("stopped" if kafka.stop() else "not running", kafka.bootstrap)
    else:
        status = kafka.status()
        print(status)
        return 0 if status.running else 3
    return 0


@command("topic")
def _topic(args: argparse.Namespace, settings: Settings) -> int:
    from ..kafka.topics import ensure_topic

    if args.action == "create":
        created = ensure_topic(settings, settings.topic, settings.partitions, settings.retention_ms)
        print(("created " if created else "exists ") + settings.topic)
    elif args.action == "list":
        from confluent_kafka.admin import AdminClient

        from ..kafka.kafka_conf import make_client, metadata

        admin, errors = make_client(AdminClient, settings)
        meta = metadata(admin, errors, settings, 10)
        for name in sorted(meta.topics):
            if not name.startswith("__"):
                print(f"{name}\tpartitions={len(meta.topics[name].partitions)}")
    else:
        from ..kafka.topics import last_messages

        for msg in last_messages(settings, settings.topic, args.n):
            print(msg.to_line())
    return 0


@command("jars")
def _jars(args: argparse.Namespace, settings: Settings) -> int:
    from .. import jars

    for group in jars.GROUPS:
        out = jars.resolve(group, force=args.force)
        files = list(out.glob("*.jar"))
        print(f"{group}: {len(files)} jars, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _HANDLERS[args.cmd](args, settings_from(args)) or 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (KafkaSecurityError, FlowConflict, EngineError) as exc:  # bad login, other flow, no engine: a line
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
