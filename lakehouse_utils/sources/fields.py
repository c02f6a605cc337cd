"""Where a venue puts a trade's fields: one parser for the venues that send flat trade objects (Coinbase, Binance).

A :class:`TradeFields` names the fields (symbol, id, price, quantity, side, time) and says how the venue writes
the side (a rule of ``taker.py``) and the time; :meth:`TradeFields.parse` checks them in that order (the first
bad one names the reason, as Kraken's parser does) and makes the :class:`~lakehouse_utils.sources.trades.Trade`:
the symbol through ``symbols.py`` (an unknown name is ``unknown_symbol:<venue>:<NAME>``), prices and quantities
from decimal strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .symbols import common_symbol
from .trades import MAX_PRICE, Trade, TradeError, decimal_field, trade_id_of


@dataclass(frozen=True)
class TradeFields:
    exchange: str
    symbol: str
    trade_id: str
    price: str
    qty: str
    side: str
    time: str
    taker: Callable[[Any], str]  # the venue's side field -> the taker's side
    when: Callable[[Any], datetime]  # the venue's time field -> a UTC time

    def parse(self, item: Any, ingest_time: datetime) -> Trade:
        """One trade object of the venue (a TradeError names what is wrong with it)."""
        if not isinstance(item, dict):
            raise TradeError(f"bad_type:item {type(item).__name__}")
        for name in (self.symbol, self.trade_id, self.price, self.qty, self.side, self.time):
            if item.get(name) is None:
                raise TradeError(f"missing_field:{name}")
        price = decimal_field(item, self.price, limit=MAX_PRICE)
        venue_symbol = item[self.symbol]
        symbol = common_symbol(self.exchange, venue_symbol)
        trade_id = trade_id_of(item[self.trade_id])
        qty = decimal_field(item, self.qty)
        side = self.taker(item[self.side])
        return Trade(self.exchange, symbol, trade_id, price, qty, side, None, self.when(item[self.time]),
                     ingest_time, venue_symbol)


__all__ = ["TradeFields"]
