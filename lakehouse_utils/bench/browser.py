"""JupyterLab in Chromium, driven as a user drives it: the bench's trade -> pixel run and the browser tests.

Playwright drives the system ``chromium`` (``executable_path``; Playwright's own browser download is not used:
``apt-get install chromium``, or ``LAKEHOUSE_CHROMIUM``).  :class:`Server` runs ``jupyter lab`` / ``voila`` as a
child process; :class:`Lab` opens notebooks, runs them and clicks their buttons; :func:`chart_candles` reads the
candles a Plotly chart holds in the page.
"""

from __future__ import annotations

import os
import secrets
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


def free_port() -> int:
    from ..procs import free_port_pair

    return free_port_pair()


def jupyter_lab(tmp_path: Path, root: Path, env: dict[str, str]) -> tuple[Server, str]:
    """``jupyter lab`` over ``root`` on 127.0.0.1 with a new token (not started yet: wait_ready does)."""
    token = secrets.token_hex(16)
    lab_port = free_port()
    env = {**env, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces")}
    # no "official Jupyter news?" toast over the panels
    news = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    server = Server([str(VENV_BIN / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={lab_port}",
                     f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", *allow_root()],
                    f"http://127.0.0.1:{lab_port}", tmp_path / "logs" / "jupyterlab.log", env, root)
    return server, token


class Lab:
    """The JupyterLab page: open a notebook from the file browser, Run All, find things in the active one."""

    def __init__(self, page: Any, shots: Path | None = None) -> None:
        self.page, self.shots = page, shots  # screenshots go to ``shots`` (none without it)
        self.board: Any = None  # the Voila dashboard's page, once opened
        self.last_chart: Any = None  # what 05's chart held when last read (for a failure's message)

    @property
    def notebook(self) -> Any:
        """The notebook of the current main-area tab (inactive tabs may stay "visible" to Playwright)."""
        tab = self.page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current").first
        return self.page.locator(f"#{tab.get_attribute('data-id')}")

    def open(self, name: str) -> Any:
        self.page.locator(".jp-DirListing-item", has_text=name).dblclick()
        self.page.locator(".lm-TabBar-tab.lm-mod-current", has_text=name).wait_for(timeout=60_000)
        self.wait_idle()
        return self.notebook

    def wait_idle(self, timeout: float = 120_000) -> None:
        self.page.locator("#jp-main-statusbar", has_text="Idle").wait_for(timeout=timeout)

    def run_all(self) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    def switch_to(self, name: str) -> Any:
        self.page.locator(".lm-TabBar-tab", has_text=name).first.click()
        return self.notebook

    def button(self, text: str, within: Any = None) -> Any:
        return (within or self.notebook).locator("button.jupyter-button", has_text=text).first

    def status_lines(self) -> list[str]:
        return self.notebook.locator(".widget-html-content pre").all_inner_texts()

    def status(self, prefix: str) -> str:
        return next((t for t in self.status_lines() if t.startswith(prefix)), "")

    def shot(self, name: str) -> None:
        if self.shots is not None:
            self.shots.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(self.shots / name))


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
