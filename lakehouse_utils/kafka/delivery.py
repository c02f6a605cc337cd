"""A producer's delivery bookkeeping: what became of the messages it accepted, how long ``send()`` was
blocked, and the client's last error.

Speed (100k trades/s from one Python thread): trades go through a librdkafka producer that reports failures
only (``delivery.report.only.error``), so no Python runs per delivered message; ``delivered`` is derived from
what was accepted, what librdkafka still holds and what failed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Producer

CLIENT_ERROR_FRESH_S = 30.0  # a client error older than this no longer explains a blocked send()


def error_text(err: KafkaError | Exception) -> str:
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(err)


class DeliveryBook:
    """The counters of :class:`~lakehouse_utils.kafka.trade_producer.TradeProducer`, which inherits them.

    ``counters()``, ``delivered``, ``blocked_s``, ``blocked_for`` and ``broker_problem()`` may be read from any
    thread.  ``sent`` and ``dlq_sent`` are written by the sending thread only and the report callbacks' counters
    under the producer's serve lock (one thread at a time); the rare paths (errors, dead letters, blocking) take
    ``_lock``.
    """

    _producer: Producer | None  # the trades' producer; None once closed (TradeProducer)

    def _init_book(self) -> None:
        self._lock = threading.Lock()  # counters of the rare paths (errors, dead letters, blocking)
        # counters (trades topic unless named dlq_*)
        self.sent = 0  # trades accepted into the queue
        self.dlq_sent = 0  # rejects accepted into the queue for the DLQ
        self.dlq_delivered = 0
        self.dead_lettered = 0  # trades the broker refused for good, re-routed to the DLQ
        self.delivery_errors = 0  # messages lost: timed out, purged on close, DLQ failures
        self.not_accepted = 0  # send() gave up because the stop event was set while blocked
        self.backpressure_waits = 0  # sends that found the queue full
        self._trade_failures = 0  # trades reported failed (dead-lettered or lost)
        self._left_at_close = 0  # trades still in librdkafka when it was let go (no report will come)
        self._delivered = 0  # the highest value ``delivered`` returned
        self._blocked_total = 0.0
        self._blocked_since: float | None = None
        self.last_error: str | None = None
        self.client_error: str | None = None  # the last error of the client itself (not of a message)
        self._client_error_at = 0.0
        self._delivered_at_error = -1  # ``delivered`` when the client last reported an error

    @property
    def in_flight(self) -> int:
        """Accepted messages not yet delivered or reported failed (the producer knows)."""
        raise NotImplementedError

    @property
    def delivered(self) -> int:
        """Trades acknowledged by the broker: accepted - still held by librdkafka - reported failed.

        Exact once everything is settled (after flush/close). While trades flow it can lag a little
        (librdkafka's count also holds pending log/error events), never run ahead, and never decreases.
        """
        sent = self.sent  # read before the queue: a trade accepted in between is then only undercounted
        producer = self._producer
        held = len(producer) if producer is not None else self._left_at_close
        value = sent - held - self._trade_failures  # failures after held: a report served in between counts twice
        with self._lock:
            if value > self._delivered:
                self._delivered = value
            return self._delivered

    @property
    def blocked_s(self) -> float:
        """Seconds send() spent waiting for room in the queue (including a wait going on now)."""
        since = self._blocked_since
        return self._blocked_total + (time.monotonic() - since if since is not None else 0.0)

    @property
    def blocked_for(self) -> float | None:
        """Seconds the wait for room going on now has lasted (``None``: send() is not blocked)."""
        since = self._blocked_since
        return None if since is None else time.monotonic() - since

    def broker_problem(self, within_s: float = CLIENT_ERROR_FRESH_S) -> str | None:
        """The client's last error (e.g. ``_TRANSPORT: ... Connection refused``) while it still explains a stall:
        it is recent (``within_s``), or the broker has acknowledged nothing since.  Else None.

        Age alone does not say the problem is over: librdkafka reports a broker it cannot reach at a reconnect
        attempt, but suppresses an error identical to the last one ("N identical error(s) suppressed"), so a broker
        down for a minute may be reported once.
        """
        error = self.client_error
        if error is None:
            return None
        if time.monotonic() - self._client_error_at < within_s or self.delivered <= self._delivered_at_error:
            return error
        return None

    def counters(self) -> dict[str, Any]:
        delivered = self.delivered
        problem = self.broker_problem()  # before taking _lock: it may read ``delivered``, which takes it too
        with self._lock:
            return {
                "sent": self.sent,
                "delivered": delivered,
                "dlq_sent": self.dlq_sent,
                "dlq_delivered": self.dlq_delivered,
                "dead_lettered": self.dead_lettered,
                "delivery_errors": self.delivery_errors,
                "not_accepted": self.not_accepted,
                "backpressure_waits": self.backpressure_waits,
                "blocked_s": self.blocked_s,
                "blocked_for": self.blocked_for,
                "in_flight": self.in_flight,
                "last_error": self.last_error,
                "broker_problem": problem,
            }

    # ---- what the producer reports ----------------------------------------------------------------------

    def _blocked(self) -> float:
        """A send found the queue full: the wait starts now (returned, for :meth:`_unblocked`)."""
        since = self._blocked_since = time.monotonic()
        with self._lock:
            self.backpressure_waits += 1
        return since

    def _unblocked(self, since: float) -> None:
        with self._lock:
            self._blocked_total += time.monotonic() - since
            self._blocked_since = None

    def _gave_up(self) -> None:
        """A blocked send stopped waiting (stop event or deadline): its message was not accepted."""
        with self._lock:
            self.not_accepted += 1

    def _lost(self, err: KafkaError, prefix: str = "") -> None:
        """A message failed for good and did not go to the DLQ."""
        with self._lock:
            self.delivery_errors += 1
            self.last_error = prefix + error_text(err)

    def _on_client_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (run inside poll/flush): the broker down, a refused login ...

        ``_ALL_BROKERS_DOWN`` only sums up the errors before it: a fresh specific one (``_TRANSPORT: <address>:
        Connection refused``) says more, so it is kept (and counts as fresh again).
        """
        now = time.monotonic()
        summary = err.code() == KafkaError._ALL_BROKERS_DOWN
        fresh = self.client_error is not None and now - self._client_error_at < CLIENT_ERROR_FRESH_S
        if not (summary and fresh and not (self.client_error or "").startswith("_ALL_BROKERS_DOWN")):
            self.client_error = error_text(err)
        self._client_error_at = now
        self._delivered_at_error = self.delivered

    def _on_dlq_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.dlq_delivered += 1  # callbacks run under _serve_lock: no other writer
            return
        self._lost(err, "DLQ ")


__all__ = ["CLIENT_ERROR_FRESH_S", "DeliveryBook", "error_text"]
