"""Small ipywidgets plumbing shared by the panels (``widgets``) and the live chart (``live``)."""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as W

log = logging.getLogger(__name__)


def pre(text: str, color: str | None = None) -> str:
    """``text`` as a monospace HTML block (for ``W.HTML`` status lines)."""
    style = "margin:0;font-family:monospace;white-space:pre-wrap"
    if color:
        style += f";color:{color}"
    return f'<pre style="{style}">{html.escape(text)}</pre>'


class Loop:
    """Call ``tick()`` every ``every`` seconds on a daemon thread until ``stop()`` or ``tick`` returns False.

    ``every`` may be a callable, read on each turn, so a changed refresh interval applies at once.
    """

    def __init__(self, tick: Callable[[], bool | None], every: float | Callable[[], float], name: str) -> None:
        self._tick = tick
        self._every = every if callable(every) else (lambda: every)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(max(0.05, self._every()))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._tick() is False:
                    return
            except Exception:  # a refresh must never kill the kernel; log and go on
                log.exception("widget refresh failed")

    def poke(self) -> None:
        """Run the next tick now (e.g. after the interval changed)."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


class Panel:
    """A widget box that displays itself; button callbacks go through ``_safely``."""

    widget: W.Box
    status_w: W.HTML

    def _show_error(self, exc: Exception) -> None:
        self.status_w.value = pre(f"{type(exc).__name__}: {exc}", "crimson")

    def _safely(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as exc:  # show it in the panel instead of losing it in the log
            self._show_error(exc)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
