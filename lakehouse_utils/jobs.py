"""Running a streaming query from the CLI (progress line, Ctrl-C, bounded runs) and the dev reset."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql.streaming import StreamingQuery

from .config import Settings
from .progress import ProgressLine
from .streaming import join_helpers, progress_of


def run_query(query: StreamingQuery, duration: float | None = None, progress: ProgressLine | None = None) -> int:
    """Wait for ``query`` (until it ends, ``duration`` passes, or Ctrl-C) with a progress line; 0 if no error."""
    progress = progress or ProgressLine()
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while query.isActive:
            progress.update(progress_of(query).line())
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                query.awaitTermination(0.5)
            except StreamingQueryException:
                break  # reported below from query.exception(), as a line and exit code 1, not a traceback
    except KeyboardInterrupt:
        progress.done("stopping (Ctrl-C) ...")
    finally:
        if query.isActive:
            query.stop()
        join_helpers(query)
    error = query.exception()
    clear = explain_error(query.name, str(error)) if error else None
    progress.done(f"{query.name}: stopped" + (f" with error: {clear or error}" if error else ""))
    skipped = (getattr(query, "layer_stats", None) or {}).get("skipped_offsets")
    if skipped:
        progress.done(f"{query.name}: {skipped:,} offset(s) were no longer in Kafka (deleted by retention) and were "
                      "skipped (--allow-data-loss); `lakehouse check` shows where Bronze has the gap")
    return 1 if error else 0


_DATA_LOSS = "Some data may have been lost because they are not available in Kafka any more"
_WHERE = (re.compile(r"Could not read records in offset \[(\d+), \d+\) for topic partition (\S+)"),
          re.compile(r"Starting offset for (\S+) was (\d+) but consumer reset"))
_COMMITTED = re.compile(r"Current Committed Offsets: \{.*?\]\]: (\{.*?\}\})\}")


def explain_error(name: str, text: str) -> str | None:
    """A clear line for the failures a user can act on (so far: Kafka data loss), else ``None``.

    Spark's text says "Some data may have been lost because they are not available in Kafka any more; ...
    Reason: Could not read records in offset [200, 400) for topic partition t-0 ..." and goes on with JVM
    stack traces; the line says what happened, from where, and what to do.
    """
    if _DATA_LOSS not in text:
        return None
    where = ""
    if m := _WHERE[0].search(text):  # a task's range: the query's committed offset says where the hole starts
        part, offset = m.group(2), m.group(1)
        topic, _, number = part.rpartition("-")
        if c := _COMMITTED.search(text):
            with contextlib.suppress(ValueError, AttributeError):
                offset = str(json.loads(c.group(1)).get(topic, {}).get(number, offset))
        where = f" (from offset {offset} of {part})"
    elif m := _WHERE[1].search(text):
        where = f" (from offset {m.group(2)} of {m.group(1)})"
    return (f"Kafka data loss: messages{where} were deleted (by retention) before {name} read them, and "
            f"failOnDataLoss is on. Restart with --allow-data-loss to skip them (the job reports how many), or "
            f"`lakehouse reset` to rebuild from what the topic holds.")


def reset_targets(settings: Settings, broker: bool = False) -> list[Path]:
    """What ``lakehouse reset`` deletes: checkpoints, every table, reports (and the broker data if asked)."""
    paths = [settings.checkpoints, settings.bronze, settings.silver, settings.quarantine, settings.gold,
             settings.reports]
    if broker:
        paths.append(settings.broker_dir)
    return [p for p in paths if p.exists()]


def reset(settings: Settings, broker: bool = False) -> list[Path]:
    if broker:
        from .broker import LocalKafka

        LocalKafka(settings.broker_dir).stop()
    targets = reset_targets(settings, broker)
    for path in targets:
        shutil.rmtree(path)
        if path.parent != settings.data_dir and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()  # data/bronze, data/silver once their tables are gone
    return targets
