"""The Spark engine: the session with its Kafka and Delta jars (``spark``), the shared engine every kernel uses
(``server`` runs it detached, ``serve`` is its process, ``host`` runs the layer queries in a process,
``handles.open_engine`` is what a notebook holds), and a local standalone cluster (``cluster``).

Imports: the top-level modules and ``layers`` (the engine runs the layers' queries).
"""

from .handles import LocalEngine, RemoteQuery, SharedEngine, open_engine
from .server import EngineError, EngineServer

__all__ = ["EngineError", "EngineServer", "LocalEngine", "RemoteQuery", "SharedEngine", "open_engine"]
