"""One symbol scheme: ``BASE/QUOTE`` in upper case, whatever a venue calls the pair.

- **Kraken** names split at ``/`` (v2: ``BTC/USD``); legacy codes are renamed (``XBT`` -> ``BTC``, ``XDG`` ->
  ``DOGE``) by :func:`~lakehouse_utils.sources.trades.normalize_symbol`, which every venue's name goes through.
- **Coinbase** names split at ``-`` (``BTC-USD`` -> ``BTC/USD``).
- **Binance** names have no separator (``BTCUSDT``; lower case in stream names), so they are looked up in the
  bundled table ``lakehouse_utils/data/symbols.json``.

A name that does not split into two parts, or a Binance name the table does not hold, is not guessed:
:func:`common_symbol` raises :class:`UnknownSymbol`, whose reason ``unknown_symbol:<venue>:<NAME>`` sends the
trade to the dead-letter topic (the venue's frame kept whole, to replay once the table knows the name). The
venue's own name is kept beside the common one (``Trade.venue_symbol``, Silver's ``venue_symbol``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from .trades import TradeError, normalize_symbol, shown

TABLE = Path(__file__).parents[1] / "data" / "symbols.json"
SEPARATORS = {"kraken": "/", "coinbase": "-"}  # venues whose names split at a separator
TABLE_VENUES = ("binance",)  # venues whose names are looked up in TABLE
_CACHE_MAX = 4096


class UnknownSymbol(TradeError):
    """A venue's symbol name that maps to no BASE/QUOTE: reason ``unknown_symbol:<venue>:<NAME>``."""

    def __init__(self, venue: str, name: object) -> None:
        text = name.upper() if isinstance(name, str) else shown(name)
        super().__init__(f"unknown_symbol:{venue}:{shown(text, 40, str)}")
        self.venue, self.name = venue, name


@cache
def table(venue: str) -> dict[str, str]:
    """The bundled ``{venue name: BASE/QUOTE}`` of a venue in TABLE_VENUES (upper-case names)."""
    if venue not in TABLE_VENUES:
        raise ValueError(f"no symbol table for {venue!r} (its names split at a separator)")
    rows = json.loads(TABLE.read_text(encoding="utf-8"))[venue]
    return {name.upper(): normalize_symbol(common) for name, common in rows.items()}


_common: dict[tuple[str, str], str] = {}


def common_symbol(venue: str, name: object) -> str:
    """``BASE/QUOTE`` of a venue's symbol name; raises :class:`UnknownSymbol` (a TradeError) if there is none."""
    if type(name) is str:
        hit = _common.get((venue, name))
        if hit is not None:
            return hit
    else:
        raise UnknownSymbol(venue, name)
    if venue in TABLE_VENUES:
        symbol = table(venue).get(name.upper())
    elif venue in SEPARATORS:
        parts = name.split(SEPARATORS[venue])
        try:
            symbol = normalize_symbol("/".join(parts)) if len(parts) == 2 else None
        except ValueError:
            symbol = None
    else:
        raise ValueError(f"unknown venue {venue!r}")
    if symbol is None:
        raise UnknownSymbol(venue, name)
    if len(_common) >= _CACHE_MAX:
        _common.clear()
    _common[(venue, name)] = symbol
    return symbol


def venue_name(venue: str, symbol: str) -> str:
    """A venue's name of ``symbol`` (any spelling ``normalize_symbol`` takes), for subscribing.

    ``kraken``: ``BTC/USD``; ``coinbase``: ``BTC-USD``; ``binance``: ``BTCUSDT`` (a ValueError if the bundled table
    does not hold the pair: the venue's answers could not be mapped back).
    """
    common = normalize_symbol(symbol)
    if venue in SEPARATORS:
        return common.replace("/", SEPARATORS[venue])
    names = [name for name, pair in table(venue).items() if pair == common]
    if not names:
        raise ValueError(f"{venue} has no symbol for {common} in {TABLE.name} (add it there: "
                         f'"{common.replace("/", "")}": "{common}")')
    return names[0]


__all__ = ["SEPARATORS", "TABLE", "TABLE_VENUES", "UnknownSymbol", "common_symbol", "table", "venue_name"]
