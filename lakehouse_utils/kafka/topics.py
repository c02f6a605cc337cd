"""Topics: create (:func:`ensure_topic`), delete, read their end offsets, peek at the last N messages.

Every function takes ``conn``: ``Settings`` (with their Kafka security), a ``KafkaConnection``, or an unsecured
``host:port``; the broker may be the embedded one (``broker.LocalKafka``) or anyone's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from .kafka_conf import Conn, connection, make_client, metadata

log = logging.getLogger(__name__)


def ensure_topic(conn: Conn, topic: str, partitions: int = 1, retention_ms: int | None = None,
                 config: dict[str, str] | None = None, timeout: float = 30.0) -> bool:
    """Create ``topic`` with ``partitions`` if missing; True if it was created.

    An existing topic is left as it is, with a warning if it has another partition count: Kafka cannot take
    partitions away, and adding some would send a key (a symbol) to another partition, so its new messages
    could be read before its old ones.  ``conn``: ``Settings`` (with their Kafka security), a
    ``KafkaConnection``, or an unsecured ``host:port``.
    """
    admin, errors = make_client(AdminClient, conn)
    existing = metadata(admin, errors, conn, timeout).topics.get(topic)
    if existing is not None:
        _warn_partitions(topic, len(existing.partitions), partitions)
        return False
    conf = dict(config or {})
    if retention_ms is not None:
        conf["retention.ms"] = str(retention_ms)
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1, config=conf)])
    try:
        futures[topic].result(timeout)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
        return False
    return True


def _warn_partitions(topic: str, has: int, asked: int) -> None:
    """A warning when an existing topic's partition count is not the one asked for (the topic is kept)."""
    if has and has != asked:
        log.warning("topic %s has %d partition(s), %d asked: kept as it is (Kafka cannot remove partitions, and "
                    "adding some would move symbols to other partitions). To get %d: another --topic, or delete "
                    "this one first.", topic, has, asked, asked)


def delete_topics(conn: Conn, topics: list[str], timeout: float = 30.0) -> None:
    admin, errors = make_client(AdminClient, conn)
    existing = metadata(admin, errors, conn, timeout).topics
    todo = [t for t in topics if t in existing]
    for fut in admin.delete_topics(todo).values() if todo else []:
        fut.result(timeout)


def end_offsets(conn: Conn, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """``{partition: high watermark}`` of a topic (0 for an empty partition)."""
    consumer, errors = make_client(Consumer, conn, **{"group.id": "lakehouse-offsets", "enable.auto.commit": False})
    try:
        meta = metadata(consumer, errors, conn, timeout, topic).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        out = {}
        for p in sorted(meta.partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            out[p] = high
        return out
    finally:
        consumer.close()


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: str | None
    value: str | None
    headers: dict[str, str]

    def json(self) -> object:
        return json.loads(self.value) if self.value else None

    def to_line(self) -> str:
        ts = self.timestamp.isoformat() if self.timestamp else "-"
        return f"{self.topic}[{self.partition}]@{self.offset} {ts} key={self.key} {self.value}"


def _decode(b: bytes | None) -> str | None:
    return None if b is None else b.decode("utf-8", errors="replace")


def last_messages(conn: Conn, topic: str, n: int = 5, timeout: float = 10.0) -> list[Message]:
    """The last ``n`` messages of each partition of ``topic``, oldest first (no consumer group commit): what the
    seed did with ``rpk topic consume -n 5``.

    ``conn``: ``Settings`` (with their Kafka security), a ``KafkaConnection``, or an unsecured ``host:port``.
    """
    consumer, errors = make_client(Consumer, conn, **{"group.id": "lakehouse-peek", "enable.auto.commit": False,
                                                      "enable.partition.eof": True})
    try:
        meta = metadata(consumer, errors, conn, timeout, topic).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ValueError(f"topic {topic!r} not found on {connection(conn).bootstrap}")
        assignment, remaining = [], 0
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                assignment.append(TopicPartition(topic, p, max(low, high - n)))
                remaining += min(n, high - low)
        if not assignment:
            return []
        consumer.assign(assignment)
        out: list[Message] = []
        while remaining > 0:
            msg = consumer.poll(timeout)
            if msg is None:
                break
            if msg.error():
                continue  # partition EOF
            remaining -= 1
            kind, ts = msg.timestamp()
            out.append(Message(
                msg.topic(), msg.partition(), msg.offset(),
                datetime.fromtimestamp(ts / 1000, UTC) if kind and ts >= 0 else None,
                _decode(msg.key()), _decode(msg.value()),
                {k: _decode(v) or "" for k, v in (msg.headers() or [])},
            ))
        return sorted(out, key=lambda m: (m.timestamp or datetime.min.replace(tzinfo=UTC), m.partition, m.offset))
    finally:
        consumer.close()


__all__ = ["Message", "delete_topics", "end_offsets", "ensure_topic", "last_messages"]
