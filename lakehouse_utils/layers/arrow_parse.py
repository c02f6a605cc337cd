"""Silver's parse in Arrow for the trades our producer writes; every other row through Spark's own rules.

:func:`silver.parse_bronze` (Spark's ``from_json`` and the checks after it) is *the* definition of a valid trade
and of each quarantine reason.  On two cores it parses ~30-50k rows/s, which caps a catch-up; Arrow's JSON
reader parses the same rows ~10x faster.  :func:`parse_rows` splits a batch of Bronze rows in two:

- **canonical rows**, those any reading of the rules finds valid: one JSON object per value, no escape, no line
  break, the ten fields of the right JSON types (text, and numbers for price and qty), each required one
  present and not blank, price and qty finite and positive, the price at most ``MAX_PRICE``, side ``buy`` or
  ``sell``, an ASCII ``BASE/QUOTE`` symbol, times as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``.  These are read by
  ``pyarrow.json`` and typed in Arrow, to the same values Spark gives (doubles correctly rounded by both, times
  exact to the microsecond, ASCII upper and lower case);
- **every other row** (anything unusual: bad, odd or merely written another way) goes through
  ``parse_bronze`` in Spark, which decides as it always did.

Where Arrow's reader refuses part of a batch (a field of another JSON type, a key twice, a date like Feb 30),
the batch is read again in halves, down to the rows it refuses: those go to Spark.  The result is
``parse_bronze``'s rows, in the batch's order, with its Arrow types; ``tests/test_arrow_parse.py`` checks it
equals Spark's on the fuzz corpus, crafted rows and the real recording.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ..sources.trades import MAX_PRICE  # the producer's bound, and Silver's

# what to_bronze gives a row (the Bronze table's columns); parse_bronze's output follows SILVER_SCHEMA
TEXT = ["exchange", "symbol", "trade_id", "side", "ord_type", "event_time", "ingest_time", "venue_symbol"]
_JSON_SCHEMA = pa.schema([*((f, pa.string()) for f in TEXT), ("price", pa.float64()), ("qty", pa.float64())])
_REQUIRED_TEXT = ["exchange", "symbol", "trade_id", "side", "event_time"]
_SYMBOL = r"^[A-Za-z0-9]{1,16}/[A-Za-z0-9]{1,16}$"  # RE2: $ is the end of the text
_TIME = (r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
         r"(\.[0-9]{1,6})?Z$")
_MAX_VALUE = 1 << 16  # longer values (a 1 MB pad) are left to Spark: Arrow's reader wants blocks > a line
_BLOCK = 1 << 22
T = TypeVar("T")


def _all(masks: list[pa.ChunkedArray | pa.Array]) -> pa.Array:
    out = masks[0]
    for m in masks[1:]:
        out = pc.and_kleene(out, m)
    return pc.fill_null(out, False)


def _canonical_text(values: pa.ChunkedArray) -> pa.Array:
    """Values that may be canonical: an object on one line, no escape, no replacement char, not too long."""
    return _all([
        pc.is_valid(values),
        pc.starts_with(values, "{"),
        pc.less_equal(pc.binary_length(values), _MAX_VALUE),
        pc.invert(pc.match_substring_regex(values, r"[\\\n\r\x{FFFD}]")),  # one scan (4 substring scans: 3x)
    ])


def _pieces(n: int, attempt: Callable[[int, int], T], lo: int = 0, hi: int | None = None) -> list[tuple[int, T]]:
    """``attempt(lo, hi)`` over rows ``lo:hi``; where Arrow refuses a range (ArrowInvalid) its halves are tried,
    down to the single rows it refuses (those are left out): [(start, result), ...] in order."""
    hi = n if hi is None else hi
    if hi <= lo:
        return []
    try:
        return [(lo, attempt(lo, hi))]
    except pa.ArrowInvalid:
        if hi - lo == 1:
            return []
        mid = (lo + hi) // 2
        return _pieces(n, attempt, lo, mid) + _pieces(n, attempt, mid, hi)


def _read(values: pa.ChunkedArray, lo: int, hi: int) -> pa.Table:
    """The ten fields of ``values[lo:hi]`` (one JSON object per line); ArrowInvalid if Arrow cannot read each."""
    lines = pc.binary_join_element_wise(values.slice(lo, hi - lo), "\n", "").combine_chunks()  # each + "\n"
    wide = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(lines.buffers()[1], dtype=wide)[lines.offset:lines.offset + len(lines) + 1]
    text = lines.buffers()[2][int(offsets[0]):int(offsets[-1])]  # one buffer: the values, one per line
    options = pj.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore")
    table = pj.read_json(pa.BufferReader(text), read_options=pj.ReadOptions(block_size=_BLOCK), parse_options=options)
    if table.num_rows != hi - lo:  # two objects on a line
        raise pa.ArrowInvalid(f"{table.num_rows} objects in {hi - lo} values")
    return table


def _readable(values: pa.ChunkedArray) -> tuple[pa.Table, pa.Array]:
    """The fields of every value Arrow can read, and the positions of those values."""
    pieces = _pieces(len(values), lambda lo, hi: _read(values, lo, hi))
    at = [pa.array(range(start, start + t.num_rows), pa.int64()) for start, t in pieces]
    if not pieces:
        return _JSON_SCHEMA.empty_table(), pa.array([], pa.int64())
    return pa.concat_tables([t for _, t in pieces]), pa.concat_arrays(at)


def _fast(fields: pa.Table) -> pa.Array:
    """The rows of ``fields`` that are valid trades by any reading of the rules (module docstring)."""
    price, qty = fields["price"], fields["qty"]
    checks = [pc.match_substring_regex(fields[f], r"\S") for f in _REQUIRED_TEXT]
    checks += [pc.is_finite(price), pc.greater(price, 0.0), pc.less_equal(price, MAX_PRICE),
               pc.is_finite(qty), pc.greater(qty, 0.0),
               pc.is_in(fields["side"], pa.array(["buy", "sell"])),
               pc.match_substring_regex(fields["symbol"], _SYMBOL),
               pc.match_substring_regex(fields["event_time"], _TIME),
               pc.or_kleene(pc.is_null(fields["ingest_time"]), pc.match_substring_regex(fields["ingest_time"], _TIME))]
    return _all(checks)


def _times(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """``...Z`` text (checked by _TIME) -> timestamp[us, UTC]; raises ArrowInvalid on a date like Feb 30."""
    return pc.cast(text, pa.timestamp("us", tz="UTC"))


def _typed(rows: pa.Table, fields: pa.Table, schema: pa.Schema, raw_of_valid: bool) -> pa.Table:
    """Canonical rows (Bronze columns) and their fields -> parse_bronze's columns with ``schema``'s types."""
    event_time = _times(fields["event_time"])
    raw = rows["value_raw"] if raw_of_valid else pa.nulls(rows.num_rows, pa.string())
    cols = {
        "exchange": fields["exchange"], "symbol": pc.ascii_upper(fields["symbol"]), "trade_id": fields["trade_id"],
        "price": fields["price"], "qty": fields["qty"], "side": fields["side"], "ord_type": fields["ord_type"],
        "event_time": event_time, "ingest_time": _times(fields["ingest_time"]),
        "topic": rows["topic"], "partition": rows["partition"], "offset": rows["offset"],
        "event_date": pc.cast(event_time, pa.date32()), "venue_symbol": fields["venue_symbol"],
        "reason": pa.nulls(rows.num_rows, pa.string()), "value_raw": raw,
    }
    out = {}
    for field in schema:
        col = cols[field.name] if field.name in cols else rows[field.name]
        out[field.name] = pc.cast(col, field.type)
    return pa.table(out, schema=schema)


def _take(table: pa.Table, at: pa.Array) -> pa.Table:
    """``table.take(at)``, without copying when ``at`` is every row in order."""
    return table if len(at) == table.num_rows else table.take(at)


def parse_rows(rows: pa.Table, spark_parse: Callable[[pa.Table], pa.Table], schema: pa.Schema,
               raw_of_valid: bool = True, stats: dict[str, int] | None = None) -> pa.Table:
    """Bronze rows (``to_bronze``'s columns, as Arrow) -> ``parse_bronze``'s columns in ``schema``, in order.

    ``spark_parse(bronze_rows)`` parses rows in Spark (``parse_bronze``, selected to ``schema``'s columns); it is
    called only for the rows that are not canonical (none, in a catch-up of our producer's trades).
    ``raw_of_valid``: whether valid rows keep ``value_raw`` (the one-query pipeline writes Bronze from them) or
    carry NULL there, as ``silver.driver_columns`` gives them.  ``stats`` (if given) gets ``arrow_rows`` and
    ``spark_rows``.
    """
    order = pa.array(range(rows.num_rows), pa.int64())
    maybe = order.filter(_canonical_text(rows["value_raw"])) if rows.num_rows else order
    candidates = _take(rows, maybe)
    fields, read = _readable(candidates["value_raw"])
    fast = _fast(fields) if fields.num_rows else pa.array([], pa.bool_())
    at = read.filter(fast)
    good, fields = _take(candidates, at), fields if len(at) == fields.num_rows else fields.filter(fast)
    # a time Arrow will not take (Feb 30) leaves its row to Spark
    typed = _pieces(good.num_rows, lambda lo, hi: _typed(good.slice(lo, hi - lo), fields.slice(lo, hi - lo),
                                                          schema, raw_of_valid))
    parts = [t.append_column("_order", maybe.take(at.slice(start, t.num_rows))) for start, t in typed]
    taken = pa.concat_arrays([p["_order"].combine_chunks() for p in parts]) if parts else pa.array([], pa.int64())
    left = pc.invert(pc.is_in(order, taken))
    rest, rest_order = rows.filter(left), order.filter(left)
    if stats is not None:
        stats["arrow_rows"], stats["spark_rows"] = rows.num_rows - rest.num_rows, rest.num_rows
    if rest.num_rows:
        parsed = spark_parse(rest).select(schema.names).cast(schema)
        parts.append(parsed.append_column("_order", rest_order))
    if not parts:
        return schema.empty_table()
    if len(parts) == 1 and not rest.num_rows:  # every row, in order (a catch-up of our producer's trades)
        return parts[0].drop_columns(["_order"])
    return pa.concat_tables(parts).sort_by("_order").drop_columns(["_order"])


__all__ = ["parse_rows"]
