"""lakehouse_utils: all job logic of the crypto streaming lakehouse (notebooks, CLI and tests call it).

The folders follow a trade's path, lowest floor first; a module imports only from its own floor or lower ones
(tests/test_layout.py checks it, and that no modules import each other in a cycle):

    (top)    config, jars, procs, progress: settings, the jar cache, local processes and ports, a progress line
    sources  where trades come from: the normalized Trade and one module per venue or feed
    kafka    the broker, its clients and topics, and the producer that writes trades into Kafka
    layers   the streaming jobs Kafka -> Bronze -> Silver -> Gold and the helpers they share
    engine   Spark: the session, the shared engine that runs the layers for every kernel, a standalone cluster
    views    what the notebooks and the dashboard show: charts, live panels, analytics, pipeline status
    ops      the operator's commands: the `lakehouse` CLI, the demos, the reconciliation check, notebook runs
    bench    speed and memory measurements (`make bench`)
"""

from .config import Settings

__all__ = ["Settings"]
__version__ = "0.1.0"
