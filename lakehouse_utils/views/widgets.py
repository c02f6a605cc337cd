"""Notebook panels (ipywidgets). They only drive lakehouse_utils objects; the job logic lives elsewhere.

- :class:`ProducerPanel`: pick a source (one venue, several, or a replay through several venues), Start / Stop
  its :class:`~lakehouse_utils.kafka.producer.ProducerThread` (one per venue: ``kafka.group``), watch its status
  line, peek at the last messages of the topic.
- :class:`QueryPanel`: Start / Stop one Spark streaming query and watch its progress line.

Both refresh their status from a daemon thread that ends when the job ends or the panel is closed.
Every button calls a method that tests (and scripts) can call directly.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ..config import Settings
from ..kafka.group import ProducerGroup, make_producers, plan, release
from ..kafka.history import History, plan_history
from ..kafka.producer import SOURCE_KINDS, ProducerThread, parse_speed
from ..layers.query_progress import progress_of  # no pyspark: a kernel on the shared engine holds no Spark client
from .ui import Loop, Panel, pre

log = logging.getLogger(__name__)


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: .*)?$")


def summarize_error(text: str, limit: int = 500) -> str:
    """First line of a (Spark) exception, plus the innermost Python/Java exception line when it says more.

    foreachBatch failures start with "An exception was raised by the Python Proxy..."; the line that
    matters ("RuntimeError: boom") sits at the end of the embedded Python traceback.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    head = lines[0]
    body = [line for line in lines[1:] if not line.startswith(("at ", "...", "File ", "JVM stacktrace"))]
    causes = [line for line in body if _EXC_LINE.match(line)]
    summary = head if not causes or causes[-1] in head else f"{head} -> {causes[-1]}"
    return summary[:limit]


class ProducerPanel(Panel):
    """Start / Stop trade ingestion into ``settings.topic`` and watch it."""

    def __init__(
        self,
        settings: Settings,
        default_source: str = "replay",
        pairs: tuple[str, ...] | list[str] = ("BTC/USD",),
        *,
        speed: str = "max",
        file: str | None = None,
        url: str | None = None,
        record: str | None = None,
        n_peek: int = 5,
        refresh: float = 0.5,
        venues: str | list[str] = "kraken",
        history: str | None = None,
    ) -> None:
        venues = venues if isinstance(venues, str) else ",".join(venues)
        plan(default_source, venues if default_source == "replay" else None)  # a ValueError naming the choices
        self.settings = settings
        self.file, self.url, self.record = file, url, record
        self.refresh = refresh
        self.thread: ProducerThread | ProducerGroup | None = None
        self.history: History | None = None  # the backfills run before the live feed (the history field)
        self._refresher: Loop | None = None
        self._lock = threading.Lock()

        # a kind, or several live venues ("kraken,coinbase"): a producer thread each
        self.source_w = W.Combobox(options=list(SOURCE_KINDS), value=default_source, description="source",
                                   ensure_option=False, placeholder="replay | kraken,coinbase,binance ...")
        self.venues_w = W.Text(value=venues, description="venues", placeholder="replay: kraken,coinbase,binance")
        self.pairs_w = W.Text(value=", ".join(pairs), description="pairs")
        self.speed_w = W.Text(value=str(speed), description="speed", placeholder="max or a factor")
        self.history_w = W.Text(value=history or "", description="history",
                                placeholder="none | 6h | ISO time; replay: 30m")
        self.start_b = W.Button(description="Start", button_style="success", icon="play")
        self.stop_b = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.status_w = W.HTML(pre("idle"))
        self.n_peek_w = W.BoundedIntText(value=n_peek, min=1, max=1000, description="last n", layout={"width": "180px"})
        self.peek_b = W.Button(description="Peek", icon="eye")
        self.dlq_b = W.Button(description="Peek DLQ", icon="eye")
        self.peek_w = W.HTML("")
        self.start_b.on_click(lambda _: self._safely(self.start))
        self.stop_b.on_click(lambda _: self._safely(self.stop))
        self.peek_b.on_click(lambda _: self._safely(self.peek))
        self.dlq_b.on_click(lambda _: self._safely(lambda: self.peek(dlq=True)))
        self.widget = W.VBox([
            W.HBox([self.source_w, self.venues_w]),
            W.HBox([self.pairs_w, self.speed_w]),
            self.history_w,
            W.HBox([self.start_b, self.stop_b]),
            self.status_w,
            W.HBox([self.n_peek_w, self.peek_b, self.dlq_b]),
            self.peek_w,
        ])

    # ---- actions ----------------------------------------------------------------------------

    def start(self, duration: float | None = None,
              max_messages: int | None = None) -> ProducerThread | ProducerGroup | History:
        """Start the producer thread(s) of the values in the form (a running one is kept and returned).

        With a history ("6h"; a replay's "30m" is back from where it then starts), its backfills run first and the
        live feed starts once they are done (:mod:`~lakehouse_utils.kafka.history`); that History is returned.
        """
        with self._lock:
            if self.history is not None and self.history.running:
                return self.history
            if self.thread is not None and self.thread.running:
                return self.thread
            pairs = [p.strip() for p in self.pairs_w.value.replace(";", ",").split(",") if p.strip()]
            speed = parse_speed(self.speed_w.value)
            source = self.source_w.value.replace(" ", "")
            venues = self.venues_w.value if source == "replay" else None
            history = self.history_w.value.strip()
            self.thread = self.history = None

            def live(start_s: float = 0.0) -> ProducerThread | ProducerGroup:
                thread = make_producers(self.settings, source, pairs, venues=venues, url=self.url, file=self.file,
                                        speed=speed, record=self.record, duration=duration,
                                        max_messages=max_messages, start_s=start_s)
                try:
                    thread.start()
                except BaseException:
                    release(thread)
                    raise
                self.thread = thread
                return thread

            if history and history.lower() != "none":
                steps, start_s = plan_history(source, venues, pairs, history, self.file)
                started: ProducerThread | ProducerGroup | History = History(self.settings, steps).start(
                    then=lambda: live(start_s))
                self.history = started
            else:
                started = live()
            self._set_running(True)
            self._start_refresher()
            return started

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the history (if any) and the live feed end, at most ``timeout`` s; True if they did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.history is not None and not self.history.join(timeout):
            return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.thread is None or self.thread.join(left)

    def stop(self, timeout: float = 30.0) -> str:
        """Stop the thread (flushing), then show and return the final status line."""
        with self._lock:
            if self.history is not None and self.history.running:
                self.history.stop(timeout)  # before the live feed: it is not started any more
            if self.thread is not None:
                self.thread.stop(timeout)
            self._stop_refresher()
            self._update()
            self._set_running(False)
            return self.status_text()

    def status_text(self) -> str:
        lines = [self.history.line()] if self.history is not None else []
        if self.thread is not None:
            lines.append(self.thread.status().line())
        return "\n".join(line for line in lines if line) or "idle"

    def peek(self, n: int | None = None, dlq: bool = False) -> list[str]:
        """Show (and return) the last ``n`` messages of the topic (or of its DLQ)."""
        from ..kafka.topics import last_messages

        topic = self.settings.dlq_topic if dlq else self.settings.topic
        n = n or self.n_peek_w.value
        try:
            lines = [m.to_line() for m in last_messages(self.settings, topic, n)]
        except ValueError as exc:  # topic not created yet
            lines = [str(exc)]
        self.peek_w.value = pre("\n".join(lines) or f"{topic}: no messages yet")
        return lines

    def close(self) -> None:
        """Stop the refresher (not the producer) and close the widgets."""
        self._stop_refresher()
        self.widget.close()

    # ---- internals --------------------------------------------------------------------------

    def _set_running(self, running: bool) -> None:
        self.start_b.disabled = running
        self.stop_b.disabled = not running
        for w in (self.source_w, self.pairs_w, self.speed_w, self.venues_w, self.history_w):
            w.disabled = running

    def _update(self) -> bool:
        status = None if self.thread is None else self.thread.status()
        history = self.history
        failed = (status is not None and not status.ok) or (history is not None and not history.running
                                                               and not history.ok)
        self.status_w.value = pre(self.status_text(), "crimson" if failed else None)
        return (history is not None and history.running) or (status is not None
                                                              and status.state in ("running", "stopping"))

    def _tick(self) -> bool:
        if self._update():
            return True
        self._set_running(False)  # ended by itself (source exhausted, duration)
        return False

    def _start_refresher(self) -> None:
        self._stop_refresher()
        self._refresher = Loop(self._tick, self.refresh, "producer-panel-refresh")

    def _stop_refresher(self) -> None:
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None


class QueryPanel(Panel):
    """Start / Stop one Spark streaming query; ``start(trigger)`` must return the StreamingQuery (or the shared
    engine's :class:`~lakehouse_utils.engine.RemoteQuery`).  ``attach()``, if given, returns the query that already
    runs (started by another kernel, or before this kernel restarted): the panel then shows and stops that one."""

    def __init__(
        self,
        name: str,
        start: Callable[[str], Any],
        default_trigger: str = "1 second",
        refresh: float = 1.0,
        attach: Callable[[], Any] | None = None,
    ) -> None:
        self.name = name
        self._start_query = start
        self.refresh = refresh
        self.query: Any = None  # pyspark.sql.streaming.StreamingQuery
        self._refresher: Loop | None = None
        self._lock = threading.Lock()
        self.title_w = W.HTML(f"<b>{html.escape(name)}</b>")
        self.trigger_w = W.Text(value=default_trigger, description="trigger",
                                placeholder="'1 second' | available-now | once")
        self.start_b = W.Button(description="Start", button_style="success", icon="play")
        self.stop_b = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.status_w = W.HTML(pre(f"{name}: not started"))
        self.error_w = W.HTML("")
        self.start_b.on_click(lambda _: self._safely(self.start))
        self.stop_b.on_click(lambda _: self._safely(self.stop))
        self.widget = W.VBox([W.HBox([self.title_w, self.trigger_w, self.start_b, self.stop_b]),
                              self.status_w, self.error_w])
        running = attach() if attach is not None else None
        if running is not None and running.isActive:
            self.query = running
            self._set_running(True)
            self._refresher = Loop(self._tick, self.refresh, f"query-panel-{self.name}")

    @classmethod
    def for_layer(cls, engine: Any, layer: str, settings: Settings, default_trigger: str = "1 second",
                  **kwargs: Any) -> QueryPanel:
        """The panel of ``layer``'s query in ``engine`` (``engine.open_engine``: the shared one or this kernel's):
        Start runs it there; if it already runs there, the panel picks it up."""
        return cls(layer, lambda trigger: engine.start(layer, settings, trigger), default_trigger,
                   attach=lambda: engine.find(layer, settings), **kwargs)

    def start(self) -> Any:
        """Start the query with the trigger in the form (a running one is kept)."""
        with self._lock:
            if self.query is not None and self.query.isActive:
                return self.query
            self.error_w.value = ""
            self.query = self._start_query(self.trigger_w.value.strip())
            self._set_running(True)
            self._stop_refresher()
            self._refresher = Loop(self._tick, self.refresh, f"query-panel-{self.name}")
            return self.query

    def stop(self) -> str:
        """Stop the query and the refresher; returns the final status line."""
        with self._lock:
            if self.query is not None and self.query.isActive:
                from ..layers.streaming import stop_between_batches

                stop_between_batches(self.query)  # a batch running ends first (what Stop promises)
            self._stop_refresher()
            self._update()
            self._set_running(False)
            return self.status_text()

    def status_text(self) -> str:

        line = progress_of(self.query, self.name).line()
        error = self.error()
        return f"{line} | FAILED: {error}" if error else line

    def error(self) -> str | None:
        """A one-line summary of the exception if the query died, else None."""
        details = self.error_details()
        return None if details is None else summarize_error(details)

    def error_details(self) -> str | None:
        """The full exception text if the query died, else None."""
        if self.query is None or self.query.isActive:
            return None
        exc = self.query.exception()
        return None if exc is None else str(exc)

    def close(self) -> None:
        self._stop_refresher()
        self.widget.close()

    # ---- internals --------------------------------------------------------------------------

    def _show_error(self, exc: Exception) -> None:
        self.error_w.value = pre(f"{type(exc).__name__}: {exc}", "crimson")
        self._set_running(self.query is not None and self.query.isActive)

    def _set_running(self, running: bool) -> None:
        self.start_b.disabled = running
        self.stop_b.disabled = not running
        self.trigger_w.disabled = running

    def _update(self) -> bool:
        line = progress_of(self.query, self.name).line()
        ended = self.query is not None and not self.query.isActive
        self.status_w.value = pre(f"{line} | stopped" if ended else line)
        details = self.error_details()
        if details:
            self.error_w.value = (pre(f"query failed: {summarize_error(details)}", "crimson")
                                  + f"<details><summary>details</summary>{pre(details[:20_000])}</details>")
        return self.query is not None and self.query.isActive

    def _tick(self) -> bool:
        if self._update():
            return True
        self._set_running(False)  # finished (available-now) or died
        return False

    def _stop_refresher(self) -> None:
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None


__all__ = ["ProducerPanel", "QueryPanel"]
