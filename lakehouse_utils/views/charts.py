"""Candlestick figures of the Gold bars, read with ``deltalake`` (no JVM, no Spark).

``read_bars`` loads a Gold table (``<gold>/bars_1m|5m|1h``) into pandas, sorted by ``bar_start`` (UTC).
``candles_figure`` builds a two-row Plotly figure: candles + VWAP on top, volume below (shared x).  The
still-forming bars (``is_final = false``) are a separate, translucent candlestick trace, and alerts are a
scatter trace of markers.  ``update_figure`` refills the same traces in place (what the live chart does on
every refresh; a :class:`~lakehouse_utils.views.live_figure.LiveFigure` then sends the whole figure, and the browser
keeps the zoom).
``write_html`` / ``report_candles`` write a self-contained HTML file (plotly.js embedded, works offline).

This module imports neither Spark nor ``lakehouse_utils.layers.gold`` so that a dashboard kernel stays light; the
column names below are checked against ``gold`` by the tests (the timeframes come from ``config``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..config import TIMEFRAMES, Settings, table_exists
from .live_figure import STALE_AFTER_S, LiveFigure

log = logging.getLogger(__name__)

BAR_COLUMNS = ["exchange", "symbol", "bar_start", "bar_end", "open", "high", "low", "close", "volume", "vwap", "trades",
               "buy_volume", "sell_volume", "is_final", "updated_at"]  # == gold_tables.BAR_COLUMNS
_TIME_COLUMNS = ("bar_start", "bar_end", "updated_at")

# trace names (update_figure finds the traces by name, so their order may change freely)
FINAL, FORMING, VWAP, VOLUME, ALERTS = "bars", "forming", "VWAP", "volume", "alerts"
UP, DOWN = "#26a69a", "#ef5350"
FORMING_UP, FORMING_DOWN = "#7fb3d5", "#f0b27a"
ALERT_SYMBOLS = {"return_z": "diamond", "volume_z": "square", "move_pct": "star"}


# -- reading Gold ------------------------------------------------------------------------------------
def gold_dir(settings_or_gold_dir: Settings | str | Path) -> Path:
    if isinstance(settings_or_gold_dir, Settings):
        return settings_or_gold_dir.gold
    return Path(settings_or_gold_dir)


def table_path(settings_or_gold_dir: Settings | str | Path, timeframe: str) -> Path:
    return Settings(gold_path=gold_dir(settings_or_gold_dir)).bars_table(timeframe)


_open_tables: dict[str, Any] = {}
_open_lock = threading.Lock()


def open_table(path: str | Path) -> Any:
    """A ``deltalake.DeltaTable`` at its latest version, reusing the one opened before.

    A live chart re-reads the same table every second: brought up to date with ``update_incremental`` it
    reads only the commits made since, instead of replaying the log from its last checkpoint each time.
    """
    from deltalake import DeltaTable

    key = str(Path(path).resolve())
    with _open_lock:
        dt = _open_tables.get(key)
        if dt is not None:
            try:
                dt.update_incremental()
                return dt
            except Exception:  # the table was deleted or recreated (a reset): open it anew
                pass
        dt = _open_tables[key] = DeltaTable(str(path))
        return dt


def empty_bars() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
    df["symbol"] = df["symbol"].astype("object")
    df["exchange"] = df["exchange"].astype("object")
    for c in _TIME_COLUMNS:
        df[c] = pd.Series(dtype="datetime64[us, UTC]")
    df["trades"] = df["trades"].astype("int64")
    df["is_final"] = df["is_final"].astype("bool")
    return df


def utc(series: pd.Series) -> pd.Series:
    """Any datetime series -> tz-aware UTC (naive values are taken as UTC, as Spark writes them)."""
    s = pd.to_datetime(series)
    return s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")


def _to_utc_timestamp(value: datetime | str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def read_bars(settings_or_gold_dir: Settings | str | Path, timeframe: str = "1m", symbol: str | None = None,
              window: int | None = None, since: datetime | str | pd.Timestamp | None = None,
              exchange: str | None = None) -> pd.DataFrame:
    """Gold bars as pandas, sorted by ``bar_start`` (then ``symbol``, ``exchange``), times tz-aware UTC.

    ``symbol`` keeps one symbol and ``exchange`` one venue (filters pushed down to the Parquet files' statistics);
    ``since`` keeps bars with ``bar_start >= since`` (pruned by the ``bar_date`` partition first); ``window``
    keeps the last N bars of each (exchange, symbol).  The forming bar(s) (``is_final = false``) are included.
    A missing table gives an empty frame with the Gold columns.
    """
    path = table_path(settings_or_gold_dir, timeframe)
    if not table_exists(path):
        return empty_bars()
    filters: list[tuple[str, str, Any]] = []
    if symbol is not None:
        filters.append(("symbol", "=", symbol))
    if exchange is not None:
        filters.append(("exchange", "=", exchange))
    since_ts = None if since is None else _to_utc_timestamp(since)
    if since_ts is not None:
        filters.append(("bar_date", ">=", since_ts.date()))
    df = _read_filtered(open_table(path), filters)
    if df.empty:
        return empty_bars()
    for c in _TIME_COLUMNS:
        df[c] = utc(df[c])
    if since_ts is not None:
        df = df[df["bar_start"] >= since_ts]
    df = df.sort_values(["bar_start", "symbol", "exchange"], kind="stable")
    if window is not None:
        df = df.groupby(["exchange", "symbol"], sort=False).tail(int(window))
    return df.reset_index(drop=True)


def venue_symbols(settings_or_gold_dir: Settings | str | Path, timeframe: str = "1m") -> dict[str, list[str]]:
    """``{exchange: [symbols]}`` of a Gold table, both sorted (only these two columns are read)."""
    path = table_path(settings_or_gold_dir, timeframe)
    if not table_exists(path):
        return {}
    pairs = open_table(path).to_pandas(columns=["exchange", "symbol"]).dropna().drop_duplicates()
    return {ex: sorted(g["symbol"]) for ex, g in sorted(pairs.groupby("exchange"), key=lambda kv: kv[0])}


def _read_filtered(dt: Any, filters: list[tuple[str, str, Any]]) -> pd.DataFrame:
    """``dt``'s Gold columns with ``filters`` pushed down to the files.

    A table whose files disagree on the string type (delta-rs's MERGE writes ``string_view``, Spark and the first
    write ``string``) makes pyarrow refuse a string comparison ("no kernel matching input types (string,
    string_view)"): then the string filters are applied in pandas instead, on the same snapshot.
    """
    import pyarrow as pa

    try:
        return dt.to_pandas(columns=BAR_COLUMNS, filters=filters or None)
    except pa.ArrowNotImplementedError:
        pushed = [f for f in filters if not isinstance(f[2], str)]
        df = dt.to_pandas(columns=BAR_COLUMNS, filters=pushed or None)
        for column, _, value in (f for f in filters if isinstance(f[2], str)):
            df = df[df[column] == value]
        return df


def symbols(settings_or_gold_dir: Settings | str | Path, timeframe: str = "1m",
            exchange: str | None = None) -> list[str]:
    """The symbols present in a Gold table, on every venue or on ``exchange`` only."""
    pairs = venue_symbols(settings_or_gold_dir, timeframe)
    if exchange is not None:
        return pairs.get(exchange, [])
    return sorted({s for names in pairs.values() for s in names})


def exchanges(settings_or_gold_dir: Settings | str | Path, timeframe: str = "1m",
              symbol: str | None = None) -> list[str]:
    """The venues (``exchange``) present in a Gold table, all of them or those that have ``symbol``."""
    return [ex for ex, names in venue_symbols(settings_or_gold_dir, timeframe).items()
            if symbol is None or symbol in names]


# -- figures -----------------------------------------------------------------------------------------
def _x(series: pd.Series) -> list:
    """Times for plotly: naive UTC (plotly.js has no time zones; the axis is labelled UTC)."""
    if series.empty:
        return []
    s = pd.to_datetime(series)
    if s.dt.tz is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy(dtype="datetime64[us]")


def _one_symbol(bars: pd.DataFrame) -> pd.DataFrame:
    if bars is None or bars.empty:
        return empty_bars()
    for column in ("symbol", "exchange"):  # a candle chart shows one symbol of one venue: keep the first one
        names = bars[column].dropna().unique() if column in bars else []
        if len(names) > 1:
            bars = bars[bars[column] == sorted(names)[0]]
    return bars.sort_values("bar_start", kind="stable")


def trace_data(bars: pd.DataFrame, alerts: pd.DataFrame | None = None) -> dict[str, dict[str, Any]]:
    """The data of every trace (by trace name) for ``bars`` of one symbol and its ``alerts``."""
    bars = _one_symbol(bars)
    final_mask = bars["is_final"].fillna(False).astype(bool)
    out: dict[str, dict[str, Any]] = {}
    for name, part in ((FINAL, bars[final_mask]), (FORMING, bars[~final_mask])):
        out[name] = {"x": _x(part["bar_start"]), **{k: part[k].tolist() for k in ("open", "high", "low", "close")},
                     # in the hover; the bench reads the trades a candle holds from customdata (trade -> pixel)
                     "customdata": part["trades"].tolist(),
                     "text": [f"{n:,} trades · VWAP {v:,.6g}" for n, v in zip(part["trades"], part["vwap"],
                                                                               strict=True)]}
    out[VWAP] = {"x": _x(bars["bar_start"]), "y": bars["vwap"].tolist()}
    up = (bars["close"] >= bars["open"]).tolist()
    colors = [(UP if u else DOWN) if f else (FORMING_UP if u else FORMING_DOWN)
              for u, f in zip(up, final_mask.tolist(), strict=True)]
    out[VOLUME] = {"x": _x(bars["bar_start"]), "y": bars["volume"].tolist(), "marker.color": colors}
    a = _alerts_for(bars, alerts)
    out[ALERTS] = {
        "x": _x(a["bar_start"]) if not a.empty else [],
        "y": a["_y"].tolist() if not a.empty else [],
        "text": [f"{k} {v:+.2f} (|x| ≥ {t:g})" for k, v, t in zip(a.get("kind", []), a.get("value", []),
                                                                    a.get("threshold", []), strict=True)],
        "marker.symbol": [ALERT_SYMBOLS.get(k, "circle") for k in a.get("kind", [])],
    }
    return out


def _alerts_for(bars: pd.DataFrame, alerts: pd.DataFrame | None) -> pd.DataFrame:
    """The alerts of the bars shown, each placed just above its bar's high."""
    if alerts is None or alerts.empty or bars.empty:
        return pd.DataFrame()
    a = alerts.copy()
    a["bar_start"] = utc(a["bar_start"])
    b = bars[["symbol", "bar_start", "high", "low"]].copy()
    b["bar_start"] = utc(b["bar_start"])
    a = a.merge(b, on=["symbol", "bar_start"], how="inner")
    if a.empty:
        return a
    span = float(b["high"].max() - b["low"].min()) or float(b["high"].max()) * 0.01
    # several alerts on one bar: stack them
    a["_y"] = a["high"] + span * (0.02 + 0.03 * a.groupby("bar_start").cumcount())
    return a.sort_values("bar_start")


def candles_figure(bars: pd.DataFrame | None = None, alerts: pd.DataFrame | None = None, title: str | None = None,
                   widget: bool = False, height: int = 620) -> go.Figure | LiveFigure:
    """Candles + VWAP (top) and volume (bottom) of one symbol; forming bars and alerts drawn apart.

    ``widget=True`` returns a :class:`LiveFigure` around it (the live chart: JupyterLab, Voila).
    """
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.03)
    fig.add_trace(go.Candlestick(name=FINAL, increasing={"line": {"color": UP}, "fillcolor": UP},
                                 decreasing={"line": {"color": DOWN}, "fillcolor": DOWN}), row=1, col=1)
    fig.add_trace(go.Candlestick(name=FORMING, opacity=0.55,
                                 increasing={"line": {"color": FORMING_UP}, "fillcolor": FORMING_UP},
                                 decreasing={"line": {"color": FORMING_DOWN}, "fillcolor": FORMING_DOWN}),
                  row=1, col=1)
    fig.add_trace(go.Scatter(name=VWAP, mode="lines", line={"color": "#5e35b1", "width": 1.3}), row=1, col=1)
    fig.add_trace(go.Scatter(name=ALERTS, mode="markers", hoverinfo="x+text",
                             marker={"color": "#ff9800", "size": 11, "line": {"color": "#333", "width": 1}}),
                  row=1, col=1)
    fig.add_trace(go.Bar(name=VOLUME, showlegend=False), row=2, col=1)
    fig.update_layout(
        title=title, height=height, template="plotly_white", hovermode="x unified", bargap=0.1,
        legend={"orientation": "h", "y": 1.02, "x": 0, "yanchor": "bottom"},
        margin={"l": 60, "r": 20, "t": 80 if title else 40, "b": 40},
        uirevision="keep",  # keep the user's zoom / pan across data updates
    )
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_xaxes(title_text="bar start (UTC)", row=2, col=1)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="volume", row=2, col=1)
    update_figure(fig, bars if bars is not None else empty_bars(), alerts)
    return LiveFigure(fig) if widget else fig


def update_figure(fig: go.Figure | LiveFigure, bars: pd.DataFrame, alerts: pd.DataFrame | None = None,
                  title: str | None = None) -> go.Figure | LiveFigure:
    """Replace the data of ``fig``'s traces in place; a :class:`LiveFigure` then sends its whole figure."""
    data = trace_data(bars, alerts)
    plot = fig.fig if isinstance(fig, LiveFigure) else fig
    traces = {t.name: t for t in plot.data}
    with plot.batch_update():
        for name, values in data.items():
            trace = traces.get(name)
            if trace is None:
                continue
            for key, value in values.items():
                trace[key] = value
        if title is not None:
            plot.layout.title.text = title
    if isinstance(fig, LiveFigure):
        fig.push()
    return fig


def figure_bars(fig: go.Figure | LiveFigure) -> pd.DataFrame:
    """The bars a figure shows (final and forming), read back from its traces (tests, notebooks)."""
    rows = []
    for t in fig.data:
        if t.name in (FINAL, FORMING) and t.x is not None:
            for x, o, h, lo, c in zip(t.x, t.open, t.high, t.low, t.close, strict=True):
                rows.append({"bar_start": pd.Timestamp(x), "open": o, "high": h, "low": lo, "close": c,
                             "is_final": t.name == FINAL})
    df = pd.DataFrame(rows, columns=["bar_start", "open", "high", "low", "close", "is_final"])
    return df.sort_values("bar_start").reset_index(drop=True)


def figure_alerts(fig: go.Figure | LiveFigure) -> int:
    """How many alert markers a figure shows."""
    return sum(0 if t.x is None else len(t.x) for t in fig.data if t.name == ALERTS)


def write_html(fig: go.Figure | LiveFigure, path: str | Path) -> Path:
    """A self-contained HTML file (plotly.js embedded: opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot = go.Figure(fig.fig if isinstance(fig, LiveFigure) else fig)
    plot.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path


def title_for(symbol: str | None, timeframe: str, bars: pd.DataFrame, exchange: str | None = None) -> str:
    """'BTC/USD · 1m · kraken · 60 bars · last ... close ... (forming)' (the venue when given)."""
    where = f"{symbol or 'no symbol'} · {timeframe}" + (f" · {exchange}" if exchange else "")
    if bars.empty:
        return f"{where} · no Gold bars yet"
    last = bars.iloc[-1]
    state = "final" if bool(last["is_final"]) else "forming"
    return (f"{where} · {len(bars)} bars · last {last['bar_start']:%Y-%m-%d %H:%M} UTC "
            f"close {last['close']:g} ({state})")


def report_candles(settings: Settings, path: str | Path | None = None, timeframe: str = "1m",
                   symbol: str | None = None, window: int | None = None, exchange: str | None = None) -> Path:
    """``<data>/reports/candles.html``: the first symbol's bars (on ``exchange``, by default the first venue that
    has the symbol) with the alerts Gold raised on them.

    The alerts are read from the alerts table (the pipeline raises them; a chart computes none).  An empty or
    missing Gold gives a page with an empty chart, never an error.
    """
    from . import analytics

    path = Path(path) if path is not None else settings.reports / "candles.html"
    alerts = None
    try:
        names = symbols(settings, timeframe)
        symbol = symbol or (names[0] if names else None)
        if symbol and exchange is None:
            exchange = next(iter(exchanges(settings, timeframe, symbol)), None)
        bars = read_bars(settings, timeframe, symbol=symbol, exchange=exchange) if symbol else empty_bars()
        if window is not None:
            bars = bars.tail(window)
        if not bars.empty:
            alerts = analytics.read_alerts(settings, symbol, timeframe, exchange=exchange,
                                           since=bars["bar_start"].iloc[0])
    except Exception as exc:  # the report must not break the demo
        log.warning("candles report: cannot read Gold (%s)", exc)
        bars = empty_bars()
    fig = candles_figure(bars, alerts, title=title_for(symbol, timeframe, bars, exchange))
    return write_html(fig, path)


__all__: Sequence[str] = [
    "BAR_COLUMNS", "STALE_AFTER_S", "TIMEFRAMES", "LiveFigure", "candles_figure", "exchanges", "figure_alerts",
    "figure_bars", "read_bars", "report_candles", "symbols", "trace_data", "update_figure", "venue_symbols",
    "write_html",
]
