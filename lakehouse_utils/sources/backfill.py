"""Filling gaps and fetching history from the venues' REST APIs, by venue name.

``rest_client("kraken", url)`` is the venue's client (``rest.py``: paging, pacing, retries, the cursor and the
report); ``rest_server("kraken")`` the local replay server of its REST API (``rest_server.py``), which serves the
bundled hour by default. :func:`fetch_gap` and :func:`fetch_history` fetch a range in one call:

    with rest_server("binance") as server:
        trades, report = fetch_gap(rest_client("binance", server.url), "BTC/USDT", 151_000_101, 151_000_400)

A fetch that cannot fill every id says so in ``report.unfilled`` (and in one logged line): it never hides one.

| venue | client | server | endpoint | default interval |
|---|---|---|---|---|
| ``kraken`` | ``rest_kraken.KrakenRest`` | ``KrakenRestServer`` | ``/0/public/Trades?pair&since&count`` | 1 s |
| ``coinbase`` | ``rest_coinbase.CoinbaseRest`` | ``CoinbaseRestServer`` | ``/products/{id}/trades?after&limit`` | 0.1 s |
| ``binance`` | ``rest_binance.BinanceRest`` | ``BinanceRestServer`` | ``/api/v3/historicalTrades?symbol&fromId&limit`` | 0.25 s |
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from .rest import BackfillProgress, BackfillReport, RestClient, RestCursor
from .rest_binance import BinanceRest, BinanceRestServer
from .rest_coinbase import CoinbaseRest, CoinbaseRestServer
from .rest_kraken import KrakenRest, KrakenRestServer
from .rest_server import RestReplayServer
from .trades import Rejected, Trade

CLIENTS: dict[str, type[RestClient]] = {"kraken": KrakenRest, "coinbase": CoinbaseRest, "binance": BinanceRest}
SERVERS: dict[str, type[RestReplayServer]] = {"kraken": KrakenRestServer, "coinbase": CoinbaseRestServer,
                                              "binance": BinanceRestServer}
LIVE_URLS = {"kraken": "https://api.kraken.com", "coinbase": "https://api.exchange.coinbase.com",
             "binance": "https://api.binance.com"}


def _check(venue: str) -> None:
    if venue not in CLIENTS:
        raise ValueError(f"no REST history for venue {venue!r}; choose one of {', '.join(CLIENTS)}")


def rest_client(venue: str, url: str | None = None, **settings: Any) -> RestClient:
    """The REST client of ``venue`` (``url`` defaults to the live API); ``settings``: RestSettings fields."""
    _check(venue)
    return CLIENTS[venue](url or LIVE_URLS[venue], **settings)


def rest_server(venue: str, recording: Any = None, **options: Any) -> RestReplayServer:
    """The REST replay server of ``venue`` (not started); ``options``: its fault and history hooks."""
    _check(venue)
    return SERVERS[venue](recording, **options)


def _run(client: RestClient, cursor: RestCursor,
         progress: Callable[[BackfillProgress], None] | None) -> tuple[list[Trade], BackfillReport]:
    job = client.fetch(cursor, progress)
    trades = [item for item in job if not isinstance(item, Rejected)]
    return trades, job.report


def fetch_gap(client: RestClient, symbol: str, first: int, last: int, after: datetime | None = None,
              progress: Callable[[BackfillProgress], None] | None = None) -> tuple[list[Trade], BackfillReport]:
    """The trades with ids ``first`` .. ``last`` and the report (``after``: the time of the trade before the gap)."""
    return _run(client, RestCursor.for_ids(client.venue, symbol, first, last, after), progress)


def fetch_history(client: RestClient, symbol: str, since: datetime, until: datetime | None = None,
                  progress: Callable[[BackfillProgress], None] | None = None) -> tuple[list[Trade], BackfillReport]:
    """The trades from ``since`` (inclusive) to ``until`` (exclusive; None: the newest) and the report."""
    return _run(client, RestCursor.for_time(client.venue, symbol, since, until), progress)


__all__ = ["CLIENTS", "LIVE_URLS", "SERVERS", "fetch_gap", "fetch_history", "rest_client", "rest_server"]
