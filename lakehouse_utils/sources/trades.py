"""The normalized trade record shared by every source, the field checks every venue's parser uses, and the
Kraken v2 trade parser.

Every source (Kraken, Coinbase, Binance, a replay, synthetic) yields either a :class:`Trade` (a valid,
typed print) or a :class:`Rejected` (the raw input plus a reason, for the dead-letter topic).

Reasons are machine-friendly codes, optionally followed by a space and a detail, e.g.
``"missing_field:price"``, ``"non_positive:qty 0"``, ``"unknown_side:hold"``;
``Rejected.code`` returns the code part alone.

Parsing policy for Kraken v2 trade items: ``price`` and ``qty`` must be JSON numbers
(int or float, not bool). Numeric strings are rejected as ``bad_type`` on purpose:
Kraken v2 documents them as numbers, so a string means the feed changed and the input
belongs in the dead-letter topic rather than being silently coerced. Coinbase and Binance document
decimal strings ("68923.67"): :func:`decimal_field` takes those and refuses JSON numbers the same way.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple, Protocol

SCHEMA_VERSION = 1
MAX_RAW_CHARS = 8192
TRUNCATION_MARKER = "...[truncated]"
MAX_PRICE = 1e12
SIDES = frozenset({"buy", "sell"})
MAX_ASSET_CHARS = 16  # per side of BASE/QUOTE (Silver's symbol rule)
_BIG_ID = 10**40  # an int trade_id this long is no exchange's (and str() raises past 4300 digits)
REQUIRED_FIELDS = ("symbol", "side", "price", "qty", "trade_id", "timestamp")

# A JSON string literal exactly as json.dumps writes it (ensure_ascii); raises TypeError for a non-str.
_quote = encode_basestring_ascii
_FINITE_MAX = sys.float_info.max
_FINITE_MIN = -_FINITE_MAX

# Kraken's legacy asset codes -> the common ones used by Kraken v2.
_ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
_DECIMAL = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")  # a venue's decimal string: digits, maybe a point and more
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z, the last time datetime holds


class TradeError(ValueError):
    """A trade item could not be parsed; ``reason`` is the Rejected reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_symbol(symbol: str) -> str:
    """Return the canonical ``BASE/QUOTE`` spelling ("xbt/usdt" -> "BTC/USDT").

    A slash is required, and 1-16 ASCII letters or digits on each side; anything else raises ValueError.
    """
    if not isinstance(symbol, str):
        raise ValueError(f"symbol must be a string, got {type(symbol).__name__}")
    parts = symbol.strip().upper().split("/")
    # ASCII letters and digits only, up to 16 a side: what Silver accepts (str.isalnum alone lets "²" or
    # "ＢＴＣ" through, and upper() folds "ß" into "SS")
    if len(parts) != 2 or not symbol.isascii() or not all(p.isalnum() and len(p) <= MAX_ASSET_CHARS for p in parts):
        raise ValueError(f"symbol must look like BASE/QUOTE, got {symbol!r}")
    base, quote = (_ASSET_ALIASES.get(p, p) for p in parts)
    return f"{base}/{quote}"


def format_time(ts: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a ``Z`` suffix."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)  # naive times are taken as local time, as astimezone does
    # The part up to the second comes from a small cache: trades arrive in time order, many per second,
    # and datetime formatting (isoformat ~1.4 us, strftime ~3.8 us) is a tenth of a trade's cost.
    key = (ts.second, ts.minute, ts.hour, ts.day, ts.month, ts.year)
    prefix = _SECONDS.get(key)
    if prefix is None:
        if len(_SECONDS) >= 256:
            _SECONDS.clear()
        # isoformat is ~2.5x faster than strftime, which alone does not pad years before 1000
        prefix = _SECONDS[key] = ts.isoformat()[:19] if ts.year >= 1000 else ts.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{ts.microsecond:06d}Z"


_SECONDS: dict[tuple[int, int, int, int, int, int], str] = {}


class Trade(NamedTuple):
    """One normalized print (immutable).

    A NamedTuple rather than a frozen dataclass: a frozen dataclass sets each field through
    ``object.__setattr__`` and costs ~6x more to build, which shows at 100k trades/s.
    """

    exchange: str
    symbol: str
    trade_id: str
    price: float
    qty: float
    side: str
    ord_type: str | None
    event_time: datetime
    ingest_time: datetime
    venue_symbol: str | None = None  # the venue's own name of the symbol ("BTC-USD", "BTCUSDT"); Silver keeps it

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"exchange": self.exchange, "symbol": self.symbol}
        if self.venue_symbol is not None:
            out["venue_symbol"] = self.venue_symbol
        return {
            **out,
            "trade_id": self.trade_id,
            "price": self.price,
            "qty": self.qty,
            "side": self.side,
            "ord_type": self.ord_type,
            "event_time": format_time(self.event_time),
            "ingest_time": format_time(self.ingest_time),
            "schema_version": SCHEMA_VERSION,
        }

    def to_json(self) -> str:
        """Compact JSON for the trades topic: ``json.dumps(self.to_dict())`` byte for byte, faster.

        The common case (str fields, finite float price and qty) is one f-string; anything else
        takes json.dumps, which also raises on NaN/inf as before.
        """
        price, qty, ord_type, venue = self.price, self.qty, self.ord_type, self.venue_symbol
        if type(price) is float and type(qty) is float and _FINITE_MIN <= price <= _FINITE_MAX \
                and _FINITE_MIN <= qty <= _FINITE_MAX:
            event_time, ingest_time = self.event_time, self.ingest_time
            event = format_time(event_time)
            ingest = event if ingest_time is event_time else format_time(ingest_time)
            try:
                named = "" if venue is None else f'"venue_symbol":{_quote(venue)},'
                return (
                    f'{{"exchange":{_quote(self.exchange)},"symbol":{_quote(self.symbol)},{named}'
                    f'"trade_id":{_quote(self.trade_id)},"price":{price!r},"qty":{qty!r},'
                    f'"side":{_quote(self.side)},"ord_type":{"null" if ord_type is None else _quote(ord_type)},'
                    f'"event_time":"{event}","ingest_time":"{ingest}","schema_version":{SCHEMA_VERSION}}}'
                )
            except TypeError:  # a field that is not a str (e.g. an int trade_id): the general path
                pass
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    def kafka_key(self) -> bytes:
        """``exchange|symbol``: one (exchange, symbol) in one partition, in order (see TradeProducer)."""
        return kafka_key(self.exchange, self.symbol).encode("utf-8")

    def kafka_headers(self, source: str) -> list[tuple[str, bytes]]:
        return [("source", source.encode("utf-8")), ("schema_version", str(SCHEMA_VERSION).encode())]


@dataclass(frozen=True)
class Rejected:
    """Input that did not become a Trade; ``raw`` is truncated to MAX_RAW_CHARS."""

    reason: str
    raw: str
    source: str
    received_at: datetime
    truncated: bool = field(init=False, default=False)
    original_length: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        raw = self.raw if isinstance(self.raw, str) else str(self.raw)
        object.__setattr__(self, "original_length", len(raw))
        if len(raw) > MAX_RAW_CHARS:
            raw = raw[: MAX_RAW_CHARS - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
            object.__setattr__(self, "truncated", True)
        object.__setattr__(self, "raw", raw)

    @property
    def code(self) -> str:
        """The reason without its detail, e.g. ``"non_positive:qty"``."""
        return self.reason.split(" ", 1)[0]

    def to_json(self) -> str:
        """Compact JSON for the dead-letter topic."""
        return json.dumps(
            {
                "reason": self.reason,
                "raw": self.raw,
                "source": self.source,
                "received_at": format_time(self.received_at),
                "truncated": self.truncated,
                "original_length": self.original_length,
                "schema_version": SCHEMA_VERSION,
            },
            separators=(",", ":"),
        )


def kafka_key(exchange: str, symbol: str) -> str:
    """The trades topic's message key: ``"kraken|BTC/USD"`` (BTC/USD of two venues are two keys)."""
    return f"{exchange}|{symbol}"


class TradeSource(Protocol):
    """What every source offers: a ``stats`` dict and a blocking ``stream``."""

    stats: dict[str, Any]

    def stream(self, stop: Any) -> Iterator[Trade | Rejected]: ...


def source_stats(**extra: Any) -> dict[str, Any]:
    """The counters every source keeps (the producer's status reads them), plus source-specific ones."""
    return {"frames": 0, "trades": 0, "rejected": 0, "reconnects": 0, "snapshot_repeats": 0, "snapshot_trades": 0,
            "heartbeats": 0, "missing_ids": 0, "gaps": {}, "last_trade": None, "connected": False, **extra}


def shown(value: Any, limit: int = 40, show: Callable[[Any], str] = repr) -> str:
    """``show(value)`` cut to ``limit`` characters, for a reason; never raises for a parsed JSON value."""
    try:
        text = show(value)
    except (ValueError, RecursionError):  # an int past sys.get_int_max_str_digits(), or nesting near the limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(item: dict[str, Any], name: str) -> float:
    value = item[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TradeError(f"bad_type:{name} {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range (e.g. 10**400): as 1e400 parses, infinite
        number = math.inf
    if not math.isfinite(number):
        raise TradeError(f"non_finite:{name} {shown(value)}")
    if number <= 0:
        raise TradeError(f"non_positive:{name} {shown(value)}")
    return number


def decimal_field(item: dict[str, Any], name: str, *, limit: float | None = None) -> float:
    """A positive, finite number sent as a decimal string (Coinbase, Binance: ``"68923.67"``).

    A JSON number, an exponent, ``"NaN"`` or a sign is refused (``bad_type``): the venues document plain decimal
    strings, so anything else means the feed changed. ``limit``: the largest value allowed (``price_too_large``).
    """
    value = item.get(name)
    if value is None:
        raise TradeError(f"missing_field:{name}")
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise TradeError(f"bad_type:{name} {shown(value)}")
    number = float(value)
    if number <= 0:
        raise TradeError(f"non_positive:{name} {shown(value)}")
    if limit is not None and number > limit:
        raise TradeError(f"price_too_large {shown(value)}")
    return number


def millis_time(value: Any, name: str = "timestamp") -> datetime:
    """Milliseconds since the epoch (Binance's ``T``), as an exact UTC time."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TradeError(f"bad_type:{name} {shown(value)}")
    if not 0 <= value <= _MAX_MS:
        raise TradeError(f"bad_timestamp {shown(value)}")
    return _EPOCH + timedelta(milliseconds=value)


def iso_time(value: Any) -> datetime:
    """An ISO-8601 time with an offset (``...Z``); digits past the microsecond are cut, not rounded."""
    if isinstance(value, str) and "." in value:
        head, _, frac = value.partition(".")
        digits = len(frac) - len(frac.lstrip("0123456789"))
        if digits > 6:
            value = f"{head}.{frac[:6]}{frac[digits:]}"
    return _timestamp(value)


def trade_id_of(value: Any) -> str:
    """A trade id as text (an int or a non-empty string); anything else is ``bad_type:trade_id``."""
    if type(value) is int and -_BIG_ID < value < _BIG_ID:
        return str(value)
    return _trade_id(value)


def _trade_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "" or \
            (isinstance(value, int) and abs(value) >= _BIG_ID):
        raise TradeError(f"bad_type:trade_id {shown(value)}")
    if isinstance(value, str) and not value.isascii():
        try:  # a lone surrogate ("\ud800" in the JSON) is no text: Silver's reader turns each into "?"
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise TradeError(f"bad_text:trade_id {shown(value)}") from None
    return str(value)


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TradeError(f"bad_type:timestamp {shown(value)}")
    try:
        ts = datetime.fromisoformat(value)
        utc = ts.astimezone(UTC) if ts.tzinfo is not None else None  # naive times are ambiguous
    except (ValueError, OverflowError):
        utc = None
    if utc is None:
        raise TradeError(f"bad_timestamp {shown(value)}")
    return utc


def _side(value: Any) -> str:
    if not isinstance(value, str):
        raise TradeError(f"bad_type:side {shown(value)}")
    if value not in SIDES:
        raise TradeError(f"unknown_side:{value[:20]}")
    return value


def _symbol(value: Any) -> str:
    try:
        return normalize_symbol(value)
    except ValueError:
        raise TradeError(f"bad_symbol {shown(value)}") from None


def _ord_type(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TradeError(f"bad_type:ord_type {shown(value)}")
    return value


def parse_kraken_v2_trade(item: dict[str, Any], *, exchange: str = "kraken", ingest_time: datetime) -> Trade:
    """Validate one element of a Kraken v2 trade frame's ``data`` list.

    Fields are checked in a fixed order (price, symbol, trade_id, qty, side, ord_type, timestamp):
    the first bad one names the reason. The usual values (float numbers, a symbol seen before, a
    str or int id) take a short path; anything else goes through the checks that word the reason.
    """
    if not isinstance(item, dict):
        raise TradeError(f"bad_type:item {type(item).__name__}")
    for name in REQUIRED_FIELDS:
        if item.get(name) is None:
            raise TradeError(f"missing_field:{name}")
    price = item["price"]
    if not (type(price) is float and 0.0 < price <= MAX_PRICE):
        price = _number(item, "price")
        if price > MAX_PRICE:
            raise TradeError(f"price_too_large {shown(item['price'])}")
    raw_symbol = item["symbol"]
    symbol = _SYMBOLS.get(raw_symbol) if type(raw_symbol) is str else None
    if symbol is None:
        symbol = _symbol(raw_symbol)
        if len(_SYMBOLS) >= 1024:
            _SYMBOLS.clear()
        _SYMBOLS[raw_symbol] = symbol
    trade_id = item["trade_id"]
    trade_id = str(trade_id) if type(trade_id) is int and -_BIG_ID < trade_id < _BIG_ID else \
        trade_id if type(trade_id) is str and trade_id and trade_id.isascii() else _trade_id(trade_id)
    qty = item["qty"]
    if not (type(qty) is float and 0.0 < qty <= _FINITE_MAX):
        qty = _number(item, "qty")
    side = item["side"]
    if not (type(side) is str and side in SIDES):
        side = _side(side)
    return Trade(exchange, symbol, trade_id, price, qty, side, _ord_type(item.get("ord_type")),
                 _timestamp(item["timestamp"]), ingest_time.astimezone(UTC), raw_symbol)


_SYMBOLS: dict[str, str] = {}  # raw symbol -> normalize_symbol(raw), for the ones seen (valid ones only)
