"""Peek at a topic: the last N messages (what the seed did with ``rpk topic consume -n 5``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition

from .kafka_conf import Conn, connection, make_client, metadata


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
    """The last ``n`` messages of each partition of ``topic``, oldest first (no consumer group commit).

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


__all__ = ["Message", "last_messages"]
