"""Replays of several venues keep together in event time (kafka/event_clock.py): no venue gets more than the slack
ahead of another still playing, in the topic too when a venue's producer lags, gaps in a recording do not lock them,
and a venue that ends frees the others.  (Unit tests of the clock alone; ``test_venues_demo.py`` runs it with the
real producers, broker and Gold.)"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from lakehouse_utils.kafka.event_clock import EventClock

T0 = datetime(2019, 7, 1, tzinfo=UTC)


def play(clock: EventClock, feeds: dict[str, list[int]], stop: threading.Event | None = None) -> list[tuple[str, int]]:
    """Each venue's thread sends its event times (seconds after T0) through the clock, as fast as it can."""
    stop = stop or threading.Event()
    sent: list[tuple[str, int]] = []
    lock = threading.Lock()

    def run(name: str, times: list[int]) -> None:
        try:
            for t in times:
                if not clock.hold(name, T0 + timedelta(seconds=t), stop):
                    return
                with lock:
                    sent.append((name, t))
        finally:
            clock.leave(name)

    threads = [threading.Thread(target=run, args=item) for item in feeds.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "the replays locked each other"
    return sent


def test_no_venue_runs_ahead_of_the_others_by_more_than_the_slack() -> None:
    feeds = {"kraken": list(range(0, 3600, 2)), "coinbase": list(range(1, 3600, 3)), "binance": list(range(0, 3600, 5))}
    sent = play(EventClock(list(feeds), slack=timedelta(seconds=10)), feeds)
    assert sorted(sent) == sorted((n, t) for n, ts in feeds.items() for t in ts)  # every trade, once
    count = dict.fromkeys(feeds, 0)
    for name, t in sent:  # a trade went only while every venue still playing was within 10 s of it
        count[name] += 1
        for other, times in feeds.items():
            if other != name and count[other] < len(times):
                assert t <= times[count[other]] + 10, (name, t, other, times[count[other]])


class LaggingOutbox:
    """A venue's producer whose trades reach the topic only when flushed, and then all at once."""

    def __init__(self, name: str, topic: list[tuple[str, int]], lock: threading.Lock) -> None:
        self.name, self.topic, self.lock, self.queued = name, topic, lock, []

    @property
    def in_flight(self) -> int:
        return len(self.queued)

    def flush(self, timeout: float = 0.0) -> int:
        with self.lock:
            self.topic += [(self.name, t) for t in self.queued]
        self.queued = []
        return 0


def test_trades_reach_the_topic_together_when_one_producer_lags() -> None:
    feeds = {"kraken": list(range(0, 1800)), "coinbase": list(range(0, 1800, 2)), "binance": list(range(1, 1800, 3))}
    topic: list[tuple[str, int]] = []
    lock = threading.Lock()
    clock, stop = EventClock(list(feeds), slack=timedelta(seconds=10)), threading.Event()

    def run(name: str, times: list[int], outbox: LaggingOutbox, flush_every: int | None) -> None:
        try:
            for i, t in enumerate(times):
                assert clock.hold(name, T0 + timedelta(seconds=t), stop, outbox)
                outbox.queued.append(t)
                if flush_every and i % flush_every == 0:
                    outbox.flush()
            outbox.flush()
        finally:
            clock.leave(name)

    # kraken's producer delivers only when the clock makes it settle; the others now and then
    threads = [threading.Thread(target=run, args=(name, times, LaggingOutbox(name, topic, lock), every))
               for (name, times), every in zip(feeds.items(), (None, 7, 50), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "the replays locked each other"
    assert sorted(topic) == sorted((n, t) for n, ts in feeds.items() for t in ts)
    newest = -1
    for name, t in topic:  # in topic order, no trade is more than the slack behind the newest before it
        assert t >= newest - 10, (name, t, newest)
        newest = max(newest, t)
    assert clock.waits > 0


def test_a_gap_in_one_recording_and_a_venue_that_ends_early_lock_nothing() -> None:
    feeds = {"a": [0, 1, 2, 500, 501], "b": list(range(0, 1000, 4)), "c": [0, 3]}  # a is quiet 498 s; c ends early
    sent = play(EventClock(list(feeds), slack=timedelta(seconds=5)), feeds)
    assert len(sent) == sum(len(v) for v in feeds.values())
    assert sent.index(("a", 500)) > sent.index(("b", 492))  # a's trade at 500 s waited for b to come near it


def test_stop_ends_a_wait() -> None:
    clock = EventClock(["fast", "stuck"])
    stop = threading.Event()
    stuck_went = threading.Event()

    def stuck() -> None:  # sends its first trade once fast has a place, then its source stalls
        if clock.hold("stuck", T0, threading.Event()):
            stuck_went.set()

    threading.Thread(target=stuck, daemon=True).start()
    threading.Timer(0.5, stop.set).start()
    assert clock.hold("fast", T0 + timedelta(minutes=5), stop) is False  # waited for stuck until stopped
    assert stuck_went.wait(1)  # the venue behind never waits for the one ahead
