"""The ``lakehouse`` command's arguments: one subparser per command, and the registry of their handlers.

Flags keep the seed's names (``--bootstrap``, ``--topic``, ``--out``, ``--checkpoint``,
``--startingOffsets``, ``--trigger``, ``--bronze``, ``--silver``, ``--gold``, ``--pair``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..config import Settings

DESCRIPTION = "The lakehouse command: broker, topics, ingestion, the medallion jobs and the demo."

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
    parser = argparse.ArgumentParser(prog="lakehouse", description=DESCRIPTION)
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
