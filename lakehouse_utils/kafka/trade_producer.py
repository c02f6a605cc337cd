"""Trades into Kafka: an idempotent, backpressured producer for trades and their dead letters.

:class:`TradeProducer` writes one JSON message per :class:`~lakehouse_utils.sources.trades.Trade`
(key = ``exchange|symbol``, e.g. ``kraken|BTC/USD``; headers = source + schema_version) to the trades topic and
every :class:`~lakehouse_utils.sources.trades.Rejected` input to the dead-letter topic ``<topic>.dlq``
(key = reason code). On a topic of several partitions each (exchange, symbol) goes to one partition (the murmur2
hash of its key, as Java clients place it), so a venue's trades of a symbol keep their order. It is idempotent
(``acks=all``, no duplicates on retry), compresses with zstd and keeps librdkafka's queue bounded: when the
queue is full (say the broker is down), :meth:`TradeProducer.send` blocks the caller instead of buffering
without limit, and never drops a message it accepted. A trade the broker refuses for good (e.g.
``MSG_SIZE_TOO_LARGE``) goes to the dead-letter topic with that reason.

What became of the accepted messages (counters, ``delivered``, time blocked, the client's last error) is kept
by :class:`~lakehouse_utils.kafka.delivery.DeliveryBook`, which :class:`TradeProducer` inherits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer

from ..sources.trades import SCHEMA_VERSION, Rejected, Trade, kafka_key
from .delivery import DeliveryBook, error_text
from .kafka_conf import ClientConf, Conn, client_config, connection
from .topics import ensure_topic

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("lakehouse_utils.kafka.producer")
# librdkafka's own log lines (routed through Python logging): errors only by default, as its
# warnings are mostly transient retries (e.g. "Coordinator load in progress" right after a start).
_rdkafka_log = logging.getLogger("lakehouse_utils.kafka.producer.librdkafka")
if _rdkafka_log.level == logging.NOTSET:
    _rdkafka_log.setLevel(logging.ERROR)

# Errors where the message itself is at fault: retrying cannot help, so it goes to the DLQ.
PERMANENT_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_TIMESTAMP,
})

_BACKOFF_POLL_S = 0.05  # how long a blocked send() waits for room before retrying
# send() serves librdkafka's reports (failures, logs) itself every this many messages: a poll per
# message costs a GIL round trip, and there is nothing to serve while all goes well.
SERVE_EVERY_MSGS = 10_000
_QUEUED, _DEAD, _STOPPED = "queued", "dead-lettered", "stopped"  # outcomes of TradeProducer._produce

Callback = Callable[[KafkaError | None, Any], None]
Headers = list[tuple[str, bytes]]


class TradeProducer(DeliveryBook):
    """Idempotent Kafka producer for trades (``topic``) and rejects (``dlq_topic``).

    ``send``/``reject``/``flush``/``close`` belong to one thread (the sending one); ``counters``,
    ``in_flight``, ``delivered`` and ``poll(drain=False)`` may be called from any thread.
    Speed (100k trades/s from one Python thread): the trades' producer reports failures only
    (``delivery.report.only.error``), so no Python runs per delivered message (see ``delivery``); dead letters
    go through a second producer, created on the first one, with a report each.
    """

    def __init__(
        self,
        conn: Conn,
        topic: str,
        dlq_topic: str | None = None,
        *,
        queue_max_messages: int = 100_000,
        queue_max_kbytes: int = 32_768,
        compression: str = "zstd",
        linger_ms: int = 20,
        message_timeout_ms: int = 300_000,
        partitions: int = 1,
        retention_ms: int | None = None,
        stop: threading.Event | None = None,
        ensure_topics: bool = True,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.connection = connection(conn)  # Settings (with Kafka security), KafkaConnection, or "host:port"
        self.bootstrap = self.connection.bootstrap
        self.topic = topic
        self.dlq_topic = dlq_topic or f"{topic}.dlq"
        self.partitions = partitions
        self.retention_ms = retention_ms
        self.stop_event = stop
        self.config = ClientConf({  # its repr shows *** for a password
            **client_config(self.connection),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": compression,
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": queue_max_messages,
            "queue.buffering.max.kbytes": queue_max_kbytes,
            "message.timeout.ms": message_timeout_ms,
            "client.id": "lakehouse-trade-producer",
            # a symbol's partition as the Java client (and Spark's Kafka sink) picks it: murmur2 of the key.
            # librdkafka's own default (CRC32) sent BTC/USD, ETH/USD and SOL/USD all to partition 0 of 3.
            "partitioner": "murmur2_random",
            "logger": _rdkafka_log,  # not raw stderr lines
            "error_cb": self._on_client_error,  # e.g. the broker is unreachable: kept for the status line
            **(config or {}),
        })
        # trades: failures are reported, successes are not (see ``delivered``)
        self._producer: Producer | None = Producer({**self.config, "delivery.report.only.error": True})
        self._dlq_producer: Producer | None = None  # made on the first dead letter; reports every message
        self._init_book()  # the counters (delivery.DeliveryBook)
        # Reports run inside poll()/flush(): one thread at a time, so the counters they bump need no lock.
        self._serve_lock = threading.Lock()
        self._unserved = 0  # messages sent since reports were last served
        self._served_at = time.monotonic()
        self._per_source: dict[str, tuple[Headers, Callback]] = {}  # headers and report callback, built once
        self._keys: dict[tuple[str, str], str] = {}  # (exchange, symbol) -> message key, built once
        self._failed: deque[Rejected] = deque()  # permanent failures waiting to go to the DLQ
        self._started = not ensure_topics

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> TradeProducer:
        kwargs.setdefault("partitions", settings.partitions)
        kwargs.setdefault("retention_ms", settings.retention_ms)
        return cls(settings, settings.topic, settings.dlq_topic, **kwargs)

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> TradeProducer:
        """Create the trades and dead-letter topics if missing (once)."""
        if not self._started:
            ensure_topic(self.connection, self.topic, self.partitions, self.retention_ms, timeout=timeout)
            ensure_topic(self.connection, self.dlq_topic, 1, self.retention_ms, timeout=timeout)
            self._started = True
        return self

    @property
    def closed(self) -> bool:
        return self._producer is None

    @property
    def in_flight(self) -> int:
        """Accepted messages not yet delivered or reported failed (plus failures awaiting the DLQ)."""
        return sum(len(p) for p in self._producers()) + len(self._failed)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until every accepted message is delivered or failed (DLQ hand-offs included).

        Returns how many are still in flight when ``timeout`` ran out (0 = all settled).
        """
        self._require_open()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._serve_lock:
                for producer in self._producers():
                    producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            self._drain_failed(deadline)
            remaining = self.in_flight
            if remaining == 0 or time.monotonic() >= deadline:
                return remaining

    def close(self, timeout: float = 30.0) -> int:
        """Flush for up to ``timeout`` s, then purge what is left, reporting it as failed.

        Returns once every accepted message is delivered or counted in ``delivery_errors``;
        the return value is how many were purged. Idempotent.
        """
        if self._producer is None:
            return 0
        producer = self._producer
        remaining = self.flush(timeout)
        purged = 0
        if remaining:
            with self._lock:
                before = self.delivery_errors
                self.delivery_errors += len(self._failed)  # the DLQ is unreachable too: lost
            self._failed.clear()
            for p in self._producers():
                p.purge(in_queue=True, in_flight=True, blocking=False)
            deadline = time.monotonic() + 5.0
            while True:  # purged messages get their (error) delivery reports here
                self._serve(0.1)
                if not any(len(p) for p in self._producers()) or time.monotonic() > deadline:
                    break
            purged = self.delivery_errors - before
            log.warning("closed with %d undelivered messages (last error: %s)", purged, self.last_error)
        producers = self._producers()
        self._left_at_close = len(producer)
        self._producer = self._dlq_producer = None
        for p in producers:
            if not len(p):
                with contextlib.suppress(Exception):
                    p.close()  # release librdkafka's threads and sockets now
        return purged

    def __enter__(self) -> TradeProducer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sending ----------------------------------------------------------------------------

    def send(self, trade: Trade, source: str, stop: threading.Event | None = None) -> bool:
        """Queue one trade; blocks while the queue is full.

        Returns True once accepted (or, if Kafka refuses it for good, handed to the DLQ),
        False if the stop event was set while waiting for room.
        """
        producer = self._producer
        if producer is None:
            raise RuntimeError("the producer is closed")
        headers, on_error = self._per_source.get(source) or self._source_args(source)
        value = trade.to_json()
        key = self._keys.get((trade.exchange, trade.symbol)) or self._key(trade)
        try:  # the common case, inline; a full queue or a refused message takes _produce
            # (topic, value, key, partition, on_delivery) positionally, as documented: keyword parsing
            # costs ~0.7 us per call; -1 = RD_KAFKA_PARTITION_UA, the partitioner picks (by key)
            producer.produce(self.topic, value, key, -1, on_error, headers=headers)
            outcome = _QUEUED
        except (BufferError, KafkaException):
            outcome = self._produce(producer, self.topic, key, value, headers, on_error,
                                    stop or self.stop_event, source=source)
        if outcome == _QUEUED:
            self.sent += 1  # only the sending thread writes it
        self._unserved += 1
        if self._unserved >= SERVE_EVERY_MSGS:
            self._serve(0.0)
        if self._failed:
            self._drain_failed()
        return outcome != _STOPPED

    def reject(self, rejected: Rejected, stop: threading.Event | None = None) -> bool:
        """Queue one reject for the dead-letter topic (key = its reason code)."""
        self._require_open()
        accepted = self._send_dlq(rejected, stop or self.stop_event)
        self._serve(0.0)
        self._drain_failed()
        return accepted

    def poll(self, timeout: float = 0.0, *, drain: bool = True) -> None:
        """Serve delivery reports; ``drain`` also hands permanent failures to the DLQ.

        Only the sending thread should drain; a helper thread keeping the counters fresh
        while the source is idle polls with ``drain=False``.
        """
        if self._producer is not None:
            self._serve(timeout)
            if drain:
                self._drain_failed()

    @property
    def unserved_for(self) -> float:
        """Seconds since reports were last served."""
        return time.monotonic() - self._served_at

    # ---- internals --------------------------------------------------------------------------

    def _require_open(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the producer is closed")
        return self._producer

    def _producers(self) -> list[Producer]:
        return [p for p in (self._producer, self._dlq_producer) if p is not None]

    def _serve(self, timeout: float) -> None:
        """Run the reports that are ready (waiting up to ``timeout`` for one), one thread at a time."""
        with self._serve_lock:
            self._unserved = 0
            producer, dlq = self._producer, self._dlq_producer
            if producer is not None:
                producer.poll(timeout)
            if dlq is not None:
                dlq.poll(0)
            self._served_at = time.monotonic()

    def _key(self, trade: Trade) -> str:
        if len(self._keys) >= 4096:
            self._keys.clear()
        key = self._keys[(trade.exchange, trade.symbol)] = kafka_key(trade.exchange, trade.symbol)
        return key

    def _source_args(self, source: str) -> tuple[Headers, Callback]:
        """Headers and failure callback for trades of ``source`` (reports carry no headers), cached."""

        def on_error(err: KafkaError | None, msg: Any) -> None:
            if err is not None:  # only failures are reported
                self._on_trade_error(source, err, msg)

        headers = [("source", source.encode("utf-8")), ("schema_version", str(SCHEMA_VERSION).encode())]
        args = self._per_source[source] = (headers, on_error)
        return args

    def _send_dlq(self, rejected: Rejected, stop: threading.Event | None, deadline: float | None = None) -> bool:
        # a reason quotes the input (e.g. "unknown_side:<side>"), which may hold a lone surrogate
        code = rejected.code.encode("utf-8", "backslashreplace")
        headers = [
            ("source", rejected.source.encode("utf-8", "backslashreplace")),
            ("schema_version", str(SCHEMA_VERSION).encode()),
            ("reason", code),
        ]
        if self._dlq_producer is None:
            self._dlq_producer = Producer(self.config)
        outcome = self._produce(
            self._dlq_producer, self.dlq_topic, code, rejected.to_json(), headers,
            self._on_dlq_delivery, stop, deadline=deadline, dlq=True,
        )
        if outcome == _QUEUED:
            self.dlq_sent += 1  # only the sending thread writes it
        return outcome == _QUEUED

    def _produce(
        self,
        producer: Producer,
        topic: str,
        key: str | bytes,
        value: str,
        headers: Headers,
        on_delivery: Callback,
        stop: threading.Event | None,
        *,
        deadline: float | None = None,
        source: str = "",
        dlq: bool = False,
    ) -> str:
        """produce() with backpressure: on a full queue, serve reports and retry until room or stop."""
        blocked_since: float | None = None
        try:
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                    return _QUEUED
                except BufferError:
                    if blocked_since is None:
                        blocked_since = self._blocked()
                    if (stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() > deadline):
                        self._gave_up()
                        return _STOPPED
                    self._serve(_BACKOFF_POLL_S)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                    if dlq or err is None or err.code() not in PERMANENT_ERRORS:
                        raise
                    # refused before queueing (e.g. larger than message.max.bytes): dead-letter it now
                    self._dead_letter(err, value, source)
                    return _DEAD
        finally:
            if blocked_since is not None:
                self._unblocked(blocked_since)

    def _dead_letter(self, err: KafkaError, value: str | bytes | None, source: str) -> None:
        raw = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else (value or "")
        rejected = Rejected(reason=f"produce_error:{err.name()} {err.str()}"[:300], raw=raw,
                            source=source or "producer", received_at=datetime.now(UTC))
        with self._lock:
            self.dead_lettered += 1
            self.last_error = error_text(err)
        self._failed.append(rejected)

    def _drain_failed(self, deadline: float | None = None) -> None:
        """Send trades that failed for good to the DLQ (outside delivery callbacks)."""
        while self._failed and self._producer is not None:
            rejected = self._failed[0]
            if not self._send_dlq(rejected, self.stop_event if deadline is None else None, deadline):
                return  # no room before stop/deadline: stays pending (close() counts it as lost)
            self._failed.popleft()

    def _on_trade_error(self, source: str, err: KafkaError, msg: Any) -> None:
        self._trade_failures += 1  # callbacks run under _serve_lock: no other writer
        if err.code() in PERMANENT_ERRORS:
            self._dead_letter(err, msg.value(), source)
            return
        self._lost(err)


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the trades topic and its dead-letter topic if missing."""
    conn = connection(settings)
    ensure_topic(conn, settings.topic, settings.partitions, settings.retention_ms, timeout=timeout)
    ensure_topic(conn, settings.dlq_topic, 1, settings.retention_ms, timeout=timeout)


__all__ = ["PERMANENT_ERRORS", "TradeProducer", "ensure_topics"]
