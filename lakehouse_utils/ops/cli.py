"""The ``lakehouse`` command: broker, topics, ingestion, the medallion jobs and the demo.

Flags keep the seed's names (``--bootstrap``, ``--topic``, ``--out``, ``--checkpoint``,
``--startingOffsets``, ``--trigger``, ``--bronze``, ``--silver``, ``--gold``, ``--pair``); every flag
not given falls back to ``LAKEHOUSE_*`` environment variables, then to the defaults in ``Settings``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import FlowConflict, Settings
from ..engine.server import EngineError
from ..kafka.kafka_conf import KafkaSecurityError
from .cli_parser import _HANDLERS, build_parser, command


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
