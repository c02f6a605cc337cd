"""``lakehouse maintain [--retain 7d] [--table NAME ...]``: compact, vacuum and checkpoint every table
(``layers.maintenance``), safe beside a running demo, engine or notebook. A line per table; exit 1 if one failed."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..config import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("maintain", help="compact every table, delete the files no reader can need any more (older "
                                        "than --retain, not needed by a stopped layer), checkpoint the logs")
    p.add_argument("--data-dir", dest="data_dir", help="data root, as for every command (default ./data)")
    p.add_argument("--retain", default="7d",
                   help="time travel stays possible this far back: 7d (default), 12h, 30m, or an ISO time; never "
                        "under a minute")
    p.add_argument("--table", action="append", dest="tables", metavar="NAME",
                   help="only this table (repeatable): bronze, silver, quarantine, gold_1m, gold_5m, gold_1h, "
                        "late_trades, alerts")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..layers.maintenance import MIN_RETAIN_S, maintain, retain_seconds

    try:
        retain_s = retain_seconds(args.retain)
    except ValueError as exc:
        print(f"error: --retain: {exc}", file=sys.stderr)
        return 2
    unknown = sorted(set(args.tables or []) - set(settings.tables))
    if unknown:
        print(f"error: unknown table(s) {', '.join(unknown)}: expected {', '.join(settings.tables)}", file=sys.stderr)
        return 2
    if retain_s < MIN_RETAIN_S:
        print(f"note: --retain {args.retain} is under a minute: keeping {MIN_RETAIN_S:.0f}s, so a read in progress "
              "keeps its files", file=sys.stderr)
    t0 = time.monotonic()
    print(f"maintaining {settings.data_dir} (time travel kept back to {args.retain}) ...", file=sys.stderr, flush=True)
    reports = maintain(settings, retain_s, args.tables)
    for report in reports:
        print(report.line(), flush=True)
    freed = sum(r.bytes_freed for r in reports)
    failed = [r.name for r in reports if any(n.startswith("failed") for n in r.notes)]
    print(f"done in {time.monotonic() - t0:.1f}s: {sum(r.vacuumed for r in reports)} file(s) deleted, "
          f"{freed / 1e6:.1f} MB freed{f'; FAILED: {chr(44).join(failed)}' if failed else ''}", file=sys.stderr)
    return 1 if failed else 0


__all__ = ["add_parser", "run"]
