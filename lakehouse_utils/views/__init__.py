"""What the notebooks and the dashboard show: charts and the live chart widget, analytics and alerts, the
pipeline status and the panels that start producers and queries (ipywidgets, Plotly, Gold read with deltalake),
time travel and SQL over the tables (``time_travel``, ``sql``: no JVM; ``lakehouse sql`` prints ``sql``'s results).

Imports: ``layers`` and every floor below it; never the commands (``ops``).
"""
