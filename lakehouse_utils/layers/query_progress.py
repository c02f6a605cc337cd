"""What a query's progress line shows (:class:`Progress`, from a ``StreamingQuery`` or the engine's
``RemoteQuery``), and the numbers a layer keeps beside Spark's own (:class:`LayerStats`).

No pyspark here: a notebook's panel shows progress from a kernel that holds neither a JVM nor the Spark client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """The numbers a user watches, taken from ``StreamingQuery.lastProgress``."""

    name: str
    active: bool
    batch_id: int | None
    input_rows: int
    input_rps: float
    processed_rps: float
    batch_ms: int | None
    watermark: str | None
    state_rows: int
    message: str
    layer: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        if self.batch_id is None:
            return f"{self.name}: {self.message}"
        wm = f" wm={self.watermark}" if self.watermark else ""
        extra = "".join(f" {k}={v}" for k, v in self.layer.items() if not k.startswith("_") and k != "watermark")
        return (f"{self.name}: batch {self.batch_id} rows={self.input_rows} in={self.input_rps:.0f}/s "
                f"out={self.processed_rps:.0f}/s {self.batch_ms or 0}ms{wm} state={self.state_rows}{extra}")


class LayerStats(dict):
    """Numbers a layer's foreachBatch keeps for the progress line (watermark, late, quarantined ...).

    Attached to the StreamingQuery as ``query.layer_stats``; Spark's own progress knows nothing of them.
    """

    def add(self, batch_id: int, key: str, n: int) -> None:
        """Count ``n`` for a batch once (a batch replayed in the same process is not counted again)."""
        seen: dict[int, set[str]] = self.setdefault("_counted", {})
        keys = seen.setdefault(batch_id, set())
        if key not in keys:
            keys.add(key)
            self[key] = self.get(key, 0) + n
        for old in [b for b in seen if b < batch_id - 10]:  # a replay is of the last batch: keep a few
            del seen[old]


def progress_of(query: Any, name: str = "") -> Progress:
    if query is None:
        return Progress(name, False, None, 0, 0.0, 0.0, None, None, 0, "not started")
    p = query.lastProgress or {}
    status = query.status or {}
    state = sum(int(op.get("numRowsTotal", 0)) for op in p.get("stateOperators", []) or [])
    layer = dict(getattr(query, "layer_stats", {}) or {})
    return Progress(
        name=name or query.name or str(query.id),
        active=query.isActive,
        batch_id=p.get("batchId"),
        input_rows=int(p.get("numInputRows", 0) or 0),
        input_rps=float(p.get("inputRowsPerSecond", 0.0) or 0.0),
        processed_rps=float(p.get("processedRowsPerSecond", 0.0) or 0.0),
        batch_ms=(p.get("durationMs") or {}).get("triggerExecution"),
        watermark=(p.get("eventTime") or {}).get("watermark") or layer.get("watermark"),
        state_rows=state,
        message=status.get("message", ""),
        layer=layer,
    )


__all__ = ["LayerStats", "Progress", "progress_of"]
