"""``lakehouse sql "SELECT ..."``: SQL over the tables by short name, without a JVM (``views.sql``).

Tables: bronze, silver, quarantine, gold_1m / bars_1m, gold_5m / bars_5m, gold_1h / bars_1h, late_trades, alerts.
``--version N`` reads the one table the query names at version N, ``--as-of TIME`` every table as of TIME. Output:
an aligned table (default), ``--format csv`` or ``--format json``. A bad query, an unknown or missing table or
version is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sql", help="SQL over the tables without a JVM: lakehouse sql \"SELECT ... FROM silver\" "
                                   "(bronze, silver, gold_1m, ...; --version / --as-of for time travel)")
    p.add_argument("query", help="one SQL statement (DataFusion's dialect); tables by short name: bronze, silver, "
                                 "quarantine, gold_1m|bars_1m, gold_5m|bars_5m, gold_1h|bars_1h, late_trades, alerts")
    p.add_argument("--data-dir", dest="data_dir", help="data root, as for every command (default ./data)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--version", type=int, help="read the (one) table the query names at this version")
    when.add_argument("--as-of", dest="as_of", metavar="TIME",
                      help="read every table as of this time (ISO, e.g. 2026-12-03T10:15:00Z; no zone = UTC)")
    p.add_argument("--format", dest="fmt", choices=["table", "csv", "json"], default="table",
                   help="an aligned table (default), CSV with a header, or JSON (a list of objects)")
    p.add_argument("--max-rows", dest="max_rows", type=int, default=1000,
                   help="rows the aligned table shows (default 1000; csv and json print them all)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..views.sql import SqlError, format_table, run_sql

    try:
        result = run_sql(settings, args.query, version=args.version, as_of=args.as_of)
    except SqlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result, args.fmt, max_rows=args.max_rows))
    return 0


__all__ = ["add_parser", "run"]
