"""``lakehouse check``: do the tables agree with the topic and with each other?  Read with deltalake/pandas.

An independent reconciliation, in plain pandas (none of the layers' Spark code is reused):

- **Bronze** vs Kafka: per (topic, partition) the offsets are contiguous from Bronze's first to its last, none
  twice; the topic's end offset minus Bronze's is the lag (reported, not an error: a query may be running).
- **Silver and quarantine** vs Bronze, through their lineage columns (topic, partition, offset): every Bronze
  row is in Silver or in quarantine (not both), or is a later copy of a trade Silver holds from an earlier
  offset; Silver holds each (exchange, symbol, trade_id) once, with the values of its Bronze message; nothing in
  either has no Bronze row.
- **Gold** vs Silver: every bar of every timeframe equals the bar of Silver's trades (minus the late trades,
  which must be Silver trades older than their watermark): trades, open, high, low, close exactly, volumes to
  1e-9; ``is_final`` agrees with the watermark.
- **Trade ids** (reported, not a difference): for the venues that number their trades 1, 2, 3 ... per symbol
  (Kraken, Coinbase, Binance), the ids missing in Silver between its first and last one, with their ranges. The
  tables agree about those; the trades never reached Kafka (a reconnect, a rollover). Gap fill and ``lakehouse
  backfill`` fetch such ids over REST; the ranges they could not fetch (their ledger, ``Settings.unfilled_gaps``)
  are listed here too (reported, not a difference).

When the layers run as three queries, a layer may be behind the one it reads: each comparison uses the version
of the upstream table its query had processed (from the query's checkpoint), so a lag is not a difference.
This module reads the tables at those versions and puts the :class:`Report` together; the comparisons are in
``reconcile.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import TIMEFRAMES, Settings, table_exists
from ..layers.follow import processed_version
from ..layers.streaming import LAYER_CHECKPOINTS
from ..sources.gaps import read_unfilled
from .reconcile import KEYS, LINEAGE, Finding, check_bronze, check_gold, check_silver, trade_id_gaps


@dataclass
class Report:
    data_dir: str
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "data_dir": self.data_dir, "seconds": round(self.seconds, 3), "facts": self.facts,
                "findings": [asdict(f) for f in self.findings]}

    def brief(self) -> str:
        """A few lines that depend only on the tables (no path, topic name or timing): notebook 07's check."""
        f = self.facts
        parts = f.get("bronze_partitions", {}).values()
        lags = {p["lag"] for p in parts}
        lag = "unknown" if None in lags else f"{sum(lags):,}"
        lines = [f"ok: {self.ok} ({len(self.findings)} kind(s) of difference)",
                 f"bronze: {f.get('bronze_rows', 0):,} rows in {len(parts)} partition(s), lag {lag}"]
        if "silver_rows" in f:
            lines.append(f"silver: {f['silver_rows']:,} trades, {f['duplicates']:,} later copies left out, "
                         f"{f['quarantine_rows']:,} quarantined")
        if f.get("gold"):
            lines.append("gold: " + ", ".join(f"{tf} {g['bars']} bars ({g['final']} final)"
                                              for tf, g in f["gold"].items()))
        return "\n".join(lines)

    def summary(self) -> str:
        f = self.facts
        lines = [f"lakehouse check: {self.data_dir} (read with deltalake + pandas in {self.seconds:.1f} s)"]
        for t, p in f.get("bronze_partitions", {}).items():
            lag = "lag unknown (broker not reached)" if p.get("lag") is None else f"lag {p['lag']:,}"
            held = "no rows" if not p["rows"] else f"offsets {p['first']:,}..{p['last']:,} ({p['rows']:,} rows)"
            lines.append(f"  bronze     {t}: {held}, {lag}")
        if "silver_rows" in f:
            lines.append(f"  silver     {f['silver_rows']:,} trades, {f['duplicates']:,} later copies left out, "
                         f"{f['quarantine_rows']:,} quarantined; behind Bronze by {f['silver_behind']:,} rows")
        for tf, g in f.get("gold", {}).items():
            lines.append(f"  gold {tf:<5} {g['bars']:,} bars ({g['final']:,} final, {g['forming']:,} forming), "
                         f"{g['late']:,} late trades left out, watermark {g['watermark']}")
        for key, g in f.get("trade_id_gaps", {}).items():
            missing = (f"{g['missing']:,} missing in {g['ranges']:,} range(s): {g['examples']}" if g["missing"]
                       else "none missing")
            lines.append(f"  ids  {key}: {g['first']}..{g['last']}, {missing}")
        for g in f.get("unfilled_gaps", []):
            span = f"{g['first']}..{g['last']}" if g["last"] != g["first"] else str(g["first"])
            lines.append(f"  unfilled   {g['exchange']} {g['symbol']} {span} ({g['ids']:,} ids, not filled by "
                         f"{g['by']} at {g['at']}: {g['why']})")
        if self.ok:
            lines.append("OK: Bronze, Silver, quarantine and Gold agree.")
        else:
            lines.append(f"FAILED: {sum(x.count for x in self.findings):,} difference(s):")
            lines += [f"  - {x.line()}" for x in self.findings]
        return "\n".join(lines)


# -- reading -----------------------------------------------------------------------------------------
def read_table(path: Path, columns: list[str] | None = None, version: int | None = None) -> pd.DataFrame | None:
    """A Delta table as pandas (``None`` when there is no table); ``version``: as of that commit."""
    from deltalake import DeltaTable

    if not table_exists(path):
        return None
    dt = DeltaTable(str(path), version=version) if version is not None else DeltaTable(str(path))
    return dt.to_pyarrow_dataset().to_table(columns=columns).to_pandas()


def columns_of(path: Path) -> set[str]:
    from deltalake import DeltaTable

    return {f.name for f in DeltaTable(str(path)).schema().fields} if table_exists(path) else set()


def table_version(path: Path) -> int | None:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).version() if table_exists(path) else None


# -- the whole check ---------------------------------------------------------------------------------
def _end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int] | None:
    from ..kafka.topics import end_offsets
    from ..procs import reachable

    if not reachable(settings.bootstrap):
        return None
    try:
        return {(t, p): high for t in topics for p, high in end_offsets(settings, t).items()}
    except Exception:  # the topic is gone, the broker is stopping: lag unknown
        return None


def check(settings: Settings, examples: int = 5, progress: Callable[[str], None] | None = None) -> Report:
    """Reconcile the data dir's tables (see the module doc); ``progress`` gets a line per step."""
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    report = Report(str(settings.data_dir))
    # the ids gap fill and backfill could not fetch over REST: listed whatever the tables hold
    report.facts["unfilled_gaps"] = [{**g, "ids": int(g["last"]) - int(g["first"]) + 1}
                                     for g in read_unfilled(settings.unfilled_gaps)]
    # the downstream tables are read first and the upstream ones as of what their query had processed, so a
    # layer that is behind shows as lag, never as a difference
    say("reading Gold")
    gold_version = processed_version(settings.checkpoint(LAYER_CHECKPOINTS[2]))
    gold = {tf: t for tf in TIMEFRAMES if (t := read_table(settings.bars_table(tf))) is not None}
    late = read_table(settings.late_trades)
    say("reading Silver and quarantine")
    gold_cols = ["exchange", "symbol", "trade_id", "price", "qty", "side", "event_time", *LINEAGE]
    # venue_symbol when Silver has it (a Silver made before it got it added when a layer started on it)
    silver_cols = gold_cols + [c for c in ("venue_symbol",) if c in columns_of(settings.silver)]
    silver = read_table(settings.silver, silver_cols)
    quarantine = read_table(settings.quarantine, LINEAGE)
    if gold_version is not None and gold_version != table_version(settings.silver):
        silver_at_gold = read_table(settings.silver, gold_cols, gold_version)
    else:
        silver_at_gold = silver
    say("reading Bronze")
    bronze_version = processed_version(settings.checkpoint(LAYER_CHECKPOINTS[1]))
    latest = table_version(settings.bronze)
    bronze = read_table(settings.bronze, ["value_raw", *LINEAGE])
    if bronze is None:
        report.findings.append(Finding("bronze", "no table", 1, [str(settings.bronze)]))
        report.seconds = time.perf_counter() - t0
        return report
    say("checking Bronze")
    found, facts = check_bronze(bronze, _end_offsets(settings, sorted(bronze["topic"].unique())), examples)
    report.findings += found
    report.facts.update(facts)
    if silver is not None:
        say("checking Silver and quarantine")
        pinned = bronze_version is not None and bronze_version != latest
        read = read_table(settings.bronze, ["value_raw", *LINEAGE], bronze_version) if pinned else bronze
        q = quarantine if quarantine is not None else pd.DataFrame(columns=LINEAGE)
        found, facts = check_silver(read, silver, q, examples)
        report.findings += found
        report.facts.update(facts, silver_behind=int(len(bronze) - len(read)),
                            trade_id_gaps=trade_id_gaps(silver, examples))
    if silver_at_gold is not None and gold:
        say("checking Gold")
        late_df = late if late is not None else pd.DataFrame(columns=[*KEYS, "event_time", "watermark"])
        found, facts = check_gold(silver_at_gold, late_df, gold, examples)
        report.findings += found
        report.facts.update(facts)
    report.seconds = time.perf_counter() - t0
    return report
