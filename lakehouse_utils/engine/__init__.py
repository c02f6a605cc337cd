"""The Spark engine: the session with its Kafka and Delta jars (``spark``) and a local standalone cluster
(``cluster``).

Imports: the top-level modules only (``config``, ``jars``, ``procs``).
"""
