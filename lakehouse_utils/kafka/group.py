"""Several venues at once: one :class:`~lakehouse_utils.kafka.producer.ProducerThread` per venue, one topic.

:func:`make_producers` builds what ``lakehouse ingest`` / ``demo`` and notebook 01 run for a ``--source`` (one
live venue or several, ``kraken,coinbase``) or a replay through ``--venues`` (``kraken,coinbase,binance``: the
same hour through each venue's replay server at once). Each venue gets its own thread and its own
:class:`~lakehouse_utils.kafka.trade_producer.TradeProducer` (a producer belongs to one sending thread); all
write the same trades topic, keyed ``exchange|symbol``, so each venue's symbol keeps its order in its partition.
One venue gives a plain ProducerThread; several a :class:`ProducerGroup`, which offers the same controls
(start, stop, join, running, status) and sums the counters into one :class:`ProducerStatus` whose ``parts`` are
the venues' own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .event_clock import EventClock
from .gap_fill import make_filler
from .producer import ProducerStatus, ProducerThread
from .source_kinds import LIVE_KINDS, make_source, parse_speed
from .trade_producer import TradeProducer

if TYPE_CHECKING:
    from ..config import Settings

_SUMMED = ("received", "sent", "delivered", "rejected", "dlq_sent", "dlq_delivered", "dead_lettered",
           "delivery_errors", "in_flight", "reconnects", "snapshot_repeats", "backpressure_waits", "snapshot_trades",
           "missing_ids", "gaps_found", "ids_filled", "ids_unfilled")


class ProducerGroup:
    """Several ProducerThreads (one per venue) run and reported as one."""

    def __init__(self, threads: list[ProducerThread]) -> None:
        if not threads:
            raise ValueError("a group needs at least one thread")
        self.threads = threads
        self.name = "+".join(t.name for t in threads)

    def start(self) -> ProducerGroup:
        try:
            for thread in self.threads:
                thread.start()
        except BaseException:
            release(self)
            raise
        return self

    def stop(self, timeout: float = 30.0) -> ProducerStatus:
        for thread in self.threads:
            thread.request_stop()  # every source stops at once; each then flushes on its own thread
        for thread in self.threads:
            thread.stop(timeout)
        return self.status()

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not thread.join(left):
                return False
        return True

    @property
    def running(self) -> bool:
        return any(t.running for t in self.threads)

    def status(self) -> ProducerStatus:
        parts = tuple(t.status() for t in self.threads)
        return combine(self.name, parts)


def combine(name: str, parts: tuple[ProducerStatus, ...]) -> ProducerStatus:
    """One status for several: counters summed, the latest trade, the longest run, every gap."""
    states = {p.state for p in parts}
    state = next((s for s in ("failed", "running", "stopping", "idle", "stopped") if s in states), "finished")
    lasts = [p.last_trade for p in parts if p.last_trade is not None]
    starts = [p.started_at for p in parts if p.started_at is not None]
    errors = [f"{p.source}: {p.error}" for p in parts if p.error]
    blocked = [p.blocked_for for p in parts if p.blocked_for is not None]
    ends = {p.end_reason for p in parts if p.end_reason}
    first = parts[0]
    return replace(
        first, state=state, source=name, **{k: sum(getattr(p, k) for p in parts) for k in _SUMMED},
        msgs_per_s=sum(p.msgs_per_s for p in parts),
        last_trade=max(lasts, key=lambda t: t.event_time) if lasts else None,
        started_at=min(starts, default=None), duration=max(p.duration for p in parts),
        end_reason=" / ".join(sorted(ends)) if ends else None, error="; ".join(errors) or None,
        last_delivery_error=next((p.last_delivery_error for p in parts if p.last_delivery_error), None),
        blocked_s=sum(p.blocked_s for p in parts), blocked_for=max(blocked, default=None),
        broker_problem=next((p.broker_problem for p in parts if p.broker_problem), None),
        gaps={k: v for p in parts for k, v in p.gaps.items()},
        unfilled={k: v for p in parts for k, v in p.unfilled.items()}, parts=parts)


def plan(source: str | list[str], venues: str | list[str] | None = None) -> list[tuple[str, str]]:
    """``(kind, venue)`` per producer thread: ``source`` is a kind or a comma list of live venues; ``venues``
    picks the replay's venues (only with ``replay``)."""
    from ..sources.venues import parse_venues

    kinds = [k.strip() for part in ([source] if isinstance(source, str) else source) for k in part.split(",")
             if k.strip()] or ["replay"]
    if len(kinds) > 1 and not set(kinds) <= set(LIVE_KINDS):
        raise ValueError(f"only live venues run together in --source ({', '.join(LIVE_KINDS)}); "
                         "for several replays: --source replay --venues kraken,coinbase,binance")
    if venues and kinds != ["replay"]:
        raise ValueError("--venues picks the venues a replay goes through (--source replay); "
                         f"live venues are named in --source, e.g. --source {','.join(parse_venues(venues))}")
    if kinds == ["replay"]:
        return [("replay", v) for v in parse_venues(venues)]
    return [(k, k) for k in dict.fromkeys(kinds)]


def thread_name(kind: str, venue: str, alone: bool = True) -> str:
    """The thread's name (the ``source`` header of its messages): the kind; a replay other than Kraken's alone
    (the ``replay`` it always was) says its venue, ``replay:coinbase``."""
    if kind != "replay":
        return kind
    return "replay" if venue == "kraken" and alone else f"replay:{venue}"


def make_producers(settings: Settings, source: str | list[str], pairs: list[str] | None, *,
                   venues: str | list[str] | None = None, file: str | Path | None = None,
                   files: dict[str, Path] | None = None, duration: float | None = None,
                   max_messages: int | None = None, **source_args: Any) -> ProducerThread | ProducerGroup:
    """The thread(s) of ``source`` (see :func:`plan`), not started; each cleans up its own source when it ends.

    ``file`` is the recording of a one-venue replay, ``files`` each venue's; ``source_args`` go to ``make_source``
    (url, speed, record, drop ...). Each thread of a venue with a REST history fills its gaps (``gap_fill.py``,
    ``settings.gap_fill``).
    """
    steps = plan(source, venues)
    if file is not None and len(steps) > 1:
        raise ValueError("--file is the recording of one venue: name one in --venues")
    threads: list[ProducerThread] = []
    cleanups: list[Callable[[], None]] = []
    names = [thread_name(kind, venue, len(steps) == 1) for kind, venue in steps]
    # one recorded hour replayed by several venues as fast as possible: kept together in event time, as live venues
    # are (Gold has one watermark; a replay running ahead would make the others' trades late). Paced replays keep
    # the recorded time themselves.
    unpaced = parse_speed(source_args.get("speed")) == "max"
    clock = EventClock(names) if len(steps) > 1 and unpaced and all(k == "replay" for k, _ in steps) else None
    try:
        for (kind, venue), name in zip(steps, names, strict=True):
            recording = (files or {}).get(venue, file)
            src, cleanup = make_source(kind, pairs, venue=venue, file=recording, **source_args)
            cleanups.append(cleanup)
            filler, stop_rest = make_filler(settings, kind, venue, recording)
            cleanups.append(stop_rest)
            threads.append(ProducerThread(src, TradeProducer.from_settings(settings), name=name, duration=duration,
                                          max_messages=max_messages, cleanup=_both(cleanup, stop_rest), clock=clock,
                                          filler=filler))
    except BaseException:
        for cleanup in cleanups:
            cleanup()
        raise
    return threads[0] if len(threads) == 1 else ProducerGroup(threads)


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def cleanup() -> None:
        try:
            first()
        finally:
            second()

    return cleanup


def release(producing: ProducerThread | ProducerGroup) -> None:
    """Stop what was started and clean up the sources (replay servers) of threads that never started."""
    threads = producing.threads if isinstance(producing, ProducerGroup) else [producing]
    for thread in threads:
        if thread.started_at is None:
            if thread.cleanup is not None:
                thread.cleanup()
        elif thread.running:
            thread.stop()


def describe(producing: ProducerThread | ProducerGroup) -> str:
    """``kraken BTC/USD, binance BTC/USDT``: what each thread reads."""
    threads = producing.threads if isinstance(producing, ProducerGroup) else [producing]
    return ", ".join(f"{t.name} {' '.join(getattr(t.source, 'pairs', []))}" for t in threads)


__all__ = ["ProducerGroup", "combine", "describe", "make_producers", "plan", "release", "thread_name"]
