"""The Spark engine: the session with its Kafka and Delta jars (``spark``) and a local standalone cluster
(``cluster``).

Imports: ``kafka`` (the broker's process wait and port probe), ``sources`` and the top-level modules.
"""
