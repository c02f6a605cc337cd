"""What the browser tests share: Debian's chromium under Playwright, Jupyter/Voila servers, the chart's data.

Playwright drives the system ``chromium`` (``executable_path``; Playwright's own browser download is not
used).  Screenshots and the servers' logs go to ``data/executed/`` of the repository, kept after a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "data" / "executed"
VENV_BIN = Path(sys.executable).parent


def chromium_path() -> str:
    """The system Chromium (``LAKEHOUSE_CHROMIUM`` wins); a clear error names the package when missing."""
    found = os.environ.get("LAKEHOUSE_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if not found:
        raise RuntimeError("the browser tests need Chromium: apt-get install chromium "
                           "(or set LAKEHOUSE_CHROMIUM to a Chrome/Chromium binary)")
    return found


@contextmanager
def browser_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A fresh Chromium page; the browser console is kept in ``page.console`` (a list of lines)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses its sandbox as root
        browser = p.chromium.launch(executable_path=chromium_path(), args=args)
        try:
            # a context of its own: a test may open a second page in it (``page.context.new_page()``)
            page = browser.new_context(viewport={"width": width, "height": height}).new_page()
            page.console = []
            page.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: page.console.append(f"pageerror: {e}"))
            yield page
        finally:
            browser.close()


class Server:
    """A Jupyter server (``jupyter lab`` / ``voila``) as a child process, logging to ``log``."""

    def __init__(self, argv: list[str], url: str, log: Path, env: dict[str, str], cwd: Path) -> None:
        self.url, self.log = url, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdout=open(log, "w"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, path: str, timeout: float = 90.0) -> None:
        """Until ``url + path`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.url} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 30.0) -> None:
        """Ctrl-C twice (Jupyter asks to confirm), then SIGTERM; kernels are shut down by the server."""
        if self.proc.poll() is not None:
            return
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout / 3)
                return
            except subprocess.TimeoutExpired:
                continue
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def allow_root() -> list[str]:
    return ["--allow-root"] if os.geteuid() == 0 else []


def keep_artifacts(*paths: Path) -> None:
    """Copy logs next to the screenshots (``data/executed``) for diagnosis."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p.exists():
            shutil.copy(p, ARTIFACTS / p.name)


# The chart's data, as Plotly holds it in the page: {trace name: {"x": [...], "open": [...], ...}}
CHART_JS = """(root) => {
  const gd = (root || document).querySelector('.js-plotly-plot');
  if (!gd || !gd.data) return null;
  const out = {};
  for (const t of gd.data) {
    out[t.name] = {x: Array.from(t.x || []), open: Array.from(t.open || []), high: Array.from(t.high || []),
                   low: Array.from(t.low || []), close: Array.from(t.close || [])};
  }
  out._title = (gd.layout && gd.layout.title && gd.layout.title.text) || '';
  const d = gd.dataset;  // what the LiveFigure view counted (lakehouse_utils/views/live_figure.py)
  out._view = {changes: d.changes, draws: d.draws, errors: d.errors, error: d.error};
  return out;
}"""


def chart_candles(page: Any, root: Any = None) -> dict[str, Any] | None:
    """The candles the page's (first) Plotly chart shows: {"final": n, "forming": n, "bars": {x: (o,h,l,c)}}."""
    data = page.evaluate(CHART_JS, root.element_handle() if root is not None else None)
    if data is None:
        return None
    bars: dict[str, tuple[float, float, float, float]] = {}
    counts = {}
    for name in ("bars", "forming"):
        t = data.get(name) or {"x": [], "open": [], "high": [], "low": [], "close": []}
        counts[name] = len(t["x"])
        for x, o, h, lo, c in zip(t["x"], t["open"], t["high"], t["low"], t["close"], strict=True):
            bars[str(x)] = (o, h, lo, c)
    return {"final": counts["bars"], "forming": counts["forming"], "bars": bars, "title": data["_title"],
            "view": data["_view"]}


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; a timeout names ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"{what}: not seen after {timeout:.0f}s (last: {last!r})")


def _utc_naive(x: object) -> Any:
    import pandas as pd

    ts = pd.Timestamp(x)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def gold_bars(data: Path, symbol: str, timeframe: str = "1m") -> dict[Any, tuple]:
    """Gold's bars of ``symbol`` read without Spark: {bar_start (naive UTC): (open, high, low, close, is_final)}."""
    from deltalake import DeltaTable

    path = data / "gold" / f"bars_{timeframe}"
    if not (path / "_delta_log").is_dir():
        return {}
    df = DeltaTable(str(path)).to_pandas()
    df = df[df["symbol"] == symbol]
    return {_utc_naive(r.bar_start): (r.open, r.high, r.low, r.close, bool(r.is_final)) for r in df.itertuples()}


def shown_bars(candles: dict[str, Any]) -> dict[Any, tuple]:
    """The chart's candles keyed like :func:`gold_bars`: {bar_start: (open, high, low, close)}."""
    return {_utc_naive(x): v for x, v in candles["bars"].items()}
