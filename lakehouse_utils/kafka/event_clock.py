"""Several replays that play one recorded hour keep together in event time, in the topic.

Live venues trade at the same moment, so their trades reach the topic close in event time and Gold's one
watermark (the latest event time minus the delay) fits them all.  Replays at ``--speed max`` do not: each
replay server and producer thread runs at its own pace, and a venue that gets ahead pushes the watermark past
minutes the others have not sent yet, whose trades then count as late.

An :class:`EventClock` shared by the replays' threads keeps each venue's *place*: an event time such that every
trade of that venue before it is in the topic (delivered, not only handed to the producer: each venue has its own
producer, and one producer's queue can lag another's) and its next trades are not earlier.  A trade may be handed
over while its event time is at most ``slack`` after every other venue's place.  A venue that must wait first
settles its own producer (flush), so its place becomes the trade it holds: when every venue waits, the one holding
the earliest trade goes on, so the replays never lock each other.  A venue with no place yet (still connecting)
holds the others until its first trade, or until it leaves (a thread that ends leaves the clock).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Protocol


class Outbox(Protocol):
    """What the clock needs of a venue's producer (``TradeProducer``)."""

    @property
    def in_flight(self) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


class EventClock:
    """Places of the venues' replays; :meth:`hold` before handing a trade to the venue's producer."""

    def __init__(self, names: list[str], slack: timedelta = timedelta(seconds=30)) -> None:
        self.slack = slack
        self._place: dict[str, datetime | None] = dict.fromkeys(names)
        self._cond = threading.Condition()
        self.waits = 0  # how often a venue had to wait for the others (shown in tests)

    def hold(self, name: str, event_time: datetime, stop: threading.Event, outbox: Outbox | None = None) -> bool:
        """Return once ``event_time`` is within ``slack`` of every other venue's place (True), or when ``stop`` is
        set (False).  ``outbox``: this venue's producer (None: handed over = in the topic)."""
        with self._cond:
            if name not in self._place:
                return not stop.is_set()
            if outbox is None or outbox.in_flight == 0:  # all before this trade is in the topic
                self._set(name, event_time)
            if self._clear(name, event_time):
                return True
            self.waits += 1
        while not stop.is_set():
            if outbox is None or outbox.flush(0.5) == 0:
                with self._cond:
                    self._set(name, event_time)
            with self._cond:
                if self._clear(name, event_time):
                    return True
                self._cond.wait(0.1)
        return False

    def leave(self, name: str) -> None:
        """``name`` sends no more: the others no longer wait for it."""
        with self._cond:
            self._place.pop(name, None)
            self._cond.notify_all()

    def _set(self, name: str, place: datetime) -> None:
        if self._place.get(name) != place:
            self._place[name] = place
            self._cond.notify_all()  # a venue waiting for this one may go on

    def _clear(self, name: str, event_time: datetime) -> bool:
        return all(t is not None and event_time <= t + self.slack for n, t in self._place.items() if n != name)


__all__ = ["EventClock", "Outbox"]
