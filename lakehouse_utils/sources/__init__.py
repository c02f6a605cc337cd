"""Trade sources: the normalized record (``trades.Trade``) and one module per venue or feed (``kraken``, the
``replay`` of a recording, ``synthetic``); a new venue (Coinbase, Binance) is one more module here.

Imports: only the top-level modules (``config`` ...); nothing of Kafka, Spark or the layers.
"""
