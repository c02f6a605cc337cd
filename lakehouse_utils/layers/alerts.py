"""Bar signals and alert rules in pure pandas (no Spark): returns, realized volatility, z-scores, gaps, venue spreads.

Gold raises alerts with these on the bars it has just made final (:mod:`gold_alerts`); the notebooks' views use
the same functions (``views.analytics`` re-exports them), so a chart and the pipeline agree on every value.

All signals are computed per (exchange, symbol) over the bars in ``bar_start`` order (per symbol when the frame
has no ``exchange`` column).  "Previous" means the previous bar *that exists*: Gold has no row for a minute
without trades, so a return spans the gap.

=============  ===================================================================================
column         definition
=============  ===================================================================================
``ret``        simple return ``close / prev_close - 1`` (NaN on a series' first bar)
``log_ret``    ``ln(close / prev_close)``
``move_pct``   ``100 * ret`` (the bar's move in percent, close to close)
``vol``        realized volatility: sample std (ddof=1) of ``log_ret`` over the last ``window`` bars,
               the current bar included (``min_periods`` bars needed).  Per bar, not annualized;
               ``annualize=k`` multiplies by ``sqrt(k)`` with ``k`` = bars per year, e.g.
               ``periods_per_year("1m")`` = 525,600 for 24/7 crypto minute bars
``ret_z``      ``(ret - mean) / std`` where mean and std (ddof=1) are of the ``window`` bars *before*
               the current one: a spike is measured against the calm before it (a window that included
               the spike would absorb it: with 20 bars a lone outlier could never reach z ≈ 4.3)
``volume_z``   the same for ``volume``
``gap``        ``open - prev_close`` (what happened between two bars); ``gap_pct`` = 100 * gap / prev_close
=============  ===================================================================================

Alerts (``detect_alerts``) are raised on *final* bars only: a forming bar's close, volume and therefore its
z-scores change with every micro-batch, so an alert on it would appear and vanish (flap).  A final bar never
changes again, and its signals depend only on earlier bars, which are final too, so an alert, once raised,
stays true.  Each alert has a deterministic id ``exchange|symbol|timeframe|bar_start|kind``: detecting again
produces the same ids, and the sink (:mod:`alert_sink`) stores and publishes each id once.

``venue_spread`` (``spread_alerts``) compares the venues of one symbol in one bar: ``|spread_bp| >= N`` with the
spread of :func:`venues.venue_spreads` (highest against lowest close, in basis points of their mean).  It belongs
to no single venue: its ``exchange`` is ``"*"`` (so the id is one per symbol, timeframe and bar, whichever venues
were highest and lowest), and ``detail`` names the pair as ``"<high venue>><low venue>"``, e.g. ``coinbase>kraken``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from .venues import venue_spreads

KINDS = ("return_z", "volume_z", "move_pct", "venue_spread")
ALL_VENUES = "*"  # the exchange of a venue_spread alert
SIGNAL_COLUMNS = ["ret", "log_ret", "move_pct", "vol", "ret_z", "volume_z", "gap", "gap_pct"]
ALERT_COLUMNS = ["alert_id", "exchange", "symbol", "timeframe", "bar_start", "kind", "value", "threshold", "close",
                 "is_final", "detected_at", "detail"]
_SECONDS = {"1m": 60, "5m": 300, "1h": 3600}


def periods_per_year(timeframe: str) -> float:
    """Bars per year for a timeframe, crypto trades 24/7: 1m -> 525,600, 5m -> 105,120, 1h -> 8,760."""
    return 365 * 24 * 3600 / _SECONDS[timeframe]


def series_keys(bars: pd.DataFrame) -> list[str]:
    """The columns one series of bars is keyed by: (exchange, symbol), or symbol for a frame without exchange."""
    return ["exchange", "symbol"] if "exchange" in bars.columns else ["symbol"]


def _prev_window_z(x: pd.Series, window: int, min_periods: int) -> pd.Series:
    """z of each value against the ``window`` values before it (mean and sample std of those)."""
    prev = x.shift(1).rolling(window, min_periods=min_periods)
    mean, std = prev.mean(), prev.std(ddof=1)
    return (x - mean) / std.where(std > 0)


def add_signals(bars: pd.DataFrame, window: int = 20, min_periods: int | None = None,
                annualize: float | None = None) -> pd.DataFrame:
    """A copy of ``bars`` sorted by (exchange, symbol, bar_start) with the signal columns (see the module doc).

    ``min_periods`` (default ``window``) is how many bars a rolling statistic needs before it is defined:
    with the default every value rests on a full window, so it does not change when older bars are added
    to the frame.  ``annualize`` (bars per year, e.g. ``periods_per_year("1m")``) also adds ``vol_annual``.
    """
    if window < 2:
        raise ValueError("window must be >= 2 (a std needs two values)")
    min_periods = window if min_periods is None else max(2, min(int(min_periods), window))
    keys = series_keys(bars)
    df = bars.sort_values([*keys, "bar_start"], kind="stable").reset_index(drop=True).copy()
    g = df.groupby(keys, sort=False)
    prev_close = g["close"].shift(1)
    df["ret"] = df["close"] / prev_close - 1.0
    df["log_ret"] = np.log(df["close"] / prev_close)
    df["move_pct"] = 100.0 * df["ret"]
    g = df.groupby(keys, sort=False)  # again: it must see the new columns
    df["vol"] = g["log_ret"].transform(lambda s: s.rolling(window, min_periods=min_periods).std(ddof=1))
    if annualize is not None:
        df["vol_annual"] = df["vol"] * math.sqrt(annualize)
    df["ret_z"] = g["ret"].transform(lambda s: _prev_window_z(s, window, min_periods))
    df["volume_z"] = g["volume"].transform(lambda s: _prev_window_z(s, window, min_periods))
    df["gap"] = df["open"] - prev_close
    df["gap_pct"] = 100.0 * df["gap"] / prev_close
    return df


def infer_timeframe(bars: pd.DataFrame) -> str:
    """'1m' | '5m' | '1h' from bar_end - bar_start (else e.g. '90s')."""
    if bars.empty or "bar_end" not in bars:
        return "1m"
    seconds = int((pd.to_datetime(bars["bar_end"]) - pd.to_datetime(bars["bar_start"])).dt.total_seconds().iloc[0])
    return next((tf for tf, s in _SECONDS.items() if s == seconds), f"{seconds}s")


def alert_id(exchange: str, symbol: str, timeframe: str, bar_start: pd.Timestamp | datetime, kind: str) -> str:
    """``exchange|symbol|timeframe|bar_start|kind``, e.g. ``kraken|BTC/USD|1m|2026-01-01T00:01:00Z|move_pct``."""
    ts = pd.Timestamp(bar_start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return f"{exchange}|{symbol}|{timeframe}|{ts:%Y-%m-%dT%H:%M:%SZ}|{kind}"


def empty_alerts() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="object") for c in ALERT_COLUMNS})
    for c in ("value", "threshold", "close"):
        df[c] = df[c].astype("float64")
    df["is_final"] = df["is_final"].astype("bool")
    for c in ("bar_start", "detected_at"):
        df[c] = pd.Series(dtype="datetime64[us, UTC]")
    return df


def _utc_now(detected_at: datetime | None) -> pd.Timestamp:
    now = pd.Timestamp(detected_at or datetime.now(UTC))
    return now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")


def _finish(parts: list[pd.DataFrame], timeframe: str, now: pd.Timestamp) -> pd.DataFrame:
    """Alert rows (exchange, symbol, bar_start, close, is_final, kind, value, threshold, detail) -> ALERT_COLUMNS."""
    if not parts:
        return empty_alerts()
    out = pd.concat(parts, ignore_index=True)
    out["bar_start"] = pd.to_datetime(out["bar_start"], utc=True).astype("datetime64[us, UTC]")
    out["timeframe"] = timeframe
    out["detected_at"] = pd.Series([now] * len(out), dtype="datetime64[us, UTC]")
    out["is_final"] = out["is_final"].astype(bool)
    out["alert_id"] = [alert_id(e, s, timeframe, b, k) for e, s, b, k in
                       zip(out["exchange"], out["symbol"], out["bar_start"], out["kind"], strict=True)]
    order = {k: i for i, k in enumerate(KINDS)}
    out = out.iloc[np.lexsort((out["kind"].map(order), out["exchange"], out["symbol"], out["bar_start"]))]
    return out[ALERT_COLUMNS].reset_index(drop=True)


def detect_alerts(bars_with_signals: pd.DataFrame, z_threshold: float = 3.0, move_pct: float = 1.0,
                  timeframe: str | None = None, final_only: bool = True,
                  detected_at: datetime | None = None) -> pd.DataFrame:
    """One row per (bar, kind) crossing a threshold, oldest first.

    kinds: ``return_z`` (``|ret_z| >= z_threshold``), ``volume_z`` (``volume_z >= z_threshold``: volume
    alerts are one-sided, a spike; a quiet bar is no alert), ``move_pct`` (``|move_pct| >= move_pct``).
    ``value`` is the signal (signed), ``threshold`` the threshold it crossed.  ``final_only=False`` also
    flags forming bars (a preview: such rows have ``is_final = false`` and the sink skips them).
    Signals missing from the frame are computed with ``add_signals`` defaults.  A frame without an
    ``exchange`` column gets ``exchange = ""``.
    """
    df = bars_with_signals
    if df is None or df.empty:
        return empty_alerts()
    if not {"ret_z", "volume_z", "move_pct"} <= set(df.columns):
        df = add_signals(df)
    timeframe = timeframe or infer_timeframe(df)
    if final_only:
        df = df[df["is_final"].fillna(False).astype(bool)]
    rules = (("return_z", df["ret_z"], df["ret_z"].abs() >= z_threshold, z_threshold),
             ("volume_z", df["volume_z"], df["volume_z"] >= z_threshold, z_threshold),
             ("move_pct", df["move_pct"], df["move_pct"].abs() >= move_pct, move_pct))
    parts = []
    for kind, value, hit, threshold in rules:
        hit = hit.fillna(False)
        if not hit.any():
            continue
        rows = df.loc[hit, [c for c in ("exchange", "symbol", "bar_start", "close", "is_final") if c in df]].copy()
        if "exchange" not in rows:
            rows["exchange"] = ""
        rows["kind"], rows["value"], rows["threshold"] = kind, value[hit].astype(float), float(threshold)
        rows["detail"] = None
        parts.append(rows)
    return _finish(parts, timeframe, _utc_now(detected_at))


def spread_alerts(bars: pd.DataFrame, spread_bp: float = 25.0, timeframe: str | None = None,
                  final_only: bool = True, detected_at: datetime | None = None) -> pd.DataFrame:
    """``venue_spread`` alerts: one per (symbol, bar) seen on two venues or more whose spread is ``>= spread_bp``.

    The spread is :func:`venues.venue_spreads`'s ``spread_bp`` (``value``), ``close`` the mid of the highest and
    lowest close, ``exchange`` is ``"*"`` and ``detail`` ``"<high venue>><low venue>"`` (see the module doc).
    A bar counts once every venue's row of it is final (``final_only``).
    """
    if bars is None or bars.empty or "exchange" not in bars:
        return empty_alerts()
    timeframe = timeframe or infer_timeframe(bars)
    df = bars[bars["is_final"].fillna(False).astype(bool)] if final_only else bars
    spreads = venue_spreads(df[["exchange", "symbol", "bar_start", "close", "volume"]])
    if spreads.empty:
        return empty_alerts()
    hit = spreads[spreads["spread_bp"].astype(float).abs() >= spread_bp]
    if hit.empty:
        return empty_alerts()
    final = df.groupby(["symbol", "bar_start"])["is_final"].all()
    rows = pd.DataFrame({
        "exchange": ALL_VENUES, "symbol": hit["symbol"].to_numpy(), "bar_start": hit["bar_start"].to_numpy(),
        "close": ((hit["high_close"].astype(float) + hit["low_close"].astype(float)) / 2).to_numpy(),
        "is_final": [bool(final.loc[(s, b)]) for s, b in zip(hit["symbol"], hit["bar_start"], strict=True)],
        "kind": "venue_spread", "value": hit["spread_bp"].astype(float).to_numpy(), "threshold": float(spread_bp),
        "detail": [f"{h}>{lo}" for h, lo in zip(hit["high_exchange"], hit["low_exchange"], strict=True)]})
    return _finish([rows], timeframe, _utc_now(detected_at))


__all__ = ["ALERT_COLUMNS", "ALL_VENUES", "KINDS", "SIGNAL_COLUMNS", "add_signals", "alert_id", "detect_alerts",
           "empty_alerts", "infer_timeframe", "periods_per_year", "series_keys", "spread_alerts"]
