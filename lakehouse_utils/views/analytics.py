"""Bar analytics and alerts for the notebooks: the names notebook 06, the charts and the tests use.

The logic lives one floor down, where Gold can use it to raise alerts itself: the signals and the alert rules in
:mod:`lakehouse_utils.layers.alerts` (its docstring defines every column), the table and the topic in
:mod:`lakehouse_utils.layers.alert_sink`.  This module re-exports them unchanged, so a chart, notebook 06's
"explore thresholds" panel and the pipeline compute the same values and the same ids.
"""

from __future__ import annotations

from ..layers.alert_sink import alert_counts, alert_json, alerts_path, read_alerts, write_alerts
from ..layers.alerts import (
    ALERT_COLUMNS,
    ALL_VENUES,
    KINDS,
    SIGNAL_COLUMNS,
    add_signals,
    alert_id,
    detect_alerts,
    empty_alerts,
    infer_timeframe,
    periods_per_year,
    spread_alerts,
)

__all__ = ["ALERT_COLUMNS", "ALL_VENUES", "KINDS", "SIGNAL_COLUMNS", "add_signals", "alert_counts", "alert_id",
           "alert_json", "alerts_path", "detect_alerts", "empty_alerts", "infer_timeframe", "periods_per_year",
           "read_alerts", "spread_alerts", "write_alerts"]
