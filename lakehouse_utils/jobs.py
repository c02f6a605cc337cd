"""Running a streaming query from the CLI (progress line, Ctrl-C, bounded runs) and the dev reset."""

from __future__ import annotations

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
    progress.done(f"{query.name}: stopped" + (f" with error: {error}" if error else ""))
    return 1 if error else 0


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
