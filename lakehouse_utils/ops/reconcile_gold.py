"""Gold against Silver for ``lakehouse check``, in plain pandas on frames already read (no I/O here).

The bars of Silver's trades are built in pieces: :func:`partial_bars` makes the bars of one slice of the trades
(any slice, in any order), with the order key of each bar's first and last trade, and :func:`merge_partials`
joins the pieces of the same bar. So ``check`` can read Silver a batch at a time and keep only the bars, whose
number grows with time and symbols, not with trades. Open and close are the prices of the trades first and last
in Gold's order (event_time, len(trade_id), trade_id), exactly; volumes are sums (compared to 1e-9, the order of
the sums changes with the slices).

- :func:`expected_bars`: the bars of a whole frame of trades (what tests compare Gold with, too);
- :func:`late_findings`: the late-trades table against Silver and the watermark;
- :func:`compare_gold`: every Gold table against the expected bars; ``is_final`` against the watermark.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..config import TIMEFRAMES
from .reconcile import KEYS, Finding, examples_of

BAR_KEY = ["exchange", "symbol", "bar_start"]
REL_TOL = 1e-9
_FIRST = ["_o_us", "_o_n", "_o_id"]
_LAST = ["_c_us", "_c_n", "_c_id"]
_SUMS = ["volume", "trades", "buy_volume", "sell_volume"]
BAR_COLUMNS = [*BAR_KEY, "open", "high", "low", "close", "volume", "trades", "buy_volume", "sell_volume"]


def micros(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s, utc=True)
    return s.astype("datetime64[us, UTC]").astype("int64")


def in_trade_order(trades: pd.DataFrame) -> pd.DataFrame:
    """``trades`` sorted by Gold's order key (event_time, len(trade_id), trade_id), with ``_us``, ``_buy``,
    ``_sell`` columns: what :func:`partial_bars` needs (sorting once serves every timeframe)."""
    t = trades.assign(_us=micros(trades["event_time"]), _n=trades["trade_id"].str.len(),
                      _buy=trades["qty"].where(trades["side"] == "buy", 0.0),
                      _sell=trades["qty"].where(trades["side"] == "sell", 0.0))
    return t.sort_values(["_us", "_n", "trade_id"], kind="stable")


def partial_bars(trades: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """The bars of these trades (Silver's columns, or :func:`in_trade_order`'s result), each with the order key
    of its first and last trade, so that :func:`merge_partials` can join it with the same bar of other trades."""
    step = TIMEFRAMES[timeframe] * 1_000_000
    t = trades if "_us" in trades else in_trade_order(trades)
    t = t.assign(_start=t["_us"] - t["_us"] % step)
    g = t.groupby(["exchange", "symbol", "_start"], sort=True)
    bars = g.agg(open=("price", "first"), _o_us=("_us", "first"), _o_n=("_n", "first"), _o_id=("trade_id", "first"),
                 close=("price", "last"), _c_us=("_us", "last"), _c_n=("_n", "last"), _c_id=("trade_id", "last"),
                 high=("price", "max"), low=("price", "min"), volume=("qty", "sum"), trades=("price", "size"),
                 buy_volume=("_buy", "sum"), sell_volume=("_sell", "sum")).reset_index()
    bars["bar_start"] = bars.pop("_start")
    return bars


def merge_partials(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The partial bars of several slices of trades as one partial bar per (exchange, symbol, bar_start)."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return partial_bars(pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
            ("exchange", object), ("symbol", object), ("trade_id", object), ("price", float), ("qty", float),
            ("side", object), ("event_time", "datetime64[us, UTC]"))}), "1m")
    if len(parts) == 1:
        return parts[0]
    p = pd.concat(parts, ignore_index=True)
    first = p.sort_values(_FIRST, kind="stable").drop_duplicates(BAR_KEY, keep="first")
    last = p.sort_values(_LAST, kind="stable").drop_duplicates(BAR_KEY, keep="last")
    sums = p.groupby(BAR_KEY, sort=True).agg(high=("high", "max"), low=("low", "min"),
                                             **{c: (c, "sum") for c in _SUMS}).reset_index()
    out = sums.merge(first[[*BAR_KEY, "open", *_FIRST]], on=BAR_KEY).merge(last[[*BAR_KEY, "close", *_LAST]],
                                                                           on=BAR_KEY)
    return out.sort_values(BAR_KEY, ignore_index=True)


def expected_bars(trades: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """The bars of ``trades`` (Silver's columns, or :func:`in_trade_order`'s result for speed)."""
    return partial_bars(trades, timeframe)[BAR_COLUMNS]


def late_findings(late: pd.DataFrame, not_in_silver: pd.DataFrame, n: int = 5) -> list[Finding]:
    """The late-trades table: each must be a Silver trade (``not_in_silver``: those that are not) older than
    its watermark."""
    out: list[Finding] = []
    if len(not_in_silver):
        out.append(Finding("gold/late_trades", "late trade that is not a Silver trade", len(not_in_silver),
                           examples_of(not_in_silver, KEYS, n)))
    on_time = late[micros(late["event_time"]) >= micros(late["watermark"])] if len(late) else late
    if len(on_time):
        out.append(Finding("gold/late_trades", "trade not older than its watermark", len(on_time),
                           examples_of(on_time, KEYS + ["event_time", "watermark"], n)))
    return out


def compare_gold(want: dict[str, pd.DataFrame], late: pd.DataFrame, gold: dict[str, pd.DataFrame],
                 n: int = 5) -> tuple[list[Finding], dict[str, Any]]:
    """Every Gold table against ``want`` (its timeframe's bars of Silver's trades minus the late ones);
    ``is_final`` against the watermark."""
    out: list[Finding] = []
    facts: dict[str, Any] = {}
    for tf, table in gold.items():
        name = f"gold/bars_{tf}"
        have = table.copy()
        have["bar_start"] = micros(have["bar_start"])
        m = want[tf].merge(have, on=BAR_KEY, how="outer", suffixes=("", "_gold"), indicator=True)
        missing, extra = m[m["_merge"] == "left_only"], m[m["_merge"] == "right_only"]
        if len(missing):
            out.append(Finding(name, "bar missing", len(missing),
                               [_bar_label(r) for _, r in missing.head(n).iterrows()]))
        if len(extra):
            out.append(Finding(name, "bar with no Silver trades", len(extra),
                               [_bar_label(r) for _, r in extra.head(n).iterrows()]))
        both = m[m["_merge"] == "both"]
        for col, exact in (("trades", True), ("open", True), ("high", True), ("low", True), ("close", True),
                           ("volume", False), ("buy_volume", False), ("sell_volume", False)):
            a, b = both[col].astype(float), both[f"{col}_gold"].astype(float)
            bad = both[(a != b) if exact else ~np.isclose(a, b, rtol=REL_TOL, atol=1e-12)]
            if len(bad):
                out.append(Finding(name, f"{col} differs", len(bad),
                                   [f"{_bar_label(r)}: {col}={r[f'{col}_gold']!r}, Silver gives {r[col]!r}"
                                    for _, r in bad.head(n).iterrows()]))
        wm = micros(table["watermark"].dropna()).max() if table["watermark"].notna().any() else None
        step = TIMEFRAMES[tf] * 1_000_000
        end = have["bar_start"] + step
        final = have["is_final"].fillna(False).astype(bool)
        row_wm = micros(table["watermark"]).where(table["watermark"].notna(), -1)
        wrong_final = have[final & (end.to_numpy() > row_wm.to_numpy())]
        wrong_forming = have[~final & (end <= (wm if wm is not None else -1))]
        for kind, bad in (("final before the watermark passed its end", wrong_final),
                          ("still forming after the watermark passed its end", wrong_forming)):
            if len(bad):
                out.append(Finding(name, kind, len(bad), [_bar_label(r) for _, r in bad.head(n).iterrows()]))
        facts[tf] = {"bars": int(len(table)), "final": int(final.sum()), "forming": int((~final).sum()),
                     "late": int(len(late)),
                     "watermark": "-" if wm is None else f"{pd.Timestamp(wm, unit='us', tz='UTC'):%Y-%m-%d %H:%M:%S}"}
    return out, {"gold": facts}


def check_gold(silver: pd.DataFrame, late: pd.DataFrame, gold: dict[str, pd.DataFrame],
               n: int = 5) -> tuple[list[Finding], dict[str, Any]]:
    """Every Gold table against the bars of all of Silver's trades (one frame) minus the late ones."""
    late_keys = late.set_index(KEYS).index
    found = late_findings(late, late[~late_keys.isin(silver.set_index(KEYS).index)], n)
    trades = in_trade_order(silver[~silver.set_index(KEYS).index.isin(late_keys)] if len(late) else silver)
    bars, facts = compare_gold({tf: expected_bars(trades, tf) for tf in gold}, late, gold, n)
    return found + bars, facts


def _bar_label(r: pd.Series) -> str:
    return f"{r['exchange']} {r['symbol']} {pd.Timestamp(int(r['bar_start']), unit='us', tz='UTC'):%Y-%m-%d %H:%M}"


__all__ = ["BAR_KEY", "check_gold", "compare_gold", "expected_bars", "in_trade_order", "late_findings",
           "merge_partials", "partial_bars"]
