"""The per-layer comparisons of ``lakehouse check``, in plain pandas on frames already read (no I/O here).

Each works on a whole table or on one slice of it at a time (``check`` reads the tables in slices, so that its
memory stays bounded): what a comparison must carry from slice to slice is small and kept apart.

- Bronze: :class:`Runs` keeps the offsets seen per (topic, partition) as runs of consecutive offsets (and how
  many were seen twice); :func:`bronze_findings` compares them with the topic's end offsets.
- Silver and quarantine against the Bronze rows, through their lineage columns: :func:`silver_against_bronze`
  (rows with no Bronze message, in both tables, values that differ from the message) and :func:`resolve_rest`
  (a Bronze row in neither table must be a later copy of a trade Silver holds from an earlier offset);
  :func:`duplicate_trades`. :func:`check_silver` is all of it on whole frames.
- :func:`trade_id_gaps`: ids missing in Silver per (exchange, symbol) of the venues that number trades 1, 2, 3 ...
  (a fact about the feed, not a difference between tables), from :class:`Runs` of the ids too.
- Gold: ``reconcile_gold.py``.

Each returns its :class:`Finding` s (the differences) and facts (counts, lag) for the report; findings of
several slices are joined by :func:`merge_findings`.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..sources.gaps import CONSECUTIVE_IDS, range_ids, show_ranges

LINEAGE = ["topic", "partition", "offset"]
KEYS = ["exchange", "symbol", "trade_id"]


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


def examples_of(df: pd.DataFrame, cols: list[str], n: int) -> list[str]:
    return [", ".join(f"{c}={row[c]}" for c in cols) for _, row in df.head(n).iterrows()]


def merge_findings(findings: Iterable[Finding], n: int = 5) -> list[Finding]:
    """Findings of several slices as one per (table, kind): counts added, the first ``n`` examples kept."""
    out: dict[tuple[str, str], Finding] = {}
    for f in findings:
        have = out.setdefault((f.table, f.kind), Finding(f.table, f.kind, 0))
        have.count += f.count
        have.examples = (have.examples + f.examples)[:n]
    return list(out.values())


# -- runs of consecutive integers (offsets, trade ids) ----------------------------------------------------
@dataclass
class Runs:
    """The integers seen so far as sorted, disjoint runs ``[(first, last), ...]`` of consecutive ones, with how
    many were seen more than once (and the smallest few of those): offsets of a partition, ids of a symbol."""

    runs: list[tuple[int, int]] = field(default_factory=list)
    rows: int = 0
    doubled: int = 0
    doubled_examples: list[int] = field(default_factory=list)

    def add(self, values: np.ndarray, n: int = 5) -> None:
        o = np.sort(np.asarray(values, dtype=np.int64))
        if not len(o):
            return
        self.rows += len(o)
        same = o[1:] == o[:-1]
        if same.any():
            self.doubled += int(same.sum())
            self.doubled_examples = sorted(self.doubled_examples + [int(x) for x in o[1:][same][:n]])[:n]
        u = o[np.r_[True, ~same]]
        cut = np.nonzero(np.diff(u) > 1)[0]
        firsts, lasts = u[np.r_[0, cut + 1]], u[np.r_[cut, len(u) - 1]]
        self._merge([(int(a), int(b)) for a, b in zip(firsts, lasts, strict=True)], n)

    def _merge(self, new: list[tuple[int, int]], n: int) -> None:
        out: list[tuple[int, int]] = []
        for a, b in sorted(self.runs + new):
            if out and a <= out[-1][1]:  # overlaps a run seen before: those values seen twice
                top = out[-1][1]
                self.doubled += min(b, top) - a + 1
                self.doubled_examples = sorted(self.doubled_examples + list(range(a, min(b, top, a + n - 1) + 1)))[:n]
                out[-1] = (out[-1][0], max(top, b))
            elif out and a == out[-1][1] + 1:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
        self.runs = out

    @property
    def first(self) -> int:
        return self.runs[0][0]

    @property
    def last(self) -> int:
        return self.runs[-1][1]

    def missing(self) -> list[tuple[int, int]]:
        """The ranges missing between the first and the last value."""
        return [(a[1] + 1, b[0] - 1) for a, b in zip(self.runs, self.runs[1:], strict=False)]


# -- Bronze ------------------------------------------------------------------------------------------
def offset_runs(bronze: pd.DataFrame, into: dict[tuple[str, int], Runs] | None = None,
                n: int = 5) -> dict[tuple[str, int], Runs]:
    """Bronze rows' offsets (``LINEAGE`` columns) added to the runs per (topic, partition)."""
    runs = {} if into is None else into
    for (topic, part), offs in bronze.groupby(["topic", "partition"])["offset"]:
        runs.setdefault((str(topic), int(part)), Runs()).add(offs.to_numpy(), n)
    return runs


def bronze_findings(runs: dict[tuple[str, int], Runs], end_offsets: dict[tuple[str, int], int] | None,
                    n: int = 5) -> tuple[list[Finding], dict[str, Any]]:
    """Offsets contiguous and unique per (topic, partition); lag against the topic's end offsets."""
    findings: list[Finding] = []
    parts: dict[str, Any] = {}
    for (topic, part), r in sorted(runs.items()):
        if r.doubled:
            findings.append(Finding("bronze", f"offset stored twice in {topic}[{part}]", r.doubled,
                                    [str(x) for x in r.doubled_examples[:n]]))
        gaps = r.missing()
        if gaps:
            findings.append(Finding("bronze", f"offsets missing in {topic}[{part}]", range_ids(gaps),
                                    [f"{a}..{b}" for a, b in gaps[:n]]))
        end = None if end_offsets is None else end_offsets.get((topic, part))
        parts[f"{topic}[{part}]"] = {"first": r.first, "last": r.last, "rows": r.rows,
                                     "lag": None if end is None else max(0, end - r.last - 1)}
    for (topic, part), end in sorted((end_offsets or {}).items()):  # a partition Bronze has no row of: all lag
        if end > 0 and f"{topic}[{part}]" not in parts:
            parts[f"{topic}[{part}]"] = {"first": None, "last": None, "rows": 0, "lag": int(end)}
    return findings, {"bronze_rows": sum(r.rows for r in runs.values()), "bronze_partitions": parts}


def check_bronze(bronze: pd.DataFrame, end_offsets: dict[tuple[str, int], int] | None,
                 n: int = 5) -> tuple[list[Finding], dict[str, Any]]:
    """:func:`bronze_findings` of a whole Bronze frame."""
    return bronze_findings(offset_runs(bronze, n=n), end_offsets, n)


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


def lineage_keys(df: pd.DataFrame, topics: list[str]) -> np.ndarray:
    """(topic, partition, offset) as one int64 (topic code: 7 bits, partition: 16, offset: 40); ``topics``:
    Bronze's topics, sorted (a topic Bronze lacks is code 0)."""
    code = pd.Categorical(df["topic"], categories=topics).codes.astype(np.int64) + 1
    return (code << 56) | (df["partition"].to_numpy(np.int64) << 40) | df["offset"].to_numpy(np.int64)


def silver_against_bronze(bronze: pd.DataFrame, silver: pd.DataFrame, quarantine: pd.DataFrame, topics: list[str],
                          n: int = 5) -> tuple[list[Finding], pd.DataFrame]:
    """Silver and quarantine rows against the Bronze rows of the same lineage: rows with no Bronze message, in
    both tables, values that differ from the message. Returns the findings and the Bronze rows in neither table,
    read (``KEYS``, ``LINEAGE``, ``_k``, ``_valid``), for :func:`resolve_rest`."""
    out: list[Finding] = []
    b_key, s_key, q_key = (lineage_keys(df, topics) for df in (bronze, silver, quarantine))
    for name, df, key in (("silver", silver, s_key), ("quarantine", quarantine, q_key)):
        orphan = df[~np.isin(key, b_key)]
        if len(orphan):
            out.append(Finding(name, "row with no Bronze message", len(orphan), examples_of(orphan, LINEAGE, n)))
    both = silver[np.isin(s_key, q_key)]
    if len(both):
        out.append(Finding("silver", "message both in Silver and in quarantine", len(both),
                           examples_of(both, LINEAGE, n)))
    # Silver's values are its Bronze message's
    held = np.isin(b_key, s_key)
    raw = _raw_fields(bronze.loc[held, "value_raw"]).assign(_k=b_key[held])
    mine = silver.assign(_k=s_key).merge(raw, on="_k", suffixes=("", "_raw"))
    diff = pd.Series(False, index=mine.index)
    for c in _RAW_TEXT:
        if c in silver:  # a Silver read without venue_symbol (made before it) is compared on the rest
            diff |= mine[c].astype("string").fillna("") != mine[f"{c}_raw"].astype("string").fillna("")
    for c in ("price", "qty"):
        diff |= mine[c].astype(float).to_numpy() != mine[f"{c}_raw"].astype(float).to_numpy()
    if diff.any():
        out.append(Finding("silver", "values differ from the Bronze message", int(diff.sum()),
                           examples_of(mine[diff], LINEAGE + ["price", "price_raw", "qty", "qty_raw"], n)))
    in_neither = ~np.isin(b_key, np.concatenate([s_key, q_key]))
    rest = bronze[in_neither]
    raw = _raw_fields(rest["value_raw"]).join(rest[LINEAGE]).assign(_k=b_key[in_neither])
    return out, raw[[*KEYS, *LINEAGE, "_k"]].assign(_valid=_valid(raw).to_numpy())


def first_copies(silver: pd.DataFrame, topics: list[str]) -> pd.Series:
    """The lineage key of each trade's Silver row (the smallest if Silver holds it twice), indexed by KEYS."""
    keys = pd.Series(pd.array(lineage_keys(silver, topics), dtype="Int64"),
                     index=pd.MultiIndex.from_frame(silver[KEYS].astype(object)))
    return keys.groupby(level=[0, 1, 2]).min().rename("_k_silver")


def resolve_rest(rest: pd.DataFrame, first: pd.Series, n: int = 5) -> tuple[list[Finding], int, pd.DataFrame]:
    """Bronze rows in neither Silver nor quarantine (:func:`silver_against_bronze`'s ``rest``) against the Silver
    row of their trade (``first``, :func:`first_copies`): a valid row is a later copy of a trade Silver holds
    from an earlier offset; an invalid one is a bad message missing from quarantine. Returns the findings, the
    number of later copies, and the valid rows whose trade is not in ``first`` (missing, unless a Silver row
    ``first`` did not cover holds them)."""
    out: list[Finding] = []
    raw = rest.join(first, on=KEYS) if len(rest) else rest.assign(_k_silver=pd.array([], dtype="Int64"))
    k_silver = raw["_k_silver"].astype("Int64").fillna(-1).astype("int64")  # Int64: a float rounds 64-bit keys
    valid = raw["_valid"].astype(bool)
    copy = valid & (k_silver >= 0)
    later = copy & (raw["_k"] > k_silver)
    if (copy & ~later).any():
        wrong = raw[copy & ~later]
        out.append(Finding("silver", "trade held from a later offset than its first message", len(wrong),
                           examples_of(wrong, KEYS + LINEAGE, n)))
    bad = raw[~valid]
    if len(bad):
        out.append(Finding("quarantine", "invalid message missing (in neither Silver nor quarantine)",
                           len(bad), examples_of(bad, LINEAGE, n)))
    return out, int(later.sum()), rest[(valid & ~copy).to_numpy()]


def lost_findings(lost: pd.DataFrame, n: int = 5) -> list[Finding]:
    """Valid Bronze trades that are in neither Silver nor quarantine, and no copy of a Silver trade."""
    return [Finding("silver", "valid trade missing (in neither Silver nor quarantine)", len(lost),
                    examples_of(lost, LINEAGE + KEYS, n))] if len(lost) else []


def duplicate_trades(silver: pd.DataFrame, n: int = 5) -> list[Finding]:
    """Silver rows of a trade (``KEYS``) Silver holds more than once."""
    doubled = silver[silver.duplicated(KEYS, keep=False)].sort_values(KEYS)
    return [Finding("silver", "trade held more than once", int(silver.duplicated(KEYS).sum()),
                    examples_of(doubled, KEYS + LINEAGE, n))] if len(doubled) else []


def check_silver(bronze: pd.DataFrame, silver: pd.DataFrame, quarantine: pd.DataFrame,
                 n: int = 5) -> tuple[list[Finding], dict[str, Any]]:
    """Silver and quarantine against the Bronze rows their query had read, all as whole frames."""
    topics = sorted(set(bronze["topic"].unique()))
    out = duplicate_trades(silver, n)
    found, rest = silver_against_bronze(bronze, silver, quarantine, topics, n)
    settled, copies, lost = resolve_rest(rest, first_copies(silver, topics), n)
    out += found + settled + lost_findings(lost, n)
    return out, {"silver_rows": int(len(silver)), "quarantine_rows": int(len(quarantine)), "duplicates": copies}


# -- trade ids -----------------------------------------------------------------------------------------
def id_runs(silver: pd.DataFrame, into: dict[tuple[str, str], Runs] | None = None) -> dict[tuple[str, str], Runs]:
    """Silver rows' numeric trade ids added to the runs per (exchange, symbol), for the venues that number
    their trades 1, 2, 3 ... (ids that are not plain digits, another venue's scheme, are passed over)."""
    runs = {} if into is None else into
    held = silver[silver["exchange"].isin(sorted(CONSECUTIVE_IDS))]
    for (exchange, symbol), ids in held.groupby(["exchange", "symbol"], sort=True)["trade_id"]:
        digits = ids[ids.str.fullmatch(r"[0-9]{1,18}")].astype("int64").to_numpy()
        if len(digits):
            runs.setdefault((str(exchange), str(symbol)), Runs()).add(digits)
    return runs


def id_gap_facts(runs: dict[tuple[str, str], Runs], n: int = 5) -> dict[str, dict[str, Any]]:
    """Per "exchange SYMBOL": the first and last id Silver holds, how many ids between them it lacks, and the
    first ``n`` missing ranges (``"101..103"``)."""
    out: dict[str, dict[str, Any]] = {}
    for (exchange, symbol), r in sorted(runs.items()):
        ranges = r.missing()
        out[f"{exchange} {symbol}"] = {"first": r.first, "last": r.last, "missing": range_ids(ranges),
                                       "ranges": len(ranges), "examples": show_ranges(ranges, n) if ranges else ""}
    return out


def trade_id_gaps(silver: pd.DataFrame, n: int = 5) -> dict[str, dict[str, Any]]:
    """:func:`id_gap_facts` of a whole Silver frame."""
    return id_gap_facts(id_runs(silver), n)


__all__ = ["KEYS", "LINEAGE", "Finding", "Runs", "bronze_findings", "check_bronze", "check_silver",
           "duplicate_trades", "examples_of", "first_copies", "id_gap_facts", "id_runs", "lineage_keys",
           "lost_findings", "merge_findings", "offset_runs", "resolve_rest", "silver_against_bronze",
           "trade_id_gaps"]
