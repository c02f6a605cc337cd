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
from typing import Any

import pandas as pd

from ..config import TIMEFRAMES, Settings
from ..layers.follow import processed_version
from ..layers.streaming import LAYER_CHECKPOINTS
from ..sources.gaps import read_unfilled
from .check_scan import (
    Bars,
    bronze_offsets,
    columns_of,
    gold_bars_pass,
    quarantine_pass,
    read_table,
    settle_rest,
    silver_against_bronze_slices,
    silver_pass,
    table_version,
)
from .reconcile import KEYS, Finding, bronze_findings, id_gap_facts, merge_findings
from .reconcile_gold import compare_gold, late_findings


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
    n = examples
    report = Report(str(settings.data_dir))
    # the ids gap fill and backfill could not fetch over REST: listed whatever the tables hold
    report.facts["unfilled_gaps"] = [{**g, "ids": int(g["last"]) - int(g["first"]) + 1}
                                     for g in read_unfilled(settings.unfilled_gaps)]
    # the downstream tables' versions are taken first and the upstream ones are read as of what their query had
    # processed, so a layer that is behind shows as lag, never as a difference
    say("reading Gold")
    gold_version = processed_version(settings.checkpoint(LAYER_CHECKPOINTS[2]))
    gold = {tf: t for tf in TIMEFRAMES if (t := read_table(settings.bars_table(tf))) is not None}
    late = read_table(settings.late_trades)
    silver_latest = table_version(settings.silver)
    bronze_version = processed_version(settings.checkpoint(LAYER_CHECKPOINTS[1]))
    bronze_latest = table_version(settings.bronze)
    if bronze_latest is None:
        report.findings.append(Finding("bronze", "no table", 1, [str(settings.bronze)]))
        report.seconds = time.perf_counter() - t0
        return report
    say("reading Bronze")
    runs = bronze_offsets(settings.bronze, n)
    found, facts = bronze_findings(runs, _end_offsets(settings, sorted({t for t, _ in runs})), n)
    findings = list(found)
    report.facts.update(facts)
    parts = set(runs)
    late_df = late if late is not None else pd.DataFrame(columns=[*KEYS, "event_time", "watermark"])
    bars = Bars(late_df, list(gold)) if gold else None
    at_gold = gold_version is None or gold_version == silver_latest
    if silver_latest is not None:
        say("reading Silver")
        sf = silver_pass(settings.silver, parts, n, bars if at_gold else None)
        say("reading quarantine")
        q_rows, q_found = quarantine_pass(settings.quarantine, parts, n)
        say("checking Silver and quarantine against Bronze")
        # venue_symbol when Silver has it (a Silver made before it got it added when a layer started on it)
        silver_cols = ["exchange", "symbol", "trade_id", "price", "qty", "side", "event_time", "topic", "partition",
                       "offset", *[c for c in ("venue_symbol",) if c in columns_of(settings.silver)]]
        pinned = bronze_version if bronze_version is not None and bronze_version != bronze_latest else None
        found, copies, pending, read = silver_against_bronze_slices(
            settings.bronze, pinned, settings.silver, settings.quarantine, runs, silver_cols, n, say)
        settled, more = settle_rest(settings.silver, pending, sorted({t for t, _ in runs}), n)
        findings += sf.findings + q_found + found + settled
        report.facts.update(silver_rows=sf.rows, quarantine_rows=q_rows, duplicates=copies + more,
                            silver_behind=int(report.facts["bronze_rows"] - read),
                            trade_id_gaps=id_gap_facts(sf.ids, n))
        if bars is not None:
            if not at_gold:
                say("reading Silver as of Gold's version")
                gold_bars_pass(settings.silver, gold_version, bars)
            say("checking Gold")
            found, facts = compare_gold(bars.want(), late_df, gold, n)
            findings += late_findings(late_df, late_df[~bars.late_seen], n) + found
            report.facts.update(facts)
    report.findings = merge_findings(findings, n)
    report.seconds = time.perf_counter() - t0
    return report
