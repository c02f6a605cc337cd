"""History before the live feed: each venue's trades of the last hours over its REST API, then the live source.

:class:`History` runs :func:`~lakehouse_utils.kafka.rest_backfill.run_backfill` (paged, resumable from its cursor,
header ``source=rest``: the path of ``lakehouse backfill``) for each venue and pair in turn, on a thread of its own,
then calls ``then`` (the producer panel starts the live feed there). The history goes first because Gold has one
watermark: a trade older than it is late, so live trades must not run ahead of the history they follow. Between the
last page and the live subscription a few seconds pass; Kraken's subscribe snapshot (the last 50 trades) covers
them, and the gap fill covers a venue's skipped ids.

A replay's "now" is where it starts (:func:`plan_history`): with a history of 30m the replay starts 30 minutes of
recording time in (``make_source(start_s=...)``) and those 30 minutes are fetched from a local REST replay server of
the same recording, so Gold ends equal to the bars of the whole recording.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..sources.backfill import CLIENTS, rest_server
from ..sources.rest_server import recorded_trades
from ..sources.venues import VENUES, replay_server
from .group import plan
from .rest_backfill import BackfillResult, is_relative, parse_when, run_backfill
from .source_kinds import pairs_for

if TYPE_CHECKING:
    from ..config import Settings


@dataclass(frozen=True)
class HistoryStep:
    """One backfill: ``venue``'s ``pair`` from ``since`` to ``until`` (None: the newest), as run_backfill takes them;
    ``replay``: served by a local REST replay server of ``recording`` (None: the bundled hour)."""

    venue: str
    pair: str
    since: str
    until: str | None = None
    replay: bool = False
    recording: Any = None


def duration_s(history: str) -> float:
    """``30m`` -> 1800.0; a replay's history must be a duration back from its start."""
    if not is_relative(history):
        raise ValueError(f"a replay's history is a duration back from where it starts (30m, 2h), got {history!r}")
    now = datetime(2000, 1, 1, tzinfo=UTC)
    return (now - parse_when(history, now)).total_seconds()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def replay_window(venue: str, seconds: float, recording: Any = None) -> tuple[datetime, datetime]:
    """``(since, until)`` of the history of ``venue``'s replay of ``recording`` started ``seconds`` in: ``until`` is
    its "now" (every trade of the frames before its start is older), ``since`` ``seconds`` before it or the oldest
    of those trades, so the history holds them all."""
    server = replay_server(venue, recording, "max", start_s=seconds)  # not started: it only splits the frames
    start = server.starts_at
    if start is None:
        raise ValueError(f"the {venue} replay has nothing left {seconds:g} s in: the history covers it all")
    before = set(server.trades_before)
    times = [t.event_time for t in recorded_trades(venue, recording) if t.trade_id in before]
    until = max([start, *times]) + timedelta(microseconds=1)
    return min([until - timedelta(seconds=seconds), *times]), until


def plan_history(source: str, venues: str | None, pairs: list[str] | None, history: str,
                 file: Any = None) -> tuple[list[HistoryStep], float]:
    """The backfills a ``history`` ("6h", "30m" or an ISO time) asks for before ``source`` starts, and how far
    into its recording a replay then starts (0 for live venues)."""
    steps: list[HistoryStep] = []
    start_s = 0.0
    for kind, venue in plan(source, venues):
        if venue not in CLIENTS:
            raise ValueError(f"{venue} has no REST history here (history needs one of {', '.join(CLIENTS)})")
        if kind == "replay":
            start_s = duration_s(history)
            since, until = map(_iso, replay_window(venue, start_s, file))
            for pair in pairs_for(venue, pairs) or replay_server(venue, file).pairs:
                steps.append(HistoryStep(venue, pair, since, until, replay=True, recording=file))
        else:
            parse_when(history)  # a clear ValueError now, not on the history's thread
            for pair in pairs_for(venue, pairs) or [VENUES[venue].default_pair]:
                steps.append(HistoryStep(venue, pair, history))
    return steps, start_s


class History:
    """The backfills of :func:`plan_history` on a daemon thread, one after the other, with a status line."""

    def __init__(self, settings: Settings, steps: list[HistoryStep]) -> None:
        self.settings = settings
        self.steps = steps
        self.results: list[BackfillResult] = []
        self.progress = ""  # the last progress line of the backfill running now
        self.error: str | None = None  # what went wrong starting what comes next
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, then: Callable[[], Any] | None = None) -> History:
        def run() -> None:
            for step in self.steps:
                if self._stop.is_set():
                    return
                self.results.append(self._fetch(step))
            if then is not None and not self._stop.is_set():
                try:
                    then()
                except Exception as exc:  # shown in the status line
                    self.error = f"{type(exc).__name__}: {exc}"

        self._thread = threading.Thread(target=run, name="history", daemon=True)
        self._thread.start()
        return self

    def _fetch(self, step: HistoryStep) -> BackfillResult:
        server = rest_server(step.venue, step.recording).start() if step.replay else None
        try:
            return run_backfill(self.settings, step.venue, step.pair, step.since, step.until,
                                url=server.url if server is not None else None, progress=self._said, stop=self._stop)
        finally:
            if server is not None:
                server.stop()

    def _said(self, line: str) -> None:
        self.progress = line

    def stop(self, timeout: float = 30.0) -> None:
        """Stop fetching (the cursor keeps what was delivered; the same history resumes there) and skip ``then``."""
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.done or r.already_done for r in self.results)

    def line(self) -> str:
        """``history: kraken BTC/USD 2019-07-01T00:00:00Z..: finished; 1,314 trades ...`` (one line a step)."""
        lines = [f"history: {r.line().removeprefix('backfill ')}" for r in self.results]
        if self.running and len(self.results) < len(self.steps):
            step = self.steps[len(self.results)]
            lines.append(f"history: {self.progress or f'{step.venue} {step.pair} since {step.since}: starting'}")
        if self.error:
            lines.append(f"history: then failed: {self.error}")
        return "\n".join(lines)


__all__ = ["History", "HistoryStep", "duration_s", "plan_history", "replay_window"]
