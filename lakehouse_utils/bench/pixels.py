"""Trade -> pixel: JupyterLab in Chromium running the notebook flow as a user does, timed on the chart itself.

:func:`pixel_run` serves a copy of the notebooks with ``jupyter lab``, opens 01-05 in Chromium (each in the kernel
JupyterLab gives it), runs each whole (Run All), presses Start in 02, 03 and 04 (the shared engine), opens 05, then
presses Start in 01 with the replay at ``speed``.  A sampler in the page reads 05's Plotly chart every 50 ms: for
every candle, how many trades it holds (the traces' ``customdata``, which the chart fills from Gold's ``trades``).

A trade counts as *on screen* when its candle first shows at least its rank among that candle's trades (trades
of a symbol enter Gold in offset order); its latency is that moment minus the broker's append time
(``LogAppendTime``, :mod:`.latency`).  ``warm_first_candle_s`` is Start in 01 -> the first candle drawn, with the
engine and broker already running.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .kernels import notebook_env
from .latency import LatencyResult, kafka_arrivals, stamped_topic

# Every 50 ms: the trades each candle of the chart holds, kept when it changed ({t: wall time s, bars: {x: n}}).
SAMPLER_JS = """(sel) => {
  window.__px = [];
  let last = '';
  const read = () => {
    const gd = document.querySelector(sel);
    if (!gd || !gd.data) return;
    const bars = {};
    for (const t of gd.data) {
      if (t.name !== 'bars' && t.name !== 'forming') continue;
      const x = t.x || [], n = t.customdata || [];
      for (let i = 0; i < x.length; i++) bars[String(x[i])] = Number(n[i]);
    }
    const key = JSON.stringify(bars);
    if (key !== last) { last = key; window.__px.push({t: Date.now() / 1000, bars: bars}); }
  };
  read();
  window.__pxTimer = setInterval(read, 50);
}"""

LAYERS = (("02_bronze.ipynb", "bronze"), ("03_silver.ipynb", "silver"), ("04_gold.ipynb", "gold"))


@dataclass
class PixelRun:
    feed: str
    symbol: str
    latency: dict[str, Any]
    latency_with_cold_start: dict[str, Any]
    warm_first_candle_s: float | None
    samples: int
    logs: list[str]


def _naive_minute(values: pd.Series) -> pd.Series:
    ts = pd.to_datetime(values, utc=True, format="ISO8601")
    return ts.dt.floor("1min").dt.tz_localize(None)


def pixel_latencies(arrivals: pd.DataFrame, samples: list[dict[str, Any]], symbol: str,
                    since: float | None = None) -> LatencyResult:
    """Per trade of ``symbol``: the first sample whose candle holds its rank, minus its append time."""
    trades = arrivals[arrivals["symbol"] == symbol].sort_values(["partition", "offset"]).copy()
    trades["bar"] = _naive_minute(trades["event_time"])
    trades["rank"] = trades.groupby("bar").cumcount() + 1
    shown: dict[pd.Timestamp, list[tuple[float, int]]] = {}
    for s in sorted(samples, key=lambda s: s["t"]):
        for x, n in s["bars"].items():
            ts = pd.Timestamp(x)
            bar = ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts
            shown.setdefault(bar, []).append((s["t"], int(n)))
    visible = np.full(len(trades), np.nan)
    for i, (bar, rank) in enumerate(zip(trades["bar"], trades["rank"], strict=True)):
        for t, n in shown.get(bar, ()):
            if n >= rank:
                visible[i] = t
                break
    appended = trades["append_s"].to_numpy()
    keep = appended >= since if since is not None else np.ones(len(appended), bool)
    lat = (visible - appended)[keep]
    seen = lat[~np.isnan(lat)]
    return LatencyResult(seen, int(keep.sum()), int(np.isnan(lat).sum()))


def pixel_run(root: Path, bootstrap: str, *, speed: str = "20", feed_seconds: float = 120.0,
              tail_seconds: float = 15.0, warmup_s: float = 15.0, repo: Path | None = None) -> PixelRun:
    """The notebook flow in JupyterLab and Chromium on a new data dir and topic (see the module)."""
    from ..engine.server import EngineServer
    from .browser import Lab, browser_page, jupyter_lab, wait_until

    repo = repo or Path(__file__).resolve().parents[2]
    work = root / "pixels"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(repo / "notebooks", work / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    data = work / "data"
    topic = f"bench.pixels.{int(time.time())}"
    stamped_topic(bootstrap, topic)
    env = notebook_env(data, bootstrap, topic)
    server, token = jupyter_lab(work, work / "notebooks", env)
    samples: list[dict[str, Any]] = []
    title, warm = "", None
    try:
        server.wait_ready(f"/api/status?token={token}")
        with browser_page(1500, 1100) as page:
            lab = Lab(page, work / "shots")
            try:
                page.goto(f"{server.url}/lab/tree/01_ingest.ipynb?token={token}", timeout=120_000)
                page.locator(".lm-TabBar-tab.lm-mod-current", has_text="01_ingest").wait_for(timeout=120_000)
                lab.wait_idle()
                lab.run_all()
                lab.button("Start").wait_for(timeout=180_000)
                speed_box = lab.notebook.locator(".widget-text", has_text="speed").locator("input")
                speed_box.fill(speed)
                speed_box.press("Tab")
                for nb, _ in LAYERS:  # a user opens each and runs it whole
                    lab.open(nb)
                    lab.run_all()
                for nb, layer in LAYERS:  # ... then presses Start in each
                    lab.switch_to(nb)
                    lab.notebook.locator(".widget-html-content pre", has_text=f"{layer}: not started").wait_for(
                        timeout=300_000)
                    lab.button("Start").click()
                    wait_until(lambda: lab.button("Stop").is_enabled(), 120, f"{layer} started")
                lab.open("05_live_candles.ipynb")
                lab.run_all()
                chart = lab.notebook.locator(".js-plotly-plot").first
                chart.wait_for(timeout=180_000)
                panel = lab.notebook.get_attribute("id")
                page.evaluate(SAMPLER_JS, f"#{panel} .js-plotly-plot")
                lab.switch_to("01_ingest.ipynb")
                started = time.time()
                lab.button("Start").click()
                lab.switch_to("05_live_candles.ipynb")
                first = wait_until(lambda: next((s for s in page.evaluate("window.__px") if s["bars"]), None),
                                   180, "the first candle on 05's chart", every=0.2)
                warm = float(first["t"]) - started
                time.sleep(max(0.0, started + feed_seconds - time.time()))
                lab.switch_to("01_ingest.ipynb")
                lab.button("Stop").click()
                lab.switch_to("05_live_candles.ipynb")
                time.sleep(tail_seconds)
                samples = page.evaluate("window.__px")
                title = page.evaluate(f"() => document.querySelector('#{panel} .js-plotly-plot').layout.title.text")
                lab.shot("pixels-05.png")
            except BaseException:
                lab.shot("pixels-failed.png")
                raise
    finally:
        server.stop()
        EngineServer(data / "engine", data).stop()
    symbol = str(title).split(" · ")[0] or "BTC/USD"
    (work / "logs" / "chart-samples.json").write_text(json.dumps(samples))  # what the page showed, when
    arrivals = kafka_arrivals(bootstrap, topic)
    since = (arrivals["append_s"].min() + warmup_s) if warmup_s and len(arrivals) else None
    return PixelRun(f"replay x{speed}", symbol, pixel_latencies(arrivals, samples, symbol, since).summary(),
                    pixel_latencies(arrivals, samples, symbol).summary(), warm, len(samples),
                    [str(server.log), str(data / "engine" / "engine.log"), str(work / "logs" / "chart-samples.json")])
