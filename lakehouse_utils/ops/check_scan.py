"""How ``lakehouse check`` reads the tables: a slice or a batch at a time, so its memory stays bounded.

No table is read whole (only Gold's bars and the late trades, whose number grows with time and symbols, not with
trades):

- :func:`bronze_offsets`: Bronze's lineage columns, batch by batch, kept as runs of offsets per partition;
- :func:`silver_pass`: Silver batch by batch: its trades' ids as runs, a 64-bit hash per trade (8 bytes a trade:
  the one thing that grows with the table, 16 MB at 2M trades) to find the trades held twice, rows of a
  partition Bronze never had, and, when Gold's query had read this version, the bars of its trades in pieces;
- :func:`silver_against_bronze_slices`: Silver and quarantine against Bronze in slices of ~``SLICE_ROWS`` rows,
  each a range of offsets of one partition (Bronze's Parquet files hold their offsets in order, so a slice reads a
  few files); a Bronze row in neither table whose trade is in another slice is looked up at the end
  (:func:`settle_rest`);
- :func:`gold_bars_pass`: the bars of Silver's trades (as of Gold's version) minus the late ones.

The comparisons themselves are in ``reconcile.py`` and ``reconcile_gold.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import table_exists
from .reconcile import (
    KEYS,
    LINEAGE,
    Finding,
    Runs,
    duplicate_trades,
    examples_of,
    first_copies,
    id_runs,
    lost_findings,
    offset_runs,
    resolve_rest,
    silver_against_bronze,
)
from .reconcile_gold import in_trade_order, merge_partials, partial_bars

SLICE_ROWS = 200_000  # Bronze rows per slice of the Silver/quarantine comparison (~400 MB at its peak)
BATCH_ROWS = 131_072  # rows per batch of a streamed read
GOLD_COLUMNS = ["exchange", "symbol", "trade_id", "price", "qty", "side", "event_time"]


# -- reading -----------------------------------------------------------------------------------------
def _table(path: Path, version: int | None = None):  # noqa: ANN202 (deltalake.DeltaTable)
    from deltalake import DeltaTable

    return DeltaTable(str(path), version=version) if version is not None else DeltaTable(str(path))


def read_table(path: Path, columns: list[str] | None = None, version: int | None = None) -> pd.DataFrame | None:
    """A whole Delta table as pandas (``None`` when there is no table); ``version``: as of that commit."""
    if not table_exists(path):
        return None
    return _table(path, version).to_pyarrow_dataset().to_table(columns=columns).to_pandas()


Lineage = tuple[str, int, int | None, int | None]  # topic, partition, offsets from (inclusive), to (exclusive)


def _may_hold(group, lineage: Lineage) -> bool:  # noqa: ANN001 (pyarrow RowGroupMetaData)
    """False when a row group's statistics show it holds no row of ``lineage``."""
    topic, part, lo, hi = lineage
    for i in range(group.num_columns):
        col = group.column(i)
        st = col.statistics
        if st is None or not st.has_min_max:
            continue
        name = col.path_in_schema
        if name == "topic":
            outside = not st.min <= topic <= st.max
        elif name == "partition":
            outside = not st.min <= part <= st.max
        elif name == "offset":
            outside = (lo is not None and st.max < lo) or (hi is not None and st.min >= hi)
        else:
            outside = False
        if outside:
            return False
    return True


def _scan(path: Path, columns: list[str], version: int | None = None,
          lineage: Lineage | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of a Delta table (of ``lineage`` only, if given), ``BATCH_ROWS`` at a time, file by file.

    pyarrow's dataset scanner decodes a whole row group at once (~1 GB for a compacted Bronze's group of 1M
    messages); a Parquet file's own batch reader decodes a batch at a time. A column a file lacks (added to the
    table after it was written) is null."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = _table(path, version)
    schema = table.to_pyarrow_dataset().schema
    for uri in table.file_uris():
        pf = pq.ParquetFile(uri)
        groups = [g for g in range(pf.num_row_groups)
                  if lineage is None or _may_hold(pf.metadata.row_group(g), lineage)]
        if not groups:
            continue
        have = [c for c in columns if c in pf.schema_arrow.names]
        for raw in pf.iter_batches(batch_size=BATCH_ROWS, columns=have, row_groups=groups):
            # the table's types (a file delta-rs wrote holds string_view, one of Spark's string, ...)
            b = pa.RecordBatch.from_arrays([raw.column(c).cast(schema.field(c).type) for c in have], names=have)
            if lineage is not None:
                topic, part, lo, hi = lineage
                keep = pc.and_(pc.equal(b.column("topic"), topic), pc.equal(b.column("partition"), part))
                if lo is not None:
                    keep = pc.and_(keep, pc.greater_equal(b.column("offset"), lo))
                if hi is not None:
                    keep = pc.and_(keep, pc.less(b.column("offset"), hi))
                b = b.filter(keep)
            if b.num_rows:
                yield pa.RecordBatch.from_arrays(
                    [b.column(c) if c in have else pa.nulls(b.num_rows, schema.field(c).type) for c in columns],
                    names=columns)


def read_slice(path: Path, columns: list[str], version: int | None, lineage: Lineage) -> pd.DataFrame | None:
    """The rows of one lineage range of a Delta table, as pandas (``None`` when there is no table)."""
    if not table_exists(path):
        return None
    parts = list(_scan(path, columns, version, lineage))
    if not parts:
        schema = _table(path, version).to_pyarrow_dataset().schema
        return pa.schema([schema.field(c) for c in columns]).empty_table().to_pandas()
    return pa.Table.from_batches(parts).to_pandas()


def batches(path: Path, columns: list[str], version: int | None = None) -> Iterator[pd.DataFrame]:
    """A Delta table's rows, ``BATCH_ROWS`` at a time (nothing when there is no table)."""
    if not table_exists(path):
        return
    for b in _scan(path, columns, version):
        yield b.to_pandas()


def columns_of(path: Path) -> set[str]:
    from deltalake import DeltaTable

    return {f.name for f in DeltaTable(str(path)).schema().fields} if table_exists(path) else set()


def table_version(path: Path) -> int | None:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).version() if table_exists(path) else None


# -- the passes ----------------------------------------------------------------------------------------
def bronze_offsets(path: Path, n: int) -> dict[tuple[str, int], Runs]:
    """Bronze's offsets per (topic, partition), as runs."""
    runs: dict[tuple[str, int], Runs] = {}
    for b in batches(path, LINEAGE):
        offset_runs(b, runs, n)
    return runs


def _outside(df: pd.DataFrame, parts: set[tuple[str, int]]) -> pd.DataFrame:
    """The rows of a (topic, partition) not in ``parts``."""
    tp = pd.MultiIndex.from_arrays([df["topic"].astype(object), df["partition"].astype(int)])
    return df[~tp.isin(list(parts))] if parts else df


def quarantine_pass(path: Path, parts: set[tuple[str, int]], n: int) -> tuple[int, list[Finding]]:
    """Quarantine's rows, and those of a partition Bronze has no row of."""
    rows, orphans = 0, []
    for b in batches(path, LINEAGE):
        rows += len(b)
        if len(out := _outside(b, parts)):
            orphans.append(Finding("quarantine", "row with no Bronze message", len(out), examples_of(out, LINEAGE, n)))
    return rows, orphans


@dataclass
class Bars:
    """The bars of Silver's trades minus the late ones, merged batch by batch; which late trades Silver holds."""

    late: pd.DataFrame
    timeframes: list[str]
    parts: dict[str, pd.DataFrame] = field(default_factory=dict)
    late_seen: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._late_keys = self.late.set_index(KEYS).index
        self.late_seen = np.zeros(len(self.late), dtype=bool)

    def add(self, trades: pd.DataFrame) -> None:
        keys = trades.set_index(KEYS).index
        if len(self.late):
            self.late_seen |= self._late_keys.isin(keys)
            trades = trades[~keys.isin(self._late_keys)]
        t = in_trade_order(trades)
        for tf in self.timeframes:
            self.parts[tf] = merge_partials([self.parts.get(tf), partial_bars(t, tf)])

    def want(self) -> dict[str, pd.DataFrame]:
        return {tf: merge_partials([self.parts.get(tf)]) for tf in self.timeframes}


@dataclass
class SilverFacts:
    rows: int = 0
    ids: dict[tuple[str, str], Runs] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def silver_pass(path: Path, parts: set[tuple[str, int]], n: int, bars: Bars | None = None) -> SilverFacts:
    """Silver batch by batch (see the module doc); ``bars``: also build the bars of its trades."""
    out = SilverFacts()
    hashes = []
    columns = list(dict.fromkeys([*KEYS, *LINEAGE, *(GOLD_COLUMNS if bars is not None else [])]))
    for b in batches(path, columns):
        out.rows += len(b)
        hashes.append(pd.util.hash_pandas_object(b[KEYS], index=False).to_numpy())
        id_runs(b, out.ids)
        if len(orphan := _outside(b, parts)):
            out.findings.append(Finding("silver", "row with no Bronze message", len(orphan),
                                        examples_of(orphan, LINEAGE, n)))
        if bars is not None:
            bars.add(b[GOLD_COLUMNS])
    if hashes:  # a hash seen twice: read those trades' rows again and compare their keys themselves
        h = np.concatenate(hashes)
        values, counts = np.unique(h, return_counts=True)
        twice = values[counts > 1]
        if len(twice):
            rows = [b[np.isin(pd.util.hash_pandas_object(b[KEYS], index=False).to_numpy(), twice)]
                    for b in batches(path, [*KEYS, *LINEAGE])]
            out.findings += duplicate_trades(pd.concat(rows, ignore_index=True), n)
    return out


def gold_bars_pass(path: Path, version: int | None, bars: Bars) -> None:
    """The bars of Silver's trades as of ``version`` (Gold's)."""
    for b in batches(path, GOLD_COLUMNS, version):
        bars.add(b)


def silver_against_bronze_slices(bronze: Path, bronze_version: int | None, silver: Path, quarantine: Path,
                                 runs: dict[tuple[str, int], Runs], silver_cols: list[str], n: int,
                                 say: Callable[[str], None]) -> tuple[list[Finding], int, pd.DataFrame, int]:
    """Silver and quarantine against Bronze (as of ``bronze_version``), a slice of offsets at a time. Returns
    the findings, the later copies found, the Bronze rows in neither table whose trade is in no slice they were
    compared with (for :func:`settle_rest`), and the number of Bronze rows read."""
    topics = sorted({t for t, _ in runs})
    found: list[Finding] = []
    copies, read, pending = 0, 0, []
    slices = []
    for (topic, part), r in sorted(runs.items()):
        step = max(1, int(SLICE_ROWS * (r.last - r.first + 1) / r.rows))  # offsets held more than once: fewer
        edges = list(range(r.first + step, r.last + 1, step))
        slices += [(topic, part, lo, hi) for lo, hi in zip([None, *edges], [*edges, None], strict=True)]
    for i, (topic, part, lo, hi) in enumerate(slices, 1):
        if len(slices) > 1:
            say(f"checking Silver and quarantine against Bronze: slice {i}/{len(slices)}")
        where = (topic, part, lo, hi)
        b = read_slice(bronze, ["value_raw", *LINEAGE], bronze_version, where)
        s = read_slice(silver, silver_cols, None, where)
        q = read_slice(quarantine, LINEAGE, None, where)
        q = q if q is not None else pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(LINEAGE, (object, int, int),
                                                                                           strict=True)})
        read += len(b)
        f, rest = silver_against_bronze(b, s, q, topics, n)
        settled, later, unresolved = resolve_rest(rest, first_copies(s, topics), n)
        found += f + settled
        copies += later
        pending.append(unresolved)
        del b, s, q, rest
        pa.default_memory_pool().release_unused()  # the slice's Arrow buffers back to the system (mimalloc keeps them)
    return found, copies, pd.concat(pending, ignore_index=True) if pending else pd.DataFrame(), read


def settle_rest(silver: Path, pending: pd.DataFrame, topics: list[str], n: int) -> tuple[list[Finding], int]:
    """Bronze rows in neither table whose trade was not in their slice's Silver rows: against Silver's row of
    their trade, wherever it is (one more pass over Silver's keys); the rest are missing."""
    if not len(pending):
        return [], 0
    wanted = pending[KEYS].drop_duplicates()
    held = [b.merge(wanted, on=KEYS) for b in batches(silver, [*KEYS, *LINEAGE])]
    held_df = pd.concat(held, ignore_index=True) if held else pd.DataFrame(columns=[*KEYS, *LINEAGE])
    found, copies, lost = resolve_rest(pending, first_copies(held_df, topics), n)
    return found + lost_findings(lost, n), copies


__all__ = ["BATCH_ROWS", "Bars", "GOLD_COLUMNS", "SLICE_ROWS", "SilverFacts", "batches", "bronze_offsets",
           "columns_of", "gold_bars_pass", "quarantine_pass", "read_slice", "read_table", "settle_rest",
           "silver_against_bronze_slices", "silver_pass", "table_version"]
