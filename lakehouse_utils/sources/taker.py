"""The taker's side of a print, venue by venue: Gold's ``buy_volume`` / ``sell_volume`` are taker volumes.

Each venue says it differently, and every rule is here, once (the adapters read a frame with the first
function of each pair, the re-encoder and the replay servers write one with the second):

| venue, channel | field | what it is | taker side |
|---|---|---|---|
| Kraken v2 ``trade`` | ``side`` | the taker's side | ``side`` |
| Coinbase Exchange ``matches`` | ``side`` | the **maker** order's side (documented) | the opposite |
| Coinbase Advanced ``market_trades`` | ``side`` (``BUY``/``SELL``) | not documented: below | ``ADVANCED_SIDE_IS`` |
| Binance Spot ``<symbol>@trade`` | ``m`` | "is the buyer the market maker?" | ``m=true``: sell, else buy |

**Coinbase Advanced Trade** (the one switch, :data:`ADVANCED_SIDE_IS`): its documentation names the field and
its values only. We take it as the **maker** side, like the Exchange feed it shares its matching engine and
trade ids with, because (1) a real REST ``ticker`` page (``tests/fixtures/venues/coinbase_advanced_rest_ticker
.json``) has two ``SELL`` prints at the best *ask* of the same answer: a resting sell order was hit, so the taker
bought; (2) a trading library's Coinbase Advanced Trade adapter documents the field as the maker side and
inverts it for the aggressor. Should Coinbase document otherwise, set ``ADVANCED_SIDE_IS = "taker"``: the
adapter, the re-encoded recordings and the replay server follow, and the test on the ticker page says so.
"""

from __future__ import annotations

from typing import Any, Literal

from .trades import SIDES, TradeError, shown

ADVANCED_SIDE_IS: Literal["maker", "taker"] = "maker"
_OPPOSITE = {"buy": "sell", "sell": "buy"}


def _side(value: Any, upper: bool = False) -> str:
    if not isinstance(value, str):
        raise TradeError(f"bad_type:side {shown(value)}")
    if (upper and value not in ("BUY", "SELL")) or (not upper and value not in SIDES):
        raise TradeError(f"unknown_side:{value[:20]}")
    return value.lower()


def kraken_taker(side: Any) -> str:
    """Kraken v2 ``side`` is the taker's."""
    return _side(side)


def coinbase_taker(maker_side: Any) -> str:
    """Coinbase Exchange ``matches.side`` is the maker order's side: the taker is on the other one."""
    return _OPPOSITE[_side(maker_side)]


def coinbase_wire_side(taker: str) -> str:
    """What a Coinbase Exchange ``match`` says for a print whose taker is ``taker``."""
    return _OPPOSITE[taker]


def advanced_taker(side: Any) -> str:
    """Coinbase Advanced Trade ``market_trades`` ``side`` (``BUY``/``SELL``), read per :data:`ADVANCED_SIDE_IS`."""
    side = _side(side, upper=True)
    return _OPPOSITE[side] if ADVANCED_SIDE_IS == "maker" else side


def advanced_wire_side(taker: str) -> str:
    """What a Coinbase Advanced Trade trade says for a print whose taker is ``taker``."""
    return (_OPPOSITE[taker] if ADVANCED_SIDE_IS == "maker" else taker).upper()


def binance_taker(buyer_is_maker: Any) -> str:
    """Binance ``m`` ("is the buyer the market maker?"): true means the taker sold."""
    if type(buyer_is_maker) is not bool:
        raise TradeError(f"bad_type:m {shown(buyer_is_maker)}")
    return "sell" if buyer_is_maker else "buy"


def binance_buyer_is_maker(taker: str) -> bool:
    """Binance's ``m`` for a print whose taker is ``taker``."""
    return taker == "sell"


__all__ = ["ADVANCED_SIDE_IS", "advanced_taker", "advanced_wire_side", "binance_buyer_is_maker", "binance_taker",
           "coinbase_taker", "coinbase_wire_side", "kraken_taker"]
