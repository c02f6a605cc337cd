"""Cross-venue arithmetic on Gold bars (pandas, no Spark): each venue's premium, the spread, the volume share.

For one symbol and bar, venues' closes differ by a few basis points.  :func:`venue_table` gives each venue's row
with its ``premium_bp`` against the median close of every venue that traded in that bar (a venue alone in a bar
has no reference: NaN), and its ``volume_share`` of the bar's volume over all venues.  :func:`venue_spreads` gives
one row per (symbol, bar_start) seen on two venues or more: the venues with the highest and lowest close and the
spread between them, ``spread_bp = (high - low) / mid * 10_000`` with ``mid`` their mean, signed so that it is
positive (the alert kind ``venue_spread`` fires when it reaches a threshold).

The views (notebook 05, the dashboard, notebook 06) and the alerts raised by the pipeline both use these, so a
chart and an alert always agree on what the spread was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BP = 10_000.0
SPREAD_COLUMNS = ["symbol", "bar_start", "venues", "high_exchange", "high_close", "low_exchange", "low_close",
                  "spread_bp", "volume"]


def venue_table(bars: pd.DataFrame) -> pd.DataFrame:
    """``bars`` (Gold rows of several exchanges) with ``ref_close``, ``premium_bp`` and ``volume_share`` added."""
    out = bars.copy()
    if out.empty:
        for c in ("ref_close", "premium_bp", "volume_share", "venues"):
            out[c] = pd.Series(dtype="float64")
        return out
    group = out.groupby(["symbol", "bar_start"], sort=False)
    out["venues"] = group["exchange"].transform("nunique").astype("int64")
    out["ref_close"] = group["close"].transform("median")
    out["premium_bp"] = np.where(out["venues"] >= 2, (out["close"] / out["ref_close"] - 1.0) * BP, np.nan)
    total = group["volume"].transform("sum")
    out["volume_share"] = np.where(total > 0, out["volume"] / total, np.nan)
    return out.sort_values(["symbol", "bar_start", "exchange"], ignore_index=True)


def venue_spreads(bars: pd.DataFrame) -> pd.DataFrame:
    """One row per (symbol, bar_start) traded on two venues or more: highest and lowest close, spread in bp."""
    if bars.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SPREAD_COLUMNS})
    rows = []
    for (symbol, start), g in bars.groupby(["symbol", "bar_start"], sort=True):
        if g["exchange"].nunique() < 2:
            continue
        hi = g.loc[g["close"].idxmax()]
        lo = g.loc[g["close"].idxmin()]
        mid = (float(hi["close"]) + float(lo["close"])) / 2.0
        rows.append({"symbol": symbol, "bar_start": start, "venues": int(g["exchange"].nunique()),
                     "high_exchange": hi["exchange"], "high_close": float(hi["close"]),
                     "low_exchange": lo["exchange"], "low_close": float(lo["close"]),
                     "spread_bp": (float(hi["close"]) - float(lo["close"])) / mid * BP if mid else np.nan,
                     "volume": float(g["volume"].sum())})
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SPREAD_COLUMNS})
    return pd.DataFrame(rows, columns=SPREAD_COLUMNS)


def volume_shares(bars: pd.DataFrame) -> pd.DataFrame:
    """Each (symbol, exchange)'s share of the symbol's volume over all the bars given (rows sum to 1 per symbol)."""
    if bars.empty:
        return pd.DataFrame({"symbol": [], "exchange": [], "volume": [], "share": []})
    per = bars.groupby(["symbol", "exchange"], as_index=False)["volume"].sum()
    per["share"] = per["volume"] / per.groupby("symbol")["volume"].transform("sum")
    return per.sort_values(["symbol", "share"], ascending=[True, False], ignore_index=True)


__all__ = ["BP", "SPREAD_COLUMNS", "venue_spreads", "venue_table", "volume_shares"]
