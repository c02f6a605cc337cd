"""A background thread running a trade source into Kafka.

:class:`ProducerThread` runs any source (``.stream(stop)`` + ``.stats``) into a
:class:`~lakehouse_utils.kafka.trade_producer.TradeProducer` on a background thread and reports a
:class:`ProducerStatus`; the producer does not know which source it serves. Several venues at once run one
thread each (``group.ProducerGroup``).

``TradeProducer``, ``ensure_topics`` and ``PERMANENT_ERRORS`` live in :mod:`lakehouse_utils.kafka.trade_producer`,
and ``make_source`` (the sources by name), ``SOURCE_KINDS`` and ``parse_speed`` in
:mod:`lakehouse_utils.kafka.source_kinds`; all are importable from here too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..sources.gaps import show_ranges
from ..sources.trades import Rejected, Trade, TradeSource
from .event_clock import EventClock
from .source_kinds import SOURCE_KINDS, make_source, parse_speed
from .trade_producer import PERMANENT_ERRORS, TradeProducer, ensure_topics

if TYPE_CHECKING:
    from .gap_fill import GapFiller

log = logging.getLogger(__name__)

_IDLE_POLL_S = 0.1  # the helper thread serves reports when send() has not for this long


# ---- the background thread -------------------------------------------------------------------


@dataclass(frozen=True)
class LastTrade:
    symbol: str
    price: float
    event_time: datetime


@dataclass(frozen=True)
class ProducerStatus:
    """A snapshot of a :class:`ProducerThread` (counters of the source and the producer)."""

    state: str  # idle | running | stopping | finished | stopped | failed
    source: str
    received: int  # items the source yielded (trades + rejects)
    sent: int  # trades accepted for the trades topic
    delivered: int  # trades acknowledged by the broker
    rejected: int  # rejects from the source (bad input)
    dlq_sent: int  # messages accepted for the DLQ (rejects + dead-lettered trades)
    dlq_delivered: int
    dead_lettered: int  # trades the broker refused for good, re-routed to the DLQ
    delivery_errors: int  # messages lost (timed out / purged on stop)
    in_flight: int
    reconnects: int
    snapshot_repeats: int
    msgs_per_s: float  # recent rate of sent trades (the average over the run once it ended)
    last_trade: LastTrade | None
    started_at: datetime | None
    duration: float  # seconds running (so far, or in total once ended)
    end_reason: str | None  # source ended | duration | max_messages | stopped | error
    error: str | None
    last_delivery_error: str | None = None
    backpressure_waits: int = 0  # times send() found librdkafka's queue full and waited (never dropped)
    blocked_s: float = 0.0  # seconds spent waiting so, in all
    blocked_for: float | None = None  # seconds the wait going on now has lasted (None: not blocked)
    broker_problem: str | None = None  # the client's recent error, e.g. the broker is unreachable
    snapshot_trades: int = 0  # trades a venue re-sent on (re)subscribe (Kraken snapshot, Coinbase last_match ...)
    missing_ids: int = 0  # trade ids the venue skipped (consecutive-id venues), all symbols
    gaps: dict[str, Any] = field(default_factory=dict)  # "exchange SYMBOL" -> [(first, last) missing id range]
    gaps_found: int = 0  # gaps the gap fill was told of (kafka/gap_fill.py)
    ids_filled: int = 0  # trades it fetched over REST and sent (header source=rest)
    ids_unfilled: int = 0  # ids it could not fetch (reported: a log line, the ledger ``lakehouse check`` lists)
    unfilled: dict[str, Any] = field(default_factory=dict)  # "exchange SYMBOL" -> [(first, last) not filled]
    parts: tuple[ProducerStatus, ...] = ()  # one per venue when several run at once (ProducerGroup)

    def gaps_text(self, limit: int = 3) -> str:
        """``"kraken BTC/USD 101..103; binance BTC/USDT 7"`` (the first ranges of each symbol)."""
        return "; ".join(f"{key} {show_ranges(ranges, limit)}" for key, ranges in self.gaps.items())

    def blocked_text(self) -> str:
        """Why no trade moves while send() waits: "BLOCKED 12s: queue full (50 waiting); broker unreachable: ..."."""
        if self.blocked_for is None:
            return ""
        why = (f"broker unreachable: {self.broker_problem}" if self.broker_problem
               else "the broker does not acknowledge")
        return (f"BLOCKED {self.blocked_for:.0f}s: queue full ({self.in_flight} waiting), not reading the source; "
                f"{why}")

    @property
    def avg_per_s(self) -> float:
        return self.sent / self.duration if self.duration > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.delivery_errors == 0

    def line(self) -> str:
        last = ""
        if self.last_trade is not None:
            t = self.last_trade
            last = f" | last {t.symbol} {t.price:g} @ {t.event_time.strftime('%H:%M:%S')}"
        extra = ""
        if self.reconnects or self.snapshot_repeats:
            extra += f" reconnects={self.reconnects} repeats={self.snapshot_repeats}"
        if self.missing_ids:
            extra += f" missing_ids={self.missing_ids} ({self.gaps_text(2)})"
        if self.gaps_found:
            extra += f" gaps={self.gaps_found} filled={self.ids_filled} unfilled={self.ids_unfilled}"
        if self.delivery_errors:
            extra += f" ERRORS={self.delivery_errors}"
        if self.in_flight:
            extra += f" in_flight={self.in_flight}"
        if self.backpressure_waits:
            extra += f" blocked={self.backpressure_waits}x/{self.blocked_s:.1f}s"
        error = f" | error: {self.error}" if self.error else ""
        if self.blocked_for is not None:
            error = f" | {self.blocked_text()}{error}"
        each = "".join(f" | {p.source} {p.sent}" + (f" missing_ids={p.missing_ids}" if p.missing_ids else "")
                       for p in self.parts)
        return (
            f"[{self.state}] {self.source}: received={self.received} sent={self.sent} "
            f"delivered={self.delivered} rejected={self.rejected} dlq={self.dlq_sent}{extra} "
            f"{self.msgs_per_s:,.0f} msg/s {self.duration:.1f}s{last}{error}{each}"
        )


class ProducerThread:
    """Run one source into a :class:`TradeProducer` on a daemon thread.

    The thread ends by itself when the source ends, after ``duration`` seconds or after
    ``max_messages`` source items (trades + rejects); it then flushes (up to
    ``flush_timeout``) and calls ``cleanup``. ``stop()`` ends it early the same way.
    """

    def __init__(
        self,
        source: TradeSource,
        producer: TradeProducer,
        *,
        name: str | None = None,
        duration: float | None = None,
        max_messages: int | None = None,
        flush_timeout: float = 30.0,
        cleanup: Callable[[], None] | None = None,
        clock: EventClock | None = None,
        filler: GapFiller | None = None,
    ) -> None:
        self.source = source
        self.filler = filler  # fills the source's id gaps over REST (kafka/gap_fill.py)
        self.clock = clock  # replays of several venues: keep together in event time (kafka/event_clock.py)
        self.producer = producer
        self.name = name or getattr(source, "name", None) or type(source).__name__
        self.duration = duration
        self.max_messages = max_messages
        self.flush_timeout = flush_timeout
        self.cleanup = cleanup
        self.stop_event = threading.Event()
        self.received = 0
        self.rejected = 0
        self.error: str | None = None
        self.end_reason: str | None = None
        self.started_at: datetime | None = None
        self._t0: float | None = None
        self._t1: float | None = None
        self._thread: threading.Thread | None = None
        # set as the very last step of the run; unlike Thread.is_alive() it stays right when a
        # Ctrl-C interrupts a join() in the main thread
        self._done = threading.Event()
        self._state = "idle"  # idle -> running -> finished | stopped | failed ("stopping" is derived)
        self._end_lock = threading.Lock()
        self._rates: deque[tuple[float, int]] = deque()
        self._rate_lock = threading.Lock()

    # ---- control ----------------------------------------------------------------------------

    def start(self) -> ProducerThread:
        """Ensure the topics (raises if the broker is unreachable), then start the thread."""
        if self._thread is not None:
            raise RuntimeError("a ProducerThread runs once; create a new one")
        self.producer.start()
        if self.filler is not None:
            if self.filler.attach(self.source):
                self.filler.start(self.stop_event)
            else:  # a source that does not follow ids (synthetic): nothing to fill
                self.filler.producer.close(0)
                self.filler = None
        self.started_at = datetime.now(UTC)
        self._t0 = time.monotonic()
        self._state = "running"
        self._thread = threading.Thread(target=self._run, name=f"producer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> ProducerStatus:
        """Stop the source, flush for up to ``timeout`` s (then count the rest as failed), join."""
        if self.running:
            self.flush_timeout = min(self.flush_timeout, timeout)
            self._end("stopped")
            self._done.wait(timeout + 10.0)
        return self.status()

    def request_stop(self) -> None:
        """Tell the source to stop, without waiting (``stop()`` waits for the flush)."""
        if self.running:
            self._end("stopped")

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (flush and cleanup included); True if it has."""
        return self._thread is None or self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    # ---- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        timer = None
        if self.duration is not None:
            timer = threading.Timer(self.duration, self._end, ("duration",))
            timer.daemon = True
            timer.start()
        stream: Iterator[Trade | Rejected] | None = None
        loop_done = threading.Event()
        poller = threading.Thread(target=self._serve_reports, args=(loop_done,), name="producer-reports",
                                  daemon=True)
        poller.start()
        try:
            stop, name, limit, clock, filler = self.stop_event, self.name, self.max_messages, self.clock, self.filler
            send, reject = self.producer.send, self.producer.reject
            stream = self.source.stream(stop)
            for item in stream:
                self.received += 1
                if isinstance(item, Trade):
                    if filler is not None and not filler.hold(item.event_time, stop):
                        break
                    if clock is not None and not clock.hold(name, item.event_time, stop, self.producer):
                        break
                    if not send(item, name, stop):
                        break
                else:
                    self.rejected += 1
                    if not reject(item, stop):
                        break
                if limit is not None and self.received >= limit:
                    self._end("max_messages")
                    break
                if stop.is_set():
                    break
            self._end("source ended", stop=False)
        except Exception as exc:  # the thread dies: keep the reason for status()
            log.exception("producer thread failed")
            self.error = f"{type(exc).__name__}: {exc}"
            self._end("error", stop=False)
        finally:
            if self.clock is not None:
                self.clock.leave(self.name)  # the other venues no longer wait for this one
            if timer is not None:
                timer.cancel()
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()  # type: ignore[attr-defined]  # closes the socket of a generator source
            loop_done.set()
            poller.join()
            if self.filler is not None:
                try:
                    self.filler.close(self.flush_timeout)  # its queued fills first (cut short by a stop)
                except Exception as exc:
                    log.exception("gap fill failed to close")
                    self.error = self.error or f"gap fill: {type(exc).__name__}: {exc}"
            try:
                self.producer.close(self.flush_timeout)
            except Exception as exc:
                log.exception("flush failed")
                self.error = self.error or f"flush: {type(exc).__name__}: {exc}"
            if self.cleanup is not None:
                try:
                    self.cleanup()
                except Exception:
                    log.exception("cleanup failed")
            self._t1 = time.monotonic()
            if self.error is not None:
                self._state = "failed"
            else:
                self._state = "stopped" if self.end_reason == "stopped" else "finished"
            self._done.set()

    def _serve_reports(self, done: threading.Event) -> None:
        """Keep delivery counters fresh while the source is quiet (e.g. a calm live market).

        While trades flow, send() serves the reports itself (no GIL ping-pong between two threads).
        """
        while not done.wait(_IDLE_POLL_S):
            if self.producer.unserved_for < _IDLE_POLL_S:
                continue
            try:
                self.producer.poll(0.0, drain=False)
            except Exception:  # the producer closed under us: the loop is ending anyway
                return

    def _end(self, reason: str, stop: bool = True) -> None:
        """Record why the run ends (the first reason wins) and, by default, stop the source."""
        with self._end_lock:
            if self.end_reason is None:
                self.end_reason = reason
        if stop:
            self.stop_event.set()

    # ---- status -----------------------------------------------------------------------------

    def _rate(self, sent: int) -> float:
        """Sent trades per second over the last ~5 s of status() calls (or since the start)."""
        now = time.monotonic()
        with self._rate_lock:
            if self._t1 is not None and self._t0 is not None:
                return sent / (self._t1 - self._t0) if self._t1 > self._t0 else 0.0
            self._rates.append((now, sent))
            while len(self._rates) > 2 and now - self._rates[1][0] >= 5.0:
                self._rates.popleft()
            if len(self._rates) < 2 and self._t0 is not None:
                elapsed = now - self._t0
                return sent / elapsed if elapsed > 0 else 0.0
            (t_a, n_a), (t_b, n_b) = self._rates[0], self._rates[-1]
            return (n_b - n_a) / (t_b - t_a) if t_b > t_a else 0.0

    def status(self) -> ProducerStatus:
        c = self.producer.counters()
        fill = self.filler.counters() if self.filler is not None else {}
        stats = getattr(self.source, "stats", {}) or {}
        last = stats.get("last_trade")
        last_trade = LastTrade(last.symbol, last.price, last.event_time) if isinstance(last, Trade) else None
        if self._t0 is None:
            duration = 0.0
        else:
            duration = (self._t1 if self._t1 is not None else time.monotonic()) - self._t0
        return ProducerStatus(
            state="stopping" if self._state == "running" and self.stop_event.is_set() else self._state,
            source=self.name,
            received=self.received,
            sent=c["sent"],
            delivered=c["delivered"],
            rejected=self.rejected,
            dlq_sent=c["dlq_sent"],
            dlq_delivered=c["dlq_delivered"],
            dead_lettered=c["dead_lettered"],
            delivery_errors=c["delivery_errors"] + fill.get("delivery_errors", 0),
            in_flight=c["in_flight"],
            reconnects=int(stats.get("reconnects", 0) or 0),
            snapshot_repeats=int(stats.get("snapshot_repeats", 0) or 0),
            msgs_per_s=self._rate(c["sent"]),
            last_trade=last_trade,
            started_at=self.started_at,
            duration=duration,
            end_reason=self.end_reason,
            error=self.error,
            last_delivery_error=c["last_error"],
            backpressure_waits=c["backpressure_waits"],
            blocked_s=c["blocked_s"],
            blocked_for=c["blocked_for"],
            broker_problem=c["broker_problem"],
            snapshot_trades=int(stats.get("snapshot_trades", 0) or 0),
            missing_ids=int(stats.get("missing_ids", 0) or 0),
            gaps=dict(stats.get("gaps") or {}),
            gaps_found=fill.get("gaps_found", 0),
            ids_filled=fill.get("ids_filled", 0),
            ids_unfilled=fill.get("ids_unfilled", 0),
            unfilled=fill.get("unfilled", {}),
        )


__all__ = [
    "PERMANENT_ERRORS",
    "LastTrade",
    "ProducerStatus",
    "ProducerThread",
    "SOURCE_KINDS",
    "TradeProducer",
    "ensure_topics",
    "make_source",
    "parse_speed",
]
