"""Kafka plumbing: client configuration (``kafka_conf``), the embedded broker (``broker``, ``broker_security``,
``tls``), topics (``topics``), and the producer that writes the sources' trades to the trades topic
(``trade_producer`` with its ``delivery`` bookkeeping, and ``producer``, which runs a source on a thread).

Imports: ``sources`` and the top-level modules; never Spark, the layers, the views or the commands.
"""
