"""The ``lakehouse`` command: broker, topics, ingestion, the medallion jobs and the demo.

Flags keep the seed's names (``--bootstrap``, ``--topic``, ``--out``, ``--checkpoint``,
``--startingOffsets``, ``--trigger``, ``--bronze``, ``--silver``, ``--gold``, ``--pair``); every flag
not given falls back to ``LAKEHOUSE_*`` environment variables, then to the defaults in ``Settings``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .config import Settings

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lakehouse", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("broker", help="embedded Kafka (KRaft) broker: start | stop | status")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, default=None, help="client port (default 19092; controller uses port+1)")
    p.add_argument("--data-dir", dest="broker_dir", default=None, help="broker data dir (default <data>/kafka)")

    p = sub.add_parser("topic", help="topics: create | list | consume (peek at the last messages)")
    p.add_argument("action", choices=["create", "list", "consume"])
    _common(p)
    p.add_argument("-n", type=int, default=5, help="consume: how many of the last messages")
    p.add_argument("--partitions", type=int, default=None)

    p = sub.add_parser("jars", help="resolve the pinned connector jars into the local cache (needs Maven once)")
    p.add_argument("--force", action="store_true")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    keys = ("data_dir", "bootstrap", "topic", "partitions")
    return Settings.from_env(**{k: getattr(args, k) for k in keys if hasattr(args, k)})


@command("broker")
def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from .broker import DEFAULT_PORT, LocalKafka

    kafka = LocalKafka(args.broker_dir or settings.broker_dir, args.port or DEFAULT_PORT)
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
    from . import broker

    if args.action == "create":
        created = broker.ensure_topic(settings.bootstrap, settings.topic, settings.partitions, settings.retention_ms)
        print(("created " if created else "exists ") + settings.topic)
    elif args.action == "list":
        from confluent_kafka.admin import AdminClient

        meta = AdminClient({"bootstrap.servers": settings.bootstrap}).list_topics(timeout=10)
        for name in sorted(meta.topics):
            if not name.startswith("__"):
                print(f"{name}\tpartitions={len(meta.topics[name].partitions)}")
    else:
        from .topics import last_messages

        for msg in last_messages(settings.bootstrap, settings.topic, args.n):
            print(msg.to_line())
    return 0


@command("jars")
def _jars(args: argparse.Namespace, settings: Settings) -> int:
    from . import jars

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


if __name__ == "__main__":
    sys.exit(main())
