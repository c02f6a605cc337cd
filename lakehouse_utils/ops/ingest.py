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
from ..kafka.group import ProducerGroup, describe, make_producers, release
from ..kafka.history import History, HistoryStep, plan_history
from ..kafka.kafka_conf import KafkaSecurityError
from ..kafka.producer import SOURCE_KINDS, ProducerStatus, ProducerThread, TradeProducer, parse_speed
from ..kafka.source_kinds import LIVE_KINDS
from ..procs import reachable
from ..progress import ProgressLine
from ..sources.gaps import show_ranges
from ..sources.venues import VENUES


def source_arg(text: str) -> str:
    """``--source``: one kind, or a comma list of live venues (one producer thread each)."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in SOURCE_KINDS]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"unknown source {','.join(unknown) or text!r}: choose "
                                         f"{' | '.join(SOURCE_KINDS)} (live venues may be listed: kraken,binance)")
    return ",".join(kinds)


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """``--source``, ``--venues``, ``--pair``, ``--file``, ``--speed``: the flags ``ingest`` and ``demo`` share."""
    p.add_argument("--source", type=source_arg, default="replay", metavar="SOURCE",
                   help=f"{' | '.join(LIVE_KINDS)} (live; several comma-separated run at once, a producer thread "
                        "each) | replay (a recording through a venue's protocol over a local WebSocket, default) | "
                        "synthetic (seeded random walk)")
    p.add_argument("--venues", default=None, metavar="V1,V2",
                   help=f"replay: the venues whose replay servers play the recording at once ({', '.join(VENUES)}; "
                        "default kraken). Without --file each plays the bundled hour in its own wire format")
    p.add_argument("--pair", action="append", dest="pairs", metavar="PAIR",
                   help="BASE/QUOTE, repeatable (default: the venue's BTC/USD, Binance's BTC/USDT; XBT/USDT is read "
                        "as BTC/USDT); binance:BTC/USDT names the one venue that takes it")
    p.add_argument("--file", default=None, help="replay: recording of one venue, in its wire format (JSONL, .gz ok; "
                                                "default the bundled real hour)")
    p.add_argument("--speed", default="max", help="replay/synthetic: 'max' or a factor (1 = real time)")
    p.add_argument("--rate-profile", dest="rate_profile", choices=("steady", "soak"), default="steady",
                   help="synthetic: steady, or soak (in every 5 minutes a 15 s burst at x5 and a quiet minute)")
    p.add_argument("--drop", type=drop_arg, default=None, metavar="AT:AWAY",
                   help="replay: the server drops the connection AT seconds of recording time in, and the recording "
                        "goes on for AWAY seconds while the client is away (a gap for gap fill to fill)")
    p.add_argument("--no-gap-fill", dest="gap_fill", action="store_const", const=False, default=None,
                   help="do not fetch skipped trade ids over REST (default: fill them; README: Gap fill)")
    p.add_argument("--rest-url", dest="rest_url", default=None, metavar="URL",
                   help="gap fill's REST API (default: the venue's live one; a replay: a local REST replay server)")


def drop_arg(text: str) -> tuple[float, float]:
    """``--drop 336:60`` -> (336.0, 60.0)."""
    at, sep, away = text.partition(":")
    try:
        value = (float(at), float(away))
    except ValueError:
        value = None
    if not sep or value is None or value[0] < 0 or value[1] <= 0:
        raise argparse.ArgumentTypeError(f"expected AT:AWAY in seconds (e.g. 336:60), got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until the "
                                                                 "source ends or Ctrl-C)")
    p.add_argument("--record", default=None, help="live/replay: append every frame received to this JSONL file "
                                                  "(one venue)")
    p.add_argument("--url", default=None, help="live: the venue's WebSocket URL (default: the venue's own)")
    p.add_argument("--seed", type=int, default=42, help="synthetic: random seed")
    p.add_argument("--n-trades", dest="n_trades", type=int, default=None, help="synthetic: stop after N trades")
    p.add_argument("--history", default=None, metavar="6h|ISO",
                   help="first fetch the trades since then over each venue's REST API (resumable, header "
                        "source=rest), then start the feed; a replay's 30m starts it 30 minutes into the recording "
                        "and fetches those 30 minutes (notebook 01's history)")


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
        f"  snapshot trades {status.snapshot_trades:>10,}  (re-sent on subscribe; Silver keeps each trade once)",
        f"  missing ids     {status.missing_ids:>10,}" + (f"  ({status.gaps_text(5)})" if status.missing_ids else
                                                          "  (no trade id skipped)"),
        f"  duration        {status.duration:>10.1f} s  ({status.avg_per_s:,.0f} trades/s)",
    ]
    if status.gaps_found:
        lines.append(f"  gap fill        {status.ids_filled:>10,}  trades fetched over REST for {status.gaps_found:,} "
                     f"gap(s) (header source=rest); {status.ids_unfilled:,} ids NOT filled"
                     + "".join(f"; {k} {show_ranges(v, 5)}" for k, v in status.unfilled.items()))
    if status.dead_lettered:
        lines.append(f"  dead-lettered   {status.dead_lettered:>10,}  (refused by Kafka, sent to the DLQ)")
    if status.last_delivery_error:
        lines.append(f"  last error      {status.last_delivery_error}")
    if status.error:
        lines.append(f"  FAILED: {status.error}")
    for part in status.parts:  # several venues: each one's own counts
        gaps = f", missing ids {part.missing_ids:,} ({part.gaps_text(3)})" if part.missing_ids else ""
        if part.gaps_found:
            gaps += f", filled {part.ids_filled:,}, unfilled {part.ids_unfilled:,}"
        lines.append(f"  {part.source:<17} sent {part.sent:,}, delivered {part.delivered:,}, rejected "
                     f"{part.rejected:,}, reconnects {part.reconnects:,}, snapshot trades {part.snapshot_trades:,}"
                     f"{gaps}")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Ingest until the source ends, ``--duration`` passes or Ctrl-C.

    Returns 0 if every message reached Kafka, 1 on delivery errors or a failed source, 2 if Kafka is unreachable.
    """
    out = out or sys.stdout
    pairs = args.pairs or []  # a replay: every symbol recorded; a live venue: its default pair
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
    producer.close(0)  # it only made the topics: each venue's thread has its own producer
    try:
        start_s = 0.0
        if getattr(args, "history", None):
            steps, start_s = plan_history(args.source, args.venues, pairs, args.history, args.file)
        thread: ProducerThread | ProducerGroup = make_producers(
            settings, args.source, pairs, venues=args.venues, file=args.file, duration=args.duration, url=args.url,
            speed=speed, record=args.record, seed=args.seed, n_trades=args.n_trades, drop=args.drop, start_s=start_s,
            profile=args.rate_profile)
    except ValueError as exc:  # a venue or pair the sources cannot serve: one line, not a traceback
        print(f"error: {exc}", file=out, flush=True)
        return 2
    if getattr(args, "history", None) and not _history(settings, steps, out):
        release(thread)
        return 1
    print(f"ingest {describe(thread)} -> {settings.bootstrap} topic {settings.topic} "
          f"(rejects -> {settings.dlq_topic})", file=out, flush=True)
    progress = ProgressLine(out, every=0.5, log_every=5.0)
    try:
        thread.start()
    except BaseException:
        release(thread)
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


def _history(settings: Settings, steps: list[HistoryStep], out: TextIO) -> bool:
    """Fetch the history before the feed starts, with a progress line; False if it stopped early (said why)."""
    history = History(settings, steps).start()
    progress = ProgressLine(out, every=0.5, log_every=5.0)
    try:
        while not history.join(0.25):
            progress.update(history.line().splitlines()[-1] if history.line() else "history: starting")
    except KeyboardInterrupt:
        progress.update("stopping (Ctrl-C) ...", force=True)
        history.stop()
    progress.done(history.line())
    if not history.ok:
        print("history NOT finished: the same command again resumes it", file=out, flush=True)
    return history.ok


__all__ = ["add_arguments", "add_source_arguments", "run", "source_arg", "summary"]
