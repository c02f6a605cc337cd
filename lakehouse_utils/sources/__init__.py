"""Trade sources: the normalized record (``trades.Trade``) and one module per venue or feed.

Venues: ``kraken`` (v2), ``coinbase`` (the Exchange feed's ``matches`` and Advanced Trade's ``market_trades``),
``binance`` (Spot ``<symbol>@trade``), each on the shared loop of ``ws`` (reconnect, resubscribe, keep-alive,
trade-id gaps from ``gaps``), with ``symbols`` (one BASE/QUOTE scheme) and ``taker`` (the taker's side, venue
by venue). Each has a replay server speaking its protocol (``replay`` for Kraken, ``coinbase_replay``,
``binance_replay``, on ``replay_server``) and plays the bundled hour re-encoded in its format (``reencode``);
``venues`` names them all. Also ``recording`` (the recording format) and ``synthetic``.

REST history (filling a gap, fetching a time range): ``rest`` (the client engine: paging, pacing, retries) with
``rest_cursor`` (the resumable cursor and the report), ``rest_server`` (a local REST replay server's engine) and a
client and server per venue (``rest_kraken``, ``rest_coinbase``, ``rest_binance``), picked by name in ``backfill``.

Imports: only the top-level modules (``config`` ...); nothing of Kafka, Spark or the layers.
"""
