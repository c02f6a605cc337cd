"""Running streaming queries: one from the CLI (progress line, Ctrl-C, bounded runs) or several under a
:class:`Supervisor` that restarts a query failed on a Kafka error."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable

from pyspark.errors import StreamingQueryException
from pyspark.sql.streaming import StreamingQuery

from ..progress import ProgressLine
from .query_progress import progress_of
from .streaming import join_helpers, stop_between_batches


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
        stop_between_batches(query)
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


# failures of a query that a restart from its checkpoint gets past: the broker was away (killed, restarting)
_TRANSIENT = re.compile(r"org\.apache\.kafka\.common\.errors\.\w+|org\.apache\.kafka\.common\.KafkaException"
                        r"|Timeout(Exception)?: |Cannot fetch record|Failed to (get|fetch) records", re.I)


# Kafka errors a restart does not get past: a refused login or certificate, a missing permission
_REFUSED = re.compile(r"org\.apache\.kafka\.common\.errors\.\w*(Authentication|Authorization)Exception")


def is_transient(text: str) -> bool:
    """Is a query's failure one a restart from its checkpoint gets past (the broker was away)?"""
    return _TRANSIENT.search(text) is not None and _REFUSED.search(text) is None


class Supervisor:
    """Streaming queries by name; one that fails on a Kafka error is started again from its checkpoint.

    ``check()`` (call it while waiting on the queries) restarts such a query at most ``max_restarts`` times,
    saying so in a line ("pipeline: query failed on a Kafka error (...); restarting it from its checkpoint");
    any other failure, data loss included, raises ``RuntimeError`` with the query's name and a clear reason.
    Restarting is safe: each batch is committed idempotently by (query id, batch id), so a batch that was
    running when the query failed is done again without doubling anything.
    """

    def __init__(self, starts: dict[str, Callable[[], StreamingQuery]],
                 say: Callable[[str], None] = print, max_restarts: int = 3) -> None:
        self.starts = starts
        self.say = say
        self.max_restarts = max_restarts
        self.restarts = dict.fromkeys(starts, 0)
        self.messages: list[str] = []
        self.queries: dict[str, StreamingQuery] = {}  # filled by start(); the same dict all along

    def start(self) -> dict[str, StreamingQuery]:
        for name, start in self.starts.items():
            self.queries[name] = start()
        return self.queries

    def check(self) -> None:
        for name, query in list(self.queries.items()):
            error = query.exception()
            if error is None:
                continue
            text = str(error)
            clear = explain_error(name, text)
            if clear is not None or not is_transient(text) or self.restarts[name] >= self.max_restarts:
                raise RuntimeError(f"{name} query failed: {clear or text}")
            self.restarts[name] += 1
            join_helpers(query)
            reason = text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__
            cause = _TRANSIENT.search(text)
            message = (f"{name}: query failed on a Kafka error ({cause.group(0) if cause else reason}); restarting it "
                       f"from its checkpoint ({self.restarts[name]} of at most {self.max_restarts})")
            self.messages.append(message)
            self.say(message)
            self.queries[name] = self.starts[name]()
