"""The per-layer comparisons of ``lakehouse check``, in plain pandas on tables already read (no I/O here).

- :func:`check_bronze`: Bronze's offsets per (topic, partition) against the topic's end offsets.
- :func:`check_silver`: Silver and quarantine against the Bronze rows, through their lineage columns.
- :func:`check_gold`: every Gold bar against the bar of Silver's trades (:func:`expected_bars`), minus the late
  trades; ``is_final`` against the watermark.
- :func:`trade_id_gaps`: ids missing in Silver per (exchange, symbol) of the venues that number trades 1, 2, 3 ...
  (a fact about the feed, not a difference between tables).

Each returns its :class:`Finding` s (the differences) and its facts (counts, lag, watermark) for the report;
``check.py`` reads the tables at the versions to compare and puts the report together.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import TIMEFRAMES
from ..sources.gaps import CONSECUTIVE_IDS, id_ranges, range_ids, show_ranges

LINEAGE = ["topic", "partition", "offset"]
KEYS = ["exchange", "symbol", "trade_id"]
BAR_KEY = ["exchange", "symbol", "bar_start"]
REL_TOL = 1e-9


@dataclass
class Finding:
    """One kind of difference in one table: how many, and the first few keys with what differs."""

    table: str
    kind: str
    count: int
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        more = f" (first {len(self.examples)}: {'; '.join(self.examples)})" if self.examples else ""
        return f"{self.table}: {self.kind}: {self.count}{more}"


def _examples(df: pd.DataFrame, cols: list[str], n: int) -> list[str]:
    return [", ".join(f"{c}={row[c]}" for c in cols) for _, row in df.head(n).iterrows()]


# -- Bronze ------------------------------------------------------------------------------------------
def check_bronze(bronze: pd.DataFrame, end_offsets: dict[tuple[str, int], int] | None,
                 n: int = 5) -> tuple[list[Finding], dict[str, Any]]:
    """Offsets contiguous and unique per (topic, partition); lag against the topic's end offsets."""
    findings: list[Finding] = []
    parts: dict[str, Any] = {}
    for (topic, part), offs in bronze.groupby(["topic", "partition"])["offset"]:
        o = np.sort(offs.to_numpy())
        same = o[1:] == o[:-1]
        if same.any():
            doubled = o[1:][same]
            findings.append(Finding("bronze", f"offset stored twice in {topic}[{part}]", len(doubled),
                                    [str(x) for x in doubled[:n]]))
        u = o[np.r_[True, ~same]]
        gaps = np.nonzero(np.diff(u) > 1)[0]
        if len(gaps):
            missing = int((np.diff(u)[gaps] - 1).sum())
            findings.append(Finding("bronze", f"offsets missing in {topic}[{part}]", missing,
                                    [f"{u[i] + 1}..{u[i + 1] - 1}" for i in gaps[:n]]))
        end = None if end_offsets is None else end_offsets.get((topic, int(part)))
        parts[f"{topic}[{part}]"] = {"first": int(u[0]), "last": int(u[-1]), "rows": int(len(o)),
                                     "lag": None if end is None else max(0, end - int(u[-1]) - 1)}
    for (topic, part), end in sorted((end_offsets or {}).items()):  # a partition Bronze has no row of: all lag
        if end > 0 and f"{topic}[{part}]" not in parts:
            parts[f"{topic}[{part}]"] = {"first": None, "last": None, "rows": 0, "lag": int(end)}
    return findings, {"bronze_rows": int(len(bronze)), "bronze_partitions": parts}


# -- Silver + quarantine -----------------------------------------------------------------------------
_RAW_TEXT = ("exchange", "symbol", "trade_id", "side", "venue_symbol")


def _raw_fields(values: pd.Series) -> pd.DataFrame:
    """exchange, symbol, trade_id, price, qty, side of Bronze messages (None/NaN where unreadable).

    One-line JSON objects of the usual types go through Arrow's JSON reader in one call; anything else
    (a string price, a message that is not an object) is read message by message.
    """
    try:
        df = _raw_fields_arrow(values)
    except (pa.ArrowInvalid, ValueError):
        df = _raw_fields_python(values)
    df["symbol"] = df["symbol"].str.upper()
    df["side"] = df["side"].str.lower()
    return df


def _raw_fields_arrow(values: pd.Series) -> pd.DataFrame:
    from pyarrow import json as pj

    if values.isna().any() or values.str.contains("\n", regex=False).any():
        raise ValueError("not one JSON object per line")
    schema = pa.schema([*((c, pa.string()) for c in _RAW_TEXT), ("price", pa.float64()), ("qty", pa.float64())])
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    table = pj.read_json(io.BytesIO("\n".join(values).encode()), parse_options=options)
    if table.num_rows != len(values):
        raise ValueError("rows lost")
    df = table.to_pandas()
    df.index = values.index
    return df


def _raw_fields_python(values: pd.Series) -> pd.DataFrame:
    rows = []
    for text in values:
        try:
            obj = json.loads(text) if text is not None else None
        except ValueError:
            obj = None
        obj = obj if isinstance(obj, dict) else {}
        rows.append({k: obj.get(k) for k in (*_RAW_TEXT, "price", "qty")})
    df = pd.DataFrame(rows, index=values.index, columns=[*_RAW_TEXT, "price", "qty"])
    for c in ("price", "qty"):
        df[c] = pd.to_numeric(df[c].astype("string"), errors="coerce").astype(float)
    for c in _RAW_TEXT:
        df[c] = df[c].map(lambda v: None if v is None else str(v))
    return df


def _valid(raw: pd.DataFrame) -> pd.Series:
    """The plainest of Silver's rules, enough to tell a valid later copy from a bad message."""
    finite = raw["price"].map(lambda x: isinstance(x, float) and math.isfinite(x)) & raw["qty"].map(
        lambda x: isinstance(x, float) and math.isfinite(x))
    return (raw[KEYS].notna().all(axis=1) & finite & (raw["price"] > 0) & (raw["qty"] > 0)
            & raw["side"].isin(["buy", "sell"]))


def _lineage_keys(df: pd.DataFrame, topics: list[str]) -> np.ndarray:
    """(topic, partition, offset) as one int64 (topic code: 7 bits, partition: 16, offset: 40)."""
    code = pd.Categorical(df["topic"], categories=topics).codes.astype(np.int64) + 1  # 0: a topic Bronze lacks
    return (code << 56) | (df["partition"].to_numpy(np.int64) << 40) | df["offset"].to_numpy(np.int64)


def check_silver(bronze: pd.DataFrame, silver: pd.DataFrame, quarantine: pd.DataFrame,
                 n: int = 5) -> tuple[list[Finding], dict[str, Any]]:
    """Silver and quarantine against the Bronze rows their query had read (see the module doc)."""
    out: list[Finding] = []
    doubled = silver[silver.duplicated(KEYS, keep=False)].sort_values(KEYS)
    if len(doubled):
        out.append(Finding("silver", "trade held more than once", int(silver.duplicated(KEYS).sum()),
                           _examples(doubled, KEYS + LINEAGE, n)))
    topics = sorted(set(bronze["topic"].unique()))
    b_key, s_key, q_key = (_lineage_keys(df, topics) for df in (bronze, silver, quarantine))
    for name, df, key in (("silver", silver, s_key), ("quarantine", quarantine, q_key)):
        orphan = df[~np.isin(key, b_key)]
        if len(orphan):
            out.append(Finding(name, "row with no Bronze message", len(orphan), _examples(orphan, LINEAGE, n)))
    both = silver[np.isin(s_key, q_key)]
    if len(both):
        out.append(Finding("silver", "message both in Silver and in quarantine", len(both),
                           _examples(both, LINEAGE, n)))
    # Silver's values are its Bronze message's
    held = bronze[np.isin(b_key, s_key)]
    raw = _raw_fields(held["value_raw"]).assign(_k=b_key[np.isin(b_key, s_key)])
    mine = silver.assign(_k=s_key).merge(raw, on="_k", suffixes=("", "_raw"))
    diff = pd.Series(False, index=mine.index)
    for c in _RAW_TEXT:
        if c in silver:  # a Silver read without venue_symbol (made before it) is compared on the rest
            diff |= mine[c].astype("string").fillna("") != mine[f"{c}_raw"].astype("string").fillna("")
    for c in ("price", "qty"):
        diff |= mine[c].astype(float).to_numpy() != mine[f"{c}_raw"].astype(float).to_numpy()
    if diff.any():
        out.append(Finding("silver", "values differ from the Bronze message", int(diff.sum()),
                           _examples(mine[diff], LINEAGE + ["price", "price_raw", "qty", "qty_raw"], n)))
    # Bronze rows in neither table: later copies of a Silver trade, or lost
    in_neither = ~np.isin(b_key, np.concatenate([s_key, q_key]))
    rest = bronze[in_neither]
    raw = _raw_fields(rest["value_raw"]).join(rest[LINEAGE]).assign(_k=b_key[in_neither])
    first = silver.assign(_k_silver=pd.array(s_key, dtype="Int64")).drop_duplicates(KEYS).set_index(KEYS)
    raw = raw.join(first[["_k_silver"]], on=KEYS)  # Int64: a float would round the 64-bit keys
    raw["_k_silver"] = raw["_k_silver"].astype("Int64").fillna(-1).astype("int64")
    valid = _valid(raw)
    copy = valid & (raw["_k_silver"] >= 0)
    later = copy & (raw["_k"] > raw["_k_silver"])
    if (copy & ~later).any():
        wrong = raw[copy & ~later]
        out.append(Finding("silver", "trade held from a later offset than its first message", len(wrong),
                           _examples(wrong, KEYS + LINEAGE, n)))
    lost_valid, lost_bad = raw[valid & ~copy], raw[~valid]
    if len(lost_valid):
        out.append(Finding("silver", "valid trade missing (in neither Silver nor quarantine)", len(lost_valid),
                           _examples(lost_valid, LINEAGE + KEYS, n)))
    if len(lost_bad):
        out.append(Finding("quarantine", "invalid message missing (in neither Silver nor quarantine)",
                           len(lost_bad), _examples(lost_bad, LINEAGE, n)))
    return out, {"silver_rows": int(len(silver)), "quarantine_rows": int(len(quarantine)),
                 "duplicates": int(copy.sum())}


# -- Gold --------------------------------------------------------------------------------------------
def in_trade_order(trades: pd.DataFrame) -> pd.DataFrame:
    """``trades`` sorted by Gold's order key (event_time, len(trade_id), trade_id), with ``_us``, ``_buy``,
    ``_sell`` columns: what :func:`expected_bars` needs (sorting once serves every timeframe)."""
    t = trades.assign(_us=_micros(trades["event_time"]), _n=trades["trade_id"].str.len(),
                      _buy=trades["qty"].where(trades["side"] == "buy", 0.0),
                      _sell=trades["qty"].where(trades["side"] == "sell", 0.0))
    return t.sort_values(["_us", "_n", "trade_id"], kind="stable")


def expected_bars(trades: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """The bars of ``trades`` (Silver's columns, or :func:`in_trade_order`'s result for speed)."""
    step = TIMEFRAMES[timeframe] * 1_000_000
    t = trades if "_us" in trades else in_trade_order(trades)
    t = t.assign(_start=t["_us"] - t["_us"] % step)
    g = t.groupby(["exchange", "symbol", "_start"], sort=True)
    bars = g.agg(open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
                 volume=("qty", "sum"), trades=("price", "size"), buy_volume=("_buy", "sum"),
                 sell_volume=("_sell", "sum")).reset_index()
    bars["bar_start"] = bars.pop("_start")
    return bars


def _micros(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s, utc=True)
    return s.astype("datetime64[us, UTC]").astype("int64")


def check_gold(silver: pd.DataFrame, late: pd.DataFrame, gold: dict[str, pd.DataFrame],
               n: int = 5) -> tuple[list[Finding], dict[str, Any]]:
    """Every Gold table against the bars of Silver's trades minus the late ones; ``is_final`` vs watermark."""
    out: list[Finding] = []
    facts: dict[str, Any] = {}
    late_keys = late.set_index(KEYS).index
    not_in_silver = late[~late_keys.isin(silver.set_index(KEYS).index)]
    if len(not_in_silver):
        out.append(Finding("gold/late_trades", "late trade that is not a Silver trade", len(not_in_silver),
                           _examples(not_in_silver, KEYS, n)))
    on_time = late[_micros(late["event_time"]) >= _micros(late["watermark"])] if len(late) else late
    if len(on_time):
        out.append(Finding("gold/late_trades", "trade not older than its watermark", len(on_time),
                           _examples(on_time, KEYS + ["event_time", "watermark"], n)))
    trades = in_trade_order(silver[~silver.set_index(KEYS).index.isin(late_keys)] if len(late) else silver)
    for tf, table in gold.items():
        name = f"gold/bars_{tf}"
        want = expected_bars(trades, tf)
        have = table.copy()
        have["bar_start"] = _micros(have["bar_start"])
        m = want.merge(have, on=BAR_KEY, how="outer", suffixes=("", "_gold"), indicator=True)
        missing, extra = m[m["_merge"] == "left_only"], m[m["_merge"] == "right_only"]
        show = _bar_label
        if len(missing):
            out.append(Finding(name, "bar missing", len(missing), [show(r) for _, r in missing.head(n).iterrows()]))
        if len(extra):
            out.append(Finding(name, "bar with no Silver trades", len(extra),
                               [show(r) for _, r in extra.head(n).iterrows()]))
        both = m[m["_merge"] == "both"]
        for col, exact in (("trades", True), ("open", True), ("high", True), ("low", True), ("close", True),
                           ("volume", False), ("buy_volume", False), ("sell_volume", False)):
            a, b = both[col].astype(float), both[f"{col}_gold"].astype(float)
            bad = both[(a != b) if exact else ~np.isclose(a, b, rtol=REL_TOL, atol=1e-12)]
            if len(bad):
                out.append(Finding(name, f"{col} differs", len(bad),
                                   [f"{show(r)}: {col}={r[f'{col}_gold']!r}, Silver gives {r[col]!r}"
                                    for _, r in bad.head(n).iterrows()]))
        wm = _micros(table["watermark"].dropna()).max() if table["watermark"].notna().any() else None
        step = TIMEFRAMES[tf] * 1_000_000
        end = have["bar_start"] + step
        final = have["is_final"].fillna(False).astype(bool)
        row_wm = _micros(table["watermark"]).where(table["watermark"].notna(), -1)
        wrong_final = have[final & (end.to_numpy() > row_wm.to_numpy())]
        wrong_forming = have[~final & (end <= (wm if wm is not None else -1))]
        for kind, bad in (("final before the watermark passed its end", wrong_final),
                          ("still forming after the watermark passed its end", wrong_forming)):
            if len(bad):
                out.append(Finding(name, kind, len(bad), [show(r) for _, r in bad.head(n).iterrows()]))
        facts[tf] = {"bars": int(len(table)), "final": int(final.sum()), "forming": int((~final).sum()),
                     "late": int(len(late)),
                     "watermark": "-" if wm is None else f"{pd.Timestamp(wm, unit='us', tz='UTC'):%Y-%m-%d %H:%M:%S}"}
    return out, {"gold": facts}


def trade_id_gaps(silver: pd.DataFrame, n: int = 5) -> dict[str, dict[str, Any]]:
    """Per "exchange SYMBOL" of a venue with consecutive ids: the first and last id Silver holds, how many ids
    between them it lacks, and the first ``n`` missing ranges (``"101..103"``). Ids that are not plain digits
    (another venue's scheme) are passed over."""
    out: dict[str, dict[str, Any]] = {}
    held = silver[silver["exchange"].isin(sorted(CONSECUTIVE_IDS))]
    for (exchange, symbol), ids in held.groupby(["exchange", "symbol"], sort=True)["trade_id"]:
        digits = ids[ids.str.fullmatch(r"[0-9]{1,18}")].astype("int64").to_numpy()
        if not len(digits):
            continue
        ranges = id_ranges(digits)
        out[f"{exchange} {symbol}"] = {"first": int(digits.min()), "last": int(digits.max()),
                                       "missing": range_ids(ranges), "ranges": len(ranges),
                                       "examples": show_ranges(ranges, n) if ranges else ""}
    return out


def _bar_label(r: pd.Series) -> str:
    return f"{r['exchange']} {r['symbol']} {pd.Timestamp(int(r['bar_start']), unit='us', tz='UTC'):%Y-%m-%d %H:%M}"


__all__ = ["BAR_KEY", "KEYS", "LINEAGE", "Finding", "check_bronze", "check_gold", "check_silver", "expected_bars",
           "in_trade_order", "trade_id_gaps"]
