"""SQL over the lakehouse's tables by short names: without a JVM (delta-rs' DataFusion) or with Spark SQL.

``run_sql(settings, "SELECT symbol, count(*) FROM silver GROUP BY symbol")`` registers the tables the query names
(``bronze``, ``silver``, ``quarantine``, ``gold_1m`` / ``bars_1m``, ``gold_5m`` / ``bars_5m``, ``gold_1h`` /
``bars_1h``, ``late_trades``, ``alerts``) with ``deltalake.QueryBuilder`` and returns a pyarrow Table. It reads the
tables as they are now, as of a ``version`` (one table) or as of a timestamp (``as_of``, every table it reads).
Every failure is a :class:`SqlError` whose message is one line (``lakehouse sql`` prints it and exits 2).

Why DataFusion and not DuckDB: DuckDB's ``delta`` extension downloads itself at run time; DuckDB over
``DeltaTable.to_pyarrow_dataset()`` works offline but was 3-6x slower once warm and took more memory (240-270 MB
against 180 MB) on a GROUP BY over a Silver of 300k and 1M rows (README, Performance; ``bench/sql_engines.py``),
and would be one more dependency.

``spark_sql(spark, settings, sql)`` runs the same query with Spark SQL (the shared engine's Connect session in a
notebook): the same short names as temporary views, ``versionAsOf`` / ``timestampAsOf`` for time travel.
``format_table`` prints a result as an aligned table, CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..config import Settings, commit_file, table_exists

FORMATS = ("table", "csv", "json")


class SqlError(ValueError):
    """A query that cannot run: a bad statement, an unknown or missing table, a version the table lacks."""


def table_paths(settings: Settings) -> dict[str, Path]:
    """Every short name a query may use -> its Delta table (``bars_<tf>`` is another name of ``gold_<tf>``)."""
    paths: dict[str, Path] = {}
    for name, path in settings.tables.items():
        paths[name] = path
        if name.startswith("gold_"):
            paths[name.replace("gold_", "bars_")] = path
    return paths


def referenced(sql: str, names: list[str] | dict[str, Path]) -> list[str]:
    """The short names that occur in ``sql`` as words (case-insensitive), in the order of ``names``."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
    return [n for n in names if n in words]


def parse_as_of(value: str | datetime) -> datetime:
    """An ISO timestamp (``2026-12-03T10:15``, ``...Z``, ``...+01:00``) as an aware datetime; naive means UTC."""
    if isinstance(value, datetime):
        ts = value
    else:
        text = value.strip()
        try:
            ts = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise SqlError(f"--as-of {value!r}: expected an ISO timestamp such as 2026-12-03T10:15:00Z") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400]


def commit_times(path: str | Path, commits: list[dict[str, Any]]) -> dict[int, datetime]:
    """Each commit's time as time travel reads it (``commits``: ``DeltaTable.history()``'s entries).

    Without in-commit timestamps, Delta's time of a version is its ``_delta_log`` JSON file's modification time
    in whole milliseconds, made strictly increasing (Spark's ``timestampAsOf`` and delta-rs' ``load_as_version``
    both resolve a time that way), not the ``timestamp`` its commitInfo records: that is taken before the file is
    written, milliseconds earlier on a loaded machine, and read as of it the version before shows. A table with
    ``inCommitTimestamp`` uses it; a version whose JSON file is gone keeps its recorded time.
    """
    times: dict[int, datetime] = {}
    previous = -1
    for c in sorted(commits, key=lambda c: int(c["version"])):
        version, ms = int(c["version"]), c.get("inCommitTimestamp")
        if ms is None:
            try:
                ms = commit_file(path, version).stat().st_mtime_ns // 1_000_000
            except OSError:
                ms = int(c["timestamp"])
        ms = max(int(ms), previous + 1)
        times[version], previous = datetime.fromtimestamp(ms / 1000, tz=UTC), ms
    return times


def open_at(name: str, path: Path, version: int | None = None, as_of: str | datetime | None = None) -> Any:
    """The ``deltalake.DeltaTable`` at ``path`` now, at ``version`` or as of ``as_of``; a :class:`SqlError` if
    there is no such table or version."""
    from deltalake import DeltaTable

    if not table_exists(path):
        raise SqlError(f"table {name} does not exist (yet): no Delta table at {path}")
    dt = DeltaTable(str(path))
    if version is None and as_of is not None:
        when = parse_as_of(as_of)
        first, created = min(commit_times(path, dt.history()).items())  # delta-rs would read it before then
        if when < created and first > 0:
            raise SqlError(f"table {name} keeps versions from {first} (committed at {created.isoformat()}) on: "
                           f"maintenance pruned the log before it")
        if when < created:
            raise SqlError(f"table {name} did not exist yet at {when.isoformat()}: its first commit is at "
                           f"{created.isoformat()}")
    try:
        if version is not None:
            dt.load_as_version(int(version))
        elif as_of is not None:
            dt.load_as_version(parse_as_of(as_of))
    except Exception as exc:
        when = f"version {version}" if version is not None else f"as of {parse_as_of(as_of).isoformat()}"  # type: ignore[arg-type]
        raise SqlError(f"table {name} has no {when} (versions 0..{DeltaTable(str(path)).version()}): "
                       f"{_one_line(exc)}") from None
    return dt


def _tables_for(settings: Settings, sql: str, version: int | None) -> dict[str, Path]:
    paths = table_paths(settings)
    names = referenced(sql, paths)
    # a name of a table that is not there is only an error if the query really reads it (DataFusion says so)
    present = {n: paths[n] for n in names if table_exists(paths[n])}
    if version is not None and len({paths[n] for n in names}) != 1:
        raise SqlError(f"--version is one table's version: the query reads {len({paths[n] for n in names})} "
                       f"tables ({', '.join(names) or 'none'}); use --as-of for several")
    return present


def _planning_error(settings: Settings, exc: BaseException) -> SqlError:
    text = _one_line(exc)
    missing = re.search(r"table '(?:[\w]+\.)*(\w+)' not found", text)
    if missing:
        name, paths = missing.group(1), table_paths(settings)
        if name in paths:
            return SqlError(f"table {name} does not exist (yet): no Delta table at {paths[name]}")
        return SqlError(f"no table named {name}: the tables are {', '.join(paths)}")
    return SqlError(text)


def run_sql(settings: Settings, sql: str, version: int | None = None,
            as_of: str | datetime | None = None) -> pa.Table:
    """``sql`` over the tables by short name (DataFusion through ``deltalake.QueryBuilder``), as a pyarrow Table."""
    from deltalake import QueryBuilder

    if version is not None and as_of is not None:
        raise SqlError("--version and --as-of: give one of them")
    if as_of is not None:
        parse_as_of(as_of)  # a bad timestamp is an error even if the query reads no table
    qb = QueryBuilder()
    for name, path in _tables_for(settings, sql, version).items():
        qb.register(name, open_at(name, path, version, as_of))
    try:
        return pa.table(qb.execute(sql).read_all())
    except Exception as exc:  # deltalake's DeltaError: parser, planning and execution errors alike
        raise _planning_error(settings, exc) from None


def spark_sql(spark: Any, settings: Settings, sql: str, version: int | None = None,
              as_of: str | datetime | None = None) -> Any:
    """The same query with Spark SQL (``spark``: a SparkSession or Spark Connect session): a Spark DataFrame.

    Each short name the query uses becomes a temporary view of its Delta table (``versionAsOf`` /
    ``timestampAsOf`` for time travel).
    """
    if version is not None and as_of is not None:
        raise SqlError("--version and --as-of: give one of them")
    for name, path in _tables_for(settings, sql, version).items():
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", int(version))
        elif as_of is not None:
            ts = parse_as_of(as_of).astimezone(UTC).replace(tzinfo=None)
            reader = reader.option("timestampAsOf", ts.isoformat(sep=" "))
        reader.load(str(path.absolute())).createOrReplaceTempView(name)
    return spark.sql(sql)


def query_text(settings: Settings, sql: str, fmt: str = "table", max_rows: int | None = None,
               version: int | None = None, as_of: str | datetime | None = None) -> str:
    """``run_sql`` then ``format_table``; a query that cannot run gives its one line (``error: ...``) instead."""
    try:
        return format_table(run_sql(settings, sql, version, as_of), fmt, max_rows)
    except SqlError as exc:
        return f"error: {exc}"


def same_rows(table: pa.Table, spark_df: Any) -> bool:
    """Do a DataFusion result and a Spark DataFrame hold the same rows (in any order, same column order)?"""
    return sorted(map(tuple, (r.values() for r in table.to_pylist())), key=repr) == \
        sorted((tuple(r) for r in spark_df.collect()), key=repr)


# -- output ------------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        text = value.isoformat(sep=" ")
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return _cell(value)
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def format_table(table: pa.Table, fmt: str = "table", max_rows: int | None = None) -> str:
    """``table`` as an aligned text table (numbers right-aligned, a row count below), CSV or JSON (a list of
    objects); ``max_rows`` cuts the aligned table only."""
    if fmt not in FORMATS:
        raise SqlError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    names = table.column_names
    rows = table.to_pylist()
    if fmt == "json":
        return json.dumps([{k: _json_value(v) for k, v in row.items()} for row in rows], ensure_ascii=False)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if row[n] is None else _cell(row[n]) for n in names] for row in rows])
        return out.getvalue().rstrip("\n")
    shown = rows if max_rows is None else rows[:max_rows]
    cells = [[_cell(row[n]) for n in names] for row in shown]
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
               for t in table.schema.types]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]

    def line(values: list[str]) -> str:
        return " | ".join(v.rjust(w) if num else v.ljust(w)
                          for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    lines = [line(names), "-+-".join("-" * w for w in widths), *(line(r) for r in cells)]
    more = f", {len(shown)} shown" if len(shown) < len(rows) else ""
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'}{more})")
    return "\n".join(lines)


__all__ = ["FORMATS", "SqlError", "commit_times", "format_table", "open_at", "parse_as_of", "query_text",
           "referenced", "run_sql", "same_rows", "spark_sql", "table_paths"]
