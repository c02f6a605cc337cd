"""Time travel and SQL (notebook 08, ``lakehouse sql``) over real Delta tables written with deltalake.

The Gold table here is written the way Gold writes it (Arrow rows partitioned by ``is_final``, one commit per
change); the diff between two versions must name exactly the bars that changed, and the CLI must print what
the table holds (values computed here from the rows written, not copied from a run).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse_utils.config import Settings
from lakehouse_utils.ops.cli import main
from lakehouse_utils.views import time_travel as tt
from lakehouse_utils.views.sql import SqlError, format_table, run_sql, spark_sql
from lakehouse_utils.views.time_travel import bars_at, bars_diff, diff_counts, histories, history, version_at

T0 = datetime(2019, 7, 1, tzinfo=UTC)


def bar(minute: int, trades: int, close: float, final: bool) -> dict:
    start = T0 + timedelta(minutes=minute)
    return {"exchange": "kraken", "symbol": "BTC/USD", "bar_start": start, "bar_end": start + timedelta(minutes=1),
            "open": 100.0, "high": max(100.0, close), "low": min(100.0, close), "close": close,
            "volume": trades * 0.5, "vwap": (100.0 + close) / 2, "trades": trades, "buy_volume": trades * 0.25,
            "sell_volume": trades * 0.25, "is_final": final, "updated_at": T0}


def write_bars(path: Path, bars: list[dict], **kw) -> None:
    write_deltalake(str(path), pa.Table.from_pylist(bars), partition_by=["is_final"], **kw)


def written_late(path: Path, by_ms: float = 40.7) -> None:
    """Each commit's JSON file written ``by_ms`` after the time its commitInfo records, as on a loaded machine
    (CI saw 2 ms): time travel reads a version's time from its file, so history must show that time."""
    for c in DeltaTable(str(path)).history():
        ns = (int(c["timestamp"]) * 1_000_000) + int(by_ms * 1_000_000)
        os.utime(path / "_delta_log" / f"{int(c['version']):020d}.json", ns=(ns, ns))


@pytest.fixture
def gold(tmp_path: Path) -> Settings:
    """gold_1m: v0 four bars (one final); v1 Gold's next commit: 00:00 and 00:01 turn final (00:01 with one more
    trade), 00:02 takes two more trades and stays forming, 00:04 is new; v2 changes the final 00:03 bar."""
    settings = Settings(data_dir=tmp_path / "data")
    path = settings.bars_table("1m")
    write_bars(path, [bar(0, 10, 101.0, False), bar(1, 5, 99.0, False), bar(2, 3, 100.5, False),
                      bar(3, 7, 102.0, True)])
    # the forming partition replaced, the bars that closed added as final: one commit, as gold_writer does it
    write_bars(path, [bar(0, 10, 101.0, True), bar(1, 6, 98.5, True), bar(2, 5, 100.7, False),
                      bar(4, 1, 100.0, False)],
               mode="overwrite", predicate="NOT is_final OR bar_start < '2019-07-01T00:02:00Z'")
    write_bars(path, [bar(3, 8, 102.5, True)], mode="overwrite", predicate="bar_start = '2019-07-01T00:03:00Z'")
    written_late(path)
    return settings


def test_bars_diff_names_the_bars_that_changed(gold: Settings) -> None:
    path = gold.bars_table("1m")
    assert [c.version for c in history(path)] == [0, 1, 2] and DeltaTable(str(path)).version() == 2
    v0, v1 = bars_at(path, version=0), bars_at(path, version=1)
    assert (len(v0), len(v1)) == (4, 5)

    diff = bars_diff(v0, v1)
    got = {(r.bar_start.strftime("%H:%M"), r.change) for r in diff.itertuples()}
    assert got == {("00:00", "forming -> final"), ("00:01", "forming -> final"), ("00:02", "updated"),
                   ("00:04", "new")}  # 00:03 (final, untouched) is not named
    by_minute = {r.bar_start.strftime("%H:%M"): r for r in diff.itertuples()}
    assert by_minute["00:00"].changed == ""  # it only turned final
    assert by_minute["00:01"].changed == "low, close, volume, vwap, trades, buy_volume, sell_volume"
    assert (by_minute["00:01"].trades_before, by_minute["00:01"].trades_after) == (5, 6)
    assert (by_minute["00:02"].close_before, by_minute["00:02"].close_after) == (100.5, 100.7)
    assert pd.isna(by_minute["00:04"].trades_before) and by_minute["00:04"].trades_after == 1
    assert diff_counts(diff) == {"new": 1, "forming -> final": 2, "updated": 1, "final changed": 0,
                                 "final -> forming": 0, "gone": 0}

    # a final bar that changes is a finding (Gold never does it): v1 -> v2 names exactly that one
    later = bars_diff(v1, bars_at(path))
    assert [(r.bar_start.strftime("%H:%M"), r.change, r.changed) for r in later.itertuples()] == [
        ("00:03", "final changed", "high, close, volume, vwap, trades, buy_volume, sell_volume")]
    assert bars_diff(v1, v1).empty

    # as of a timestamp: each commit's own time reads that commit's version; before the first, an error
    commits = history(path)
    for c in commits:
        assert bars_at(path, as_of=c.timestamp).equals(bars_at(path, version=c.version))
        assert version_at(path, c.timestamp) == c.version
    with pytest.raises(SqlError, match="did not exist yet"):
        bars_at(path, as_of=commits[0].timestamp - timedelta(seconds=1))

    # late trades since a time: late_trades' rows now minus its rows as of then
    late = gold.late_trades
    trade = {"exchange": "kraken", "symbol": "BTC/USD", "trade_id": "1", "event_time": T0, "detected_at": T0}
    assert tt.late_since(gold, T0) is None  # no table yet
    write_deltalake(str(late), pa.Table.from_pylist([trade]))
    write_deltalake(str(late), pa.Table.from_pylist([trade, trade]), mode="append")
    first = tt.commit_time(late, 0)
    assert first is not None and tt.commit_time(late, 5) is None
    assert tt.late_since(gold, first) == 2 and tt.late_since(gold, first - timedelta(seconds=1)) == 3
    assert tt.late_since(gold, tt.commit_time(late, 1)) == 0

    # the history per layer: three WRITE commits with the rows each added; the other layers have none yet
    frame = histories(gold)
    assert set(frame.table) == {"gold_1m"}
    assert frame.operation.tolist() == ["WRITE"] * 3 and frame.rows_added.tolist() == [4, 4, 1]


@pytest.fixture
def tables(gold: Settings) -> Settings:
    """gold_1m above, and a Silver of nine trades over two symbols in two commits."""
    trades = [{"exchange": "kraken", "symbol": sym, "trade_id": str(i), "price": 100.0 + i, "qty": 0.1 * (i + 1),
               "side": "buy" if i % 2 else "sell", "event_time": T0 + timedelta(seconds=7 * i)}
              for i, sym in enumerate(["BTC/USD", "ETH/USD", "BTC/USD"] * 3)]
    write_deltalake(str(gold.silver), pa.Table.from_pylist(trades[:5]))
    write_deltalake(str(gold.silver), pa.Table.from_pylist(trades[5:]), mode="append")
    return gold


def test_lakehouse_sql_prints_the_tables(tables: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    rows = pa.Table.from_batches(DeltaTable(str(tables.silver)).to_pyarrow_dataset().to_batches()).to_pylist()
    expected = {}
    for r in rows:
        n, lo, hi = expected.get(r["symbol"], (0, float("inf"), float("-inf")))
        expected[r["symbol"]] = (n + 1, min(lo, r["price"]), max(hi, r["price"]))
    query = ("SELECT symbol, count(*) AS n, min(price) AS low, max(price) AS high FROM silver "
             "GROUP BY symbol ORDER BY symbol")
    data_dir = str(tables.data_dir)

    assert main(["sql", "--data-dir", data_dir, query]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["symbol", "|", "n", "|", "low", "|", "high"] and set(out[1]) <= {"-", "+"}
    assert [line.split(" | ") for line in out[2:-1]] == [
        [sym.ljust(7), f"{n:>1}", f"{lo!r:>5}", f"{hi!r:>5}"] for sym, (n, lo, hi) in sorted(expected.items())]
    assert out[-1] == f"({len(expected)} rows)"
    assert len({len(line) for line in out[:2]}) == 1  # aligned: header and rule as wide

    # csv and json carry the same values; time travel: Silver's version 0 held the first five trades
    assert main(["sql", "--data-dir", data_dir, "--format", "csv", query]) == 0
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["symbol"]: (int(r["n"]), float(r["low"]), float(r["high"])) for r in got} == expected
    assert main(["sql", "--data-dir", data_dir, "--format", "json", "--version", "0",
                 "SELECT count(*) AS n, max(trade_id) AS last FROM silver"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 5, "last": "4"}]
    # the short names of Gold, now and as of a version (bars_1m is gold_1m)
    assert main(["sql", "--data-dir", data_dir, "--format", "json", "--version", "1",
                 "SELECT count(*) AS bars, sum(CAST(is_final AS INT)) AS final FROM bars_1m"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"bars": 5, "final": 3}]

    # errors: one line on stderr, exit 2
    for argv, says in [(["SELEC 1"], "SQL error"), (["SELECT * FROM nope"], "no table named nope"),
                       (["SELECT * FROM alerts"], "table alerts does not exist (yet)"),
                       (["--version", "9", "SELECT * FROM silver"], "table silver has no version 9"),
                       (["--version", "0", "SELECT * FROM silver, gold_1m"], "--version is one table's version"),
                       (["--as-of", "soon", "SELECT 1"], "expected an ISO timestamp")]:
        assert main(["sql", "--data-dir", data_dir, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and err.count("\n") == 1, (argv, err)


def test_lakehouse_sql_command_in_a_process(tables: Settings) -> None:
    """The installed entry point's path: a real process, a real exit code."""
    run = [sys.executable, "-m", "lakehouse_utils.ops.cli", "sql", "--data-dir", str(tables.data_dir)]
    ok = subprocess.run([*run, "SELECT count(*) AS n FROM silver"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.split("\n")[2].strip() == str(DeltaTable(str(tables.silver)).count())
    bad = subprocess.run([*run, "SELECT * FROM gold_5m"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == f"error: table gold_5m does not exist (yet): no Delta table at {tables.bars_table('5m')}\n"


def test_spark_sql_reads_what_datafusion_reads(tables: Settings, spark) -> None:
    """The notebook's Spark SQL cell: the same short names as temporary views, the same rows, versions too."""
    query = "SELECT symbol, count(*) AS n, min(price) AS low, max(price) AS high FROM silver GROUP BY symbol"
    for version in (None, 0):
        fusion = sorted(tuple(r.values()) for r in run_sql(tables, query, version=version).to_pylist())
        sparks = sorted(tuple(r) for r in spark_sql(spark, tables, query, version=version).collect())
        assert sparks == fusion and len(fusion) == 2
    as_of = history(tables.bars_table("1m"))[1].timestamp
    final = "SELECT count(*) AS n FROM gold_1m WHERE is_final"
    fusion = run_sql(tables, final, as_of=as_of).column("n")[0].as_py()
    assert spark_sql(spark, tables, final, as_of=as_of).first().n == fusion == 3


def test_format_table_aligns_and_cuts() -> None:
    table = pa.table({"name": ["a", "bbb"], "value": [1.5, 22.0], "at": [T0, None]})
    assert format_table(table).splitlines() == [
        "name | value | at",
        "-----+-------+---------------------",
        "a    |   1.5 | 2019-07-01 00:00:00Z",
        "bbb  |  22.0 | NULL",
        "(2 rows)"]
    assert format_table(table, max_rows=1).splitlines()[-1] == "(2 rows, 1 shown)"
    assert format_table(table, "csv").splitlines() == ["name,value,at", "a,1.5,2019-07-01 00:00:00Z", "bbb,22.0,"]
