"""SQL without a JVM: deltalake's ``QueryBuilder`` (DataFusion) against DuckDB over the table's Arrow dataset.

``python -m lakehouse_utils.bench.sql_engines --rows 300000 --commits 30`` writes a synthetic Silver (the Silver
columns, 3 venues x 4 symbols) with ``deltalake`` in ``--commits`` appends, then runs one GROUP BY over it in a new
process per engine (so each peak RSS is that engine's alone): the table opened and the statement run ``--runs``
times (pyarrow imported first in both: ``views/sql.py`` hands Arrow tables on). It prints, per engine, the first
and the median run and the process's peak RSS (``VmHWM``) after the imports and at the end. DuckDB is not a
dependency of the project: it is measured only if it imports (``pip install duckdb``).
The README's Performance section holds the figures and why ``views/sql.py`` uses ``QueryBuilder``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERY = ("SELECT exchange, symbol, count(*) AS trades, sum(qty) AS volume, sum(price * qty) / sum(qty) AS vwap, "
         "min(price) AS low, max(price) AS high FROM silver GROUP BY exchange, symbol ORDER BY exchange, symbol")
ENGINES = ("querybuilder", "duckdb")


def write_silver(path: Path, rows: int, commits: int, seed: int = 7) -> None:
    """``rows`` synthetic Silver trades (5 a second from 2019-07-01) in ``commits`` appends, by event_date."""
    import numpy as np
    import pyarrow as pa
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    symbols, venues = np.array(["BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"]), np.array(["kraken", "coinbase",
                                                                                          "binance"])
    per = rows // commits
    for c in range(commits):
        offsets = np.arange(c * per, (c + 1) * per)
        times = np.datetime64("2019-07-01T00:00:00", "us") + (offsets * 200_000).astype("timedelta64[us]")
        write_deltalake(str(path), pa.table({
            "exchange": venues[rng.integers(0, 3, per)], "symbol": symbols[rng.integers(0, 4, per)],
            "trade_id": offsets.astype(str), "price": 10_000 + rng.normal(0, 50, per),
            "qty": rng.exponential(0.1, per), "side": np.where(rng.random(per) < 0.5, "buy", "sell"),
            "ord_type": np.full(per, "market"), "event_time": pa.array(times, pa.timestamp("us")),
            "ingest_time": pa.array(times, pa.timestamp("us")), "topic": np.full(per, "crypto.trades"),
            "partition": pa.array(np.zeros(per, "int32")), "offset": offsets,
            "event_date": pa.array(times.astype("datetime64[D]"), pa.date32()), "venue_symbol": np.full(per, "X"),
        }), mode="append", partition_by=["event_date"])


def _rss_mb() -> float:
    """This process's peak RSS: VmHWM (Linux; ``ru_maxrss`` would carry the parent's peak over fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(engine: str, path: str, runs: int) -> dict[str, float | int | str]:
    """In this process: import the engine, then open the table and run :data:`QUERY` ``runs`` times."""
    t0 = time.perf_counter()
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    if engine == "duckdb":
        import duckdb
    imported, rss_before, times = time.perf_counter() - t0, _rss_mb(), []
    trades = 0
    for _ in range(runs):
        t = time.perf_counter()
        dt = DeltaTable(path)
        if engine == "duckdb":
            con = duckdb.connect()
            con.register("silver", dt.to_pyarrow_dataset())
            res = con.execute(QUERY)  # DuckDB 2 renamed fetch_arrow_table to to_arrow_table
            out = res.to_arrow_table() if hasattr(res, "to_arrow_table") else res.fetch_arrow_table()
        else:
            out = pa.table(QueryBuilder().register("silver", dt).execute(QUERY).read_all())
        times.append(time.perf_counter() - t)
        trades = sum(out.column("trades").to_pylist())
    version = duckdb.__version__ if engine == "duckdb" else __import__("deltalake").__version__
    return {"engine": engine, "version": version, "trades": trades, "import_s": round(imported, 3),
            "first_ms": round(times[0] * 1000), "median_ms": round(sorted(times)[len(times) // 2] * 1000),
            "rss_before_mb": round(rss_before), "peak_rss_mb": round(_rss_mb())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--commits", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--table", help="an existing Delta table with the Silver columns (default: a new synthetic one)")
    ap.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # the child process measuring one engine
    args = ap.parse_args(argv)
    if args.engine:
        print(json.dumps(measure(args.engine, args.table, args.runs)))
        return 0
    with tempfile.TemporaryDirectory(prefix="sql-bench-") as tmp:
        table = args.table or str(Path(tmp) / "silver")
        if not args.table:
            write_silver(Path(table), args.rows, args.commits)
        for engine in ENGINES:
            proc = subprocess.run([sys.executable, "-m", "lakehouse_utils.bench.sql_engines", "--engine", engine,
                                   "--table", table, "--runs", str(args.runs)], capture_output=True, text=True,
                                  check=False)
            if proc.returncode:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{engine}: not measured ({last})")
                continue
            r = json.loads(proc.stdout)
            print(f"{engine} {r['version']}: {r['trades']:,} trades; first {r['first_ms']} ms, median "
                  f"{r['median_ms']} ms of {args.runs}; peak RSS {r['peak_rss_mb']} MB ({r['rss_before_mb']} MB "
                  f"after imports, {r['import_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
