"""The soak's series over time as one PNG: a Plotly figure (offline, plotly.js inlined) drawn by Chromium."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

ROWS = ("RSS (MB)", "trade -> Gold latency (s)", "batch duration (ms)", "live files per table",
        "files on disk per table", "log entries per table", "checkpoint (MB)")


def figure(result: dict[str, Any]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    samples = result["samples"]
    minutes = [s["t"] / 60 for s in samples]
    fig = make_subplots(rows=len(ROWS), cols=1, shared_xaxes=True, subplot_titles=ROWS, vertical_spacing=0.035)

    def line(row: int, name: str, values: list[Any]) -> None:
        fig.add_trace(go.Scatter(x=minutes, y=values, name=name, mode="lines+markers", marker={"size": 3},
                                 legendgroup=str(row)), row=row, col=1)

    line(1, "RSS, all processes", [s["rss_mb"] for s in samples])
    for label in sorted({k for s in samples for k in s["rss"]}):
        line(1, label, [s["rss"].get(label) for s in samples])
    line(2, "p50", [s.get("p50_s") for s in samples])
    line(2, "p95", [s.get("p95_s") for s in samples])
    line(3, "max", [s.get("batch_ms_max") for s in samples])
    line(3, "median", [s.get("batch_ms_median") for s in samples])
    for row, key in ((4, "files"), (5, "files_on_disk"), (6, "log_entries")):
        for table in samples[0]["tables"] if samples else []:
            line(row, f"{table} {key}", [s["tables"][table][key] for s in samples])
    line(7, "checkpoints", [s["checkpoint_mb"] for s in samples])
    verdicts = ", ".join(f"{k} {v}" for k, v in result.get("verdicts", {}).items())
    fig.update_layout(height=260 * len(ROWS), width=1200, showlegend=True, margin={"t": 90},
                      title=(f"make soak: {result['hours']:g} h, {result.get('trades', 0):,} trades; RSS growth "
                             f"{result.get('rss_growth_mb')} MB, p95 last/first {result.get('p95_ratio')}<br>"
                             f"{verdicts}"))
    fig.update_xaxes(title_text="minutes since start", row=len(ROWS), col=1)
    return fig


def write_plot(result: dict[str, Any], out: Path) -> Path:
    """Draw :func:`figure` in Chromium and save it as ``out`` (PNG)."""
    from .browser import browser_page

    fig = figure(result)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "soak.html"
        fig.write_html(str(html), include_plotlyjs=True, full_html=True)
        with browser_page(1240, 260 * len(ROWS) + 40) as page:
            page.goto(html.as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
            page.screenshot(path=str(out), full_page=True)
    return out


__all__ = ["figure", "write_plot"]
