"""``lakehouse ingest``: run a trade source into Kafka with a live progress line and a summary.

cli.py wires it as ``ingest.add_arguments(subparser)`` then ``ingest.run(args, settings)``;
``--bootstrap`` / ``--topic`` / ``--data-dir`` are the common flags cli.py adds itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from confluent_kafka import KafkaException

from ..config import Settings
from ..kafka.kafka_conf import KafkaSecurityError
from ..kafka.producer import SOURCE_KINDS, ProducerStatus, ProducerThread, TradeProducer, make_source, parse_speed
from ..procs import reachable
from ..progress import ProgressLine

DEFAULT_PAIRS = ["BTC/USD"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=SOURCE_KINDS, default="replay",
                   help="kraken (live wss://ws.kraken.com/v2) | replay (a recording over a local "
                        "WebSocket, default) | synthetic (seeded random walk)")
    p.add_argument("--pair", action="append", dest="pairs", metavar="PAIR",
                   help="BASE/QUOTE, repeatable (default BTC/USD; XBT/USDT is read as BTC/USDT)")
    p.add_argument("--file", default=None, help="replay: recording (JSONL, .gz ok; default the bundled real hour)")
    p.add_argument("--speed", default="max", help="replay/synthetic: 'max' or a factor (1 = real time)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until the "
                                                                 "source ends or Ctrl-C)")
    p.add_argument("--record", default=None, help="kraken/replay: append every frame received to this JSONL file")
    p.add_argument("--url", default=None, help="kraken: WebSocket URL (default wss://ws.kraken.com/v2)")
    p.add_argument("--seed", type=int, default=42, help="synthetic: random seed")
    p.add_argument("--n-trades", dest="n_trades", type=int, default=None, help="synthetic: stop after N trades")


def summary(status: ProducerStatus) -> str:
    lines = [
        f"ingest {status.state} ({status.end_reason or '-'}): source={status.source}",
        f"  received        {status.received:>10,}",
        f"  sent            {status.sent:>10,}",
        f"  rejected        {status.rejected:>10,}  (to the DLQ)",
        f"  delivered       {status.delivered:>10,}",
        f"  dlq delivered   {status.dlq_delivered:>10,}",
        f"  delivery errors {status.delivery_errors:>10,}",
        f"  reconnects      {status.reconnects:>10,}  (snapshot repeats {status.snapshot_repeats:,})",
        f"  duration        {status.duration:>10.1f} s  ({status.avg_per_s:,.0f} trades/s)",
    ]
    if status.dead_lettered:
        lines.append(f"  dead-lettered   {status.dead_lettered:>10,}  (refused by Kafka, sent to the DLQ)")
    if status.last_delivery_error:
        lines.append(f"  last error      {status.last_delivery_error}")
    if status.error:
        lines.append(f"  FAILED: {status.error}")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Ingest until the source ends, ``--duration`` passes or Ctrl-C.

    Returns 0 if every message reached Kafka, 1 on delivery errors or a failed source, 2 if Kafka is unreachable.
    """
    out = out or sys.stdout
    pairs = args.pairs or ([] if args.source == "replay" else DEFAULT_PAIRS)  # a replay: every symbol recorded
    speed = parse_speed(args.speed)
    timeout = getattr(args, "connect_timeout", 10.0)
    hint = "start the embedded broker with `lakehouse broker start`, or pass --bootstrap"
    # probe the port quietly first: librdkafka would log a failed connect every 50 ms before giving up
    deadline = time.monotonic() + timeout
    while not reachable(settings.bootstrap):
        if time.monotonic() >= deadline:
            print(f"cannot reach Kafka at {settings.bootstrap}: nothing accepts connections there\n{hint}",
                  file=out, flush=True)
            return 2
        time.sleep(0.25)
    producer = TradeProducer.from_settings(settings)
    try:
        producer.start(timeout=timeout)  # ensures the topics
    except KafkaSecurityError as exc:  # refused credentials / TLS: the broker is there, the hint would mislead
        print(f"cannot use Kafka at {settings.bootstrap}: {exc}", file=out, flush=True)
        return 2
    except KafkaException as exc:
        print(f"cannot reach Kafka at {settings.bootstrap}: {exc}\n{hint}", file=out, flush=True)
        return 2
    source, cleanup = make_source(args.source, pairs, url=args.url, file=args.file, speed=speed,
                                  record=args.record, seed=args.seed, n_trades=args.n_trades)
    thread = ProducerThread(source, producer, name=args.source, duration=args.duration, cleanup=cleanup)
    print(f"ingest {args.source} {', '.join(getattr(source, 'pairs', pairs))} -> {settings.bootstrap} "
          f"topic {settings.topic} (rejects -> {settings.dlq_topic})", file=out, flush=True)
    progress = ProgressLine(out, every=0.5, log_every=5.0)
    try:
        thread.start()
    except BaseException:
        cleanup()
        raise
    try:
        while not thread.join(0.25):
            progress.update(thread.status().line())
    except KeyboardInterrupt:
        progress.update("stopping (Ctrl-C): flushing ...", force=True)
        thread.stop()
    finally:
        if thread.running:  # any other exception above: never leave the thread behind
            thread.stop()
    status = thread.status()
    progress.done(status.line())
    print(summary(status), file=out, flush=True)
    return 0 if status.ok and not thread.running and status.in_flight == 0 else 1


__all__ = ["add_arguments", "run", "summary"]
