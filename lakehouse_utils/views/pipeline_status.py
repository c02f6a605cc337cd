"""The pipeline status panel: table row counts (deltalake, from the logs), the broker, the topics' offsets."""

from __future__ import annotations

import html
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..config import Settings
from ..procs import reachable
from . import charts
from .ui import Loop, Panel, pre
from .verify import delta_count

log = logging.getLogger(__name__)


def table_counts(settings: Settings) -> dict[str, int | None]:
    """Row counts of every table, read with deltalake (None = not created yet)."""
    paths = {"bronze": settings.bronze, "silver": settings.silver, "quarantine": settings.quarantine,
             **{f"gold {tf}": charts.table_path(settings, tf) for tf in charts.TIMEFRAMES},
             "late trades": settings.late_trades, "alerts": settings.alerts_table}
    out: dict[str, int | None] = {}
    for name, path in paths.items():
        try:
            out[name] = delta_count(path)
        except Exception as exc:  # a table being written for the first time
            log.debug("count %s: %s", path, exc)
            out[name] = None
    return out


def topic_offsets(settings: Settings, timeout: float = 3.0) -> dict[str, int | None]:
    """Messages per topic (sum of the end offsets); None if the topic or the broker is not there."""
    from confluent_kafka.admin import AdminClient

    from ..kafka.kafka_conf import make_client, metadata
    from ..kafka.topics import end_offsets

    topics = [settings.topic, settings.dlq_topic, settings.alerts_topic]
    if not reachable(settings.bootstrap):
        return dict.fromkeys(topics)
    try:
        admin, errors = make_client(AdminClient, settings, log_level=0)
        existing = metadata(admin, errors, settings, timeout).topics
    except Exception:
        return dict.fromkeys(topics)
    return {t: sum(end_offsets(settings, t, timeout).values()) if t in existing else None for t in topics}


class PipelineStatus(Panel):
    """Table counts, broker and topic offsets (with the rate since the previous look), refreshed."""

    def __init__(self, settings: Settings, refresh: float = 5.0, autostart: bool = True,
                 broker_dir: str | Path | None = None) -> None:
        self.settings = settings
        self.refresh = refresh
        self.broker_dir = Path(broker_dir) if broker_dir else settings.broker_dir
        self._prev: tuple[float, dict[str, int | None]] | None = None
        self.last: dict[str, Any] = {}
        self.html_w = W.HTML(pre("..."))
        self.refresh_b = W.Button(description="Refresh", icon="refresh")
        self.refresh_b.on_click(lambda _: self.status_once())
        self.widget = W.VBox([self.refresh_b, self.html_w])
        self._loop: Loop | None = None
        self.status_once()
        if autostart:
            self._loop = Loop(self.status_once, lambda: self.refresh, "pipeline-status-refresh")

    def status_once(self) -> dict[str, Any]:
        """Look once; returns {"broker", "tables", "topics", "rates"} and shows it."""
        from ..kafka.broker import LocalKafka

        try:
            local = LocalKafka(self.broker_dir, port=self.settings.broker_port)
            embedded = local.pid()
        except Exception:
            embedded = None
        now = time.monotonic()
        topics = topic_offsets(self.settings)
        reachable = any(v is not None for v in topics.values())
        rates: dict[str, float] = {}
        if self._prev is not None:
            t_prev, prev = self._prev
            for t, n in topics.items():
                if n is not None and prev.get(t) is not None and now > t_prev:
                    rates[t] = (n - prev[t]) / (now - t_prev)
        self._prev = (now, topics)
        broker = (f"{self.settings.bootstrap} " + ("reachable" if reachable else "unreachable / no topics")
                  + (f" (embedded broker pid {embedded})" if embedded else ""))
        self.last = {"broker": broker, "tables": table_counts(self.settings), "topics": topics, "rates": rates,
                     "at": datetime.now(UTC)}
        self.html_w.value = self.to_html()
        return self.last

    def to_html(self) -> str:
        s = self.last
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{'-' if v is None else f'{v:,}'}"
                       "</td></tr>" for k, v in s["tables"].items())
        trows = "".join(
            f"<tr><td>{html.escape(t)}</td><td style='text-align:right'>{'-' if n is None else f'{n:,}'}</td>"
            f"<td style='text-align:right'>{_rate(s['rates'].get(t))}</td></tr>"
            for t, n in s["topics"].items())
        producing = any(r > 0 for r in s["rates"].values())
        return (f"<div><b>broker</b> {html.escape(s['broker'])}"
                f" &middot; producer: {'active (topic growing)' if producing else 'idle / not seen'}"
                f" &middot; {s['at']:%H:%M:%S} UTC</div>"
                "<div style='display:flex;gap:2em'>"
                f"<table><tr><th>table</th><th>rows</th></tr>{rows}</table>"
                f"<table><tr><th>topic</th><th>messages</th><th>rate</th></tr>{trows}</table></div>")

    def close(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        self.widget.close()


def _rate(r: float | None) -> str:
    return "" if r is None else f"{r:.1f}/s"
