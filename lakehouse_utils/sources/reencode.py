"""The bundled real hour in each venue's wire format, so every venue's replay server can play it.

:func:`reencode` turns a Kraken v2 recording (default: the bundled hour, ``replay.SAMPLE_RECORDING``) into the
frames a venue would have sent for the same trades: the same price, quantity and time, the taker's side written
the venue's way (``taker.py``), and the venue's own ids and symbol names. Each recorded frame keeps its
``recv_ms``.

| venue | frames | symbol | trade id |
|---|---|---|---|
| ``kraken`` | as recorded | ``BTC/USD`` | as recorded (1..2671) |
| ``coinbase`` | a ``match`` per trade | ``BTC-USD`` | ``COINBASE_ID_BASE`` + Kraken's |
| ``coinbase-advanced`` | a ``market_trades`` ``update`` per frame | ``BTC-USD`` | as ``coinbase`` (a string) |
| ``binance`` | a ``<symbol>@trade`` event per trade (combined stream) | ``BTCUSDT`` | ``BINANCE_ID_BASE`` + Kraken's |

Binance lists no USD pairs, so the hour's ``USD`` quote becomes ``USDT`` there (``BTC/USD`` -> ``BTC/USDT``). Prices
and sizes become the venues' decimal strings, which read back to the very same floats; times keep their
microseconds (Binance's ``T`` is in milliseconds: the hour is stamped to the millisecond). A trade the hour
holds twice (same id) stays twice. ``python -m lakehouse_utils.sources.reencode VENUE OUT.jsonl.gz`` writes one.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .recording import SAMPLE_RECORDING, Recording, entries, write_recording
from .symbols import venue_name
from .taker import advanced_wire_side, binance_buyer_is_maker, coinbase_wire_side, kraken_taker
from .trades import format_time, millis_time, normalize_symbol

VENUES = ("kraken", "coinbase", "coinbase-advanced", "binance")
COINBASE_ID_BASE = 68_000_000  # about where Coinbase's BTC-USD trade ids stood in mid 2019
BINANCE_ID_BASE = 151_000_000  # about where Binance's BTCUSDT trade ids stood in mid 2019
SEQUENCE_STEP = 7  # Coinbase's order-book sequence moves on between matches (it is not a trade counter)
_QUOTES = {"binance": {"USD": "USDT"}}  # quotes a venue does not list, and what stands for them there
_ORDER_IDS = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # a namespace for made-up order ids


def decimal_text(value: float, places: int = 8) -> str:
    """``value`` as a plain decimal string that reads back to the same float, padded to ``places`` decimals."""
    head, _, frac = format(Decimal(repr(float(value))), "f").partition(".")
    text = f"{head}.{frac.ljust(places, '0')}" if len(frac) <= places else f"{head}.{frac}"
    if float(text) != value:
        raise ValueError(f"{value!r} does not survive as {text!r}")
    return text


def millis(timestamp: str) -> int:
    """ms since the epoch of an ISO time that has no finer digits (Binance's ``T``)."""
    ts = datetime.fromisoformat(timestamp)
    if ts.microsecond % 1000:
        raise ValueError(f"{timestamp} is finer than a millisecond: Binance's T cannot hold it")
    return int(ts.timestamp()) * 1000 + ts.microsecond // 1000


def venue_symbol(venue: str, symbol: str) -> str:
    """The venue's name of a Kraken v2 symbol (``BTC/USD`` -> ``BTC-USD`` / ``BTCUSDT``)."""
    base, quote = normalize_symbol(symbol).split("/")
    quote = _QUOTES.get(venue, {}).get(quote, quote)
    return venue_name("coinbase" if venue == "coinbase-advanced" else venue, f"{base}/{quote}")


def _match(item: dict[str, Any], index: int) -> dict[str, Any]:
    trade_id = COINBASE_ID_BASE + int(item["trade_id"])
    return {"type": "match", "trade_id": trade_id,
            "maker_order_id": str(uuid.uuid5(_ORDER_IDS, f"{trade_id}-maker")),
            "taker_order_id": str(uuid.uuid5(_ORDER_IDS, f"{trade_id}-taker")),
            "side": coinbase_wire_side(kraken_taker(item["side"])), "size": decimal_text(item["qty"]),
            "price": decimal_text(item["price"], 2), "product_id": venue_symbol("coinbase", item["symbol"]),
            "sequence": 6_300_000_000 + SEQUENCE_STEP * index, "time": item["timestamp"]}


def _market_trade(item: dict[str, Any]) -> dict[str, Any]:
    return {"trade_id": str(COINBASE_ID_BASE + int(item["trade_id"])),
            "product_id": venue_symbol("coinbase-advanced", item["symbol"]), "price": decimal_text(item["price"], 2),
            "size": decimal_text(item["qty"]), "side": advanced_wire_side(kraken_taker(item["side"])),
            "time": item["timestamp"]}


def _binance_trade(item: dict[str, Any], recv_ms: int) -> dict[str, Any]:
    name = venue_symbol("binance", item["symbol"])
    data = {"e": "trade", "E": recv_ms, "s": name, "t": BINANCE_ID_BASE + int(item["trade_id"]),
            "p": decimal_text(item["price"]), "q": decimal_text(item["qty"]), "T": millis(item["timestamp"]),
            "m": binance_buyer_is_maker(kraken_taker(item["side"])), "M": True}
    return {"stream": f"{name.lower()}@trade", "data": data}


def reencode(venue: str, source: Recording = SAMPLE_RECORDING) -> list[dict[str, Any]]:
    """The recording entries (``{"recv_ms", "frame"}``) of the Kraken v2 recording ``source`` in ``venue``'s format."""
    if venue not in VENUES:
        raise ValueError(f"unknown venue {venue!r}; choose one of {', '.join(VENUES)}")
    rows = entries(source)
    if venue == "kraken":
        return rows
    out: list[dict[str, Any]] = []
    for row in rows:
        frame, recv_ms = row.get("frame"), row.get("recv_ms")
        if not (isinstance(frame, dict) and frame.get("channel") == "trade"):
            continue  # status, heartbeats, acks: each venue's server makes its own
        items = frame["data"]
        if venue == "coinbase":
            out += [{"recv_ms": recv_ms, "frame": _match(item, len(out))} for item in items]
        elif venue == "binance":
            out += [{"recv_ms": recv_ms, "frame": _binance_trade(item, recv_ms)} for item in items]
        else:
            event = {"type": "snapshot" if frame.get("type") == "snapshot" else "update",
                     "trades": [_market_trade(item) for item in items]}
            out.append({"recv_ms": recv_ms, "frame": {
                "channel": "market_trades", "client_id": "", "timestamp": format_time(millis_time(recv_ms)),
                "sequence_num": len(out), "events": [event]}})
    return out


def write_venue_recording(venue: str, path: str | Path, source: Recording = SAMPLE_RECORDING) -> Path:
    """:func:`reencode` written to ``path`` (gzipped if it ends in .gz); returns the path."""
    return write_recording(path, reencode(venue, source))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Re-encode a Kraken v2 recording into a venue's wire format.")
    parser.add_argument("venue", choices=VENUES)
    parser.add_argument("out", help="the recording to write (.jsonl or .jsonl.gz)")
    parser.add_argument("--source", default=str(SAMPLE_RECORDING), help="a Kraken v2 recording (default: the hour)")
    args = parser.parse_args(argv)
    print(write_venue_recording(args.venue, args.out, args.source))


if __name__ == "__main__":
    main()


__all__ = ["BINANCE_ID_BASE", "COINBASE_ID_BASE", "VENUES", "decimal_text", "millis", "reencode",
           "venue_symbol", "write_venue_recording"]
