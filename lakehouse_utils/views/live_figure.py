"""A Plotly figure shown live in JupyterLab and Voila, sent to the browser as its whole state on every change.

Two ways Plotly's ``FigureWidget`` lost the live chart's updates (issue 9: JupyterLab's chart stuck at 15
candles while Gold had 18):

1. It sends each change as a one-off delta (``_py2js_update`` set to the message, then to ``None``).  The
   live chart changes its figure from a background thread while the kernel's main thread applies the
   browser's acknowledgements under ipywidgets' ``hold_trait_notifications``, which merges "message, then
   None" into a plain ``None``: the update is lost, and the next deltas only carry what changed since.
   ``tests/test_charts.py`` reproduces the loss.
2. anywidget gives a widget model 2 s to initialise.  On a starved page (three Spark kernels on two cores)
   the model misses that, and then drops every later message: the view keeps its first figure.
   ``tests/test_browser_lab.py`` reproduces it by slowing Chromium's CPU.

:class:`LiveFigure` has one synced value, ``figure`` (the whole figure as JSON, with a ``revision``).  The
browser redraws it with ``Plotly.react`` (which diffs, and keeps the user's zoom through the layout's
``uirevision``), one redraw at a time, always from the newest state: a lost or merged message costs nothing,
and a view that connects later (Voila, a reloaded tab) starts from the current figure.  Each view
acknowledges the revisions it draws; :meth:`LiveFigure.stale` tells when views stopped drawing (case 2), and
the owner shows a new widget in its place.  The chart's element counts what it got (``data-changes``,
``data-draws``, ``data-errors``: the browser test reads them).  plotly.js is the copy bundled with the
``plotly`` package (the chart works offline), sent as a value of the model and loaded by the first view, so
the widget's module stays small.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path
from typing import Any

import anywidget
import plotly.graph_objects as go
import plotly.io as pio
import traitlets

_PLOTLY_JS = Path(pio.__file__).resolve().parent.parent / "package_data" / "plotly.min.js"

# The module: plotly.js's UMD bundle sees a CommonJS ``module`` and hands Plotly to it (no global needed), then
# the view.  Redraws are chained so that they never overlap; each one draws the newest state.
_RENDER_JS = r"""
const STUCK_MS = 15000;  // a redraw that has not settled by then no longer holds back the next one

// plotly.js comes as the model's `_plotly_js` text and is loaded by the first view, once per page (anywidget
// gives a model 2 s to load its module: keep the module small).  Its UMD wrapper hands Plotly to `module`.
function loadPlotly(model) {
  if (!globalThis.__lakehousePlotly) {
    const src = "const module = { exports: {} };\n" + model.get("_plotly_js") + "\nexport default module.exports;\n";
    const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
    globalThis.__lakehousePlotly = import(url).then((m) => { URL.revokeObjectURL(url); return m.default; });
  }
  return globalThis.__lakehousePlotly;
}

async function render({ model, el }) {
  const Plotly = await loadPlotly(model);
  const div = document.createElement("div");
  div.className = "lakehouse-live-figure";
  el.appendChild(div);
  const seen = { changes: 0, draws: 0, errors: 0 };
  const note = () => { for (const [k, v] of Object.entries(seen)) div.dataset[k] = String(v); };
  let busy = false, dirty = false;
  const drawOnce = () => {
    const fig = model.get("figure") || {};
    const drawn = Plotly.react(div, fig.data || [], fig.layout || {}, model.get("config") || {});
    const stuck = new Promise((_, reject) => setTimeout(() => reject(new Error("redraw stuck")), STUCK_MS));
    return Promise.race([drawn, stuck]);
  };
  const pump = async () => {  // one redraw at a time; each one draws the newest state
    busy = true;
    while (dirty) {
      dirty = false;
      try {
        const revision = (model.get("figure") || {}).revision;
        await drawOnce();
        seen.draws += 1;
        model.send({ drawn: revision });  // the kernel's watchdog: this view is alive and up to date
      } catch (err) {
        seen.errors += 1;
        div.dataset.error = String(err);
        console.error("lakehouse live figure: redraw failed", err);
      }
      note();
    }
    busy = false;
  };
  const redraw = () => { seen.changes += 1; dirty = true; note(); if (!busy) { pump(); } };
  model.on("change:figure", redraw);
  model.on("change:config", redraw);
  redraw();
  const resized = new ResizeObserver(() => {
    if (div.offsetWidth > 0 && div.data) { Plotly.Plots.resize(div).catch(() => {}); }
  });
  resized.observe(el);
  return () => {
    resized.disconnect();
    model.off("change:figure", redraw);
    model.off("change:config", redraw);
    Plotly.purge(div);
  };
}

export default { render };
"""


@functools.cache
def plotly_js() -> str:
    """plotly.js (offline, from the ``plotly`` package), read once."""
    return _PLOTLY_JS.read_text(encoding="utf-8")


STALE_AFTER_S = 20.0  # a push no view has drawn for this long, after a view drew earlier ones: a stale view


def figure_state(fig: go.Figure) -> dict[str, Any]:
    """``fig`` as plain JSON (``data`` and ``layout``), the form the browser draws."""
    state = json.loads(pio.to_json(fig, validate=False, engine="json"))
    return {"data": state.get("data", []), "layout": state.get("layout", {})}


class LiveFigure(anywidget.AnyWidget):
    """A widget that shows ``fig`` (a ``go.Figure``); call :meth:`push` after changing ``fig``.

    ``push`` may run in any thread: it serialises under a lock, and a push that changes nothing sends nothing.
    Each state carries a ``revision``; a view acknowledges every revision it draws.  :meth:`stale` tells when
    views that drew before stopped drawing (anywidget gives a model 2 s to initialise; on a starved page it
    misses that and then drops every later message to the model, so the view keeps its first figure): the
    owner then shows a new widget in its place (:meth:`LiveCandles` does).
    """

    _esm = _RENDER_JS
    _plotly_js = traitlets.Unicode().tag(sync=True)
    figure = traitlets.Dict().tag(sync=True)
    config = traitlets.Dict({"displaylogo": False, "responsive": True}).tag(sync=True)

    def __init__(self, fig: go.Figure, **kwargs: Any) -> None:
        self.fig = fig
        self._push_lock = threading.Lock()
        self.revision = 0
        self.drawn = -1  # the newest revision a view has drawn (-1: no view has drawn yet)
        self._sent_at: dict[int, float] = {}  # revision -> when it was pushed, until a view draws it
        super().__init__(figure={**figure_state(fig), "revision": 0}, _plotly_js=plotly_js(), **kwargs)
        self._sent_at[0] = time.monotonic()
        self.on_msg(self._on_view_msg)

    @property
    def data(self) -> tuple:
        """The figure's traces (``fig.data``)."""
        return self.fig.data

    def push(self) -> bool:
        """Send the figure as it is now; returns whether it differed from what the browser had."""
        state = figure_state(self.fig)
        with self._push_lock:
            current = {k: v for k, v in self.figure.items() if k != "revision"}
            if state == current:
                return False
            self.revision += 1
            self._sent_at[self.revision] = time.monotonic()
            self.figure = {**state, "revision": self.revision}
            return True

    def stale(self, after: float = STALE_AFTER_S) -> bool:
        """A view drew this widget before, but no view has drawn a push made ``after`` seconds ago or more."""
        with self._push_lock:
            if self.drawn < 0 or not self._sent_at:
                return False
            return time.monotonic() - min(self._sent_at.values()) > after

    def _on_view_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        drawn = content.get("drawn") if isinstance(content, dict) else None
        if isinstance(drawn, int):
            with self._push_lock:
                self.drawn = max(self.drawn, drawn)
                for r in [r for r in self._sent_at if r <= drawn]:
                    del self._sent_at[r]
