"""The operator's commands: the ``lakehouse`` CLI (``cli``, ``ingest``, ``engine_cli``, ``sql_cli``), the demos,
the reconciliation check (``check``, ``reconcile``), ``lakehouse reset`` and the notebook runs (``notebooks``).

Imports: any floor below (``views``, ``layers``, ``engine``, ``kafka``, ``sources``, the top-level modules);
only ``bench`` imports from here.
"""
