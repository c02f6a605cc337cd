"""Silver and Gold follow the table before them version by version, and join its batches when it runs here.

A :class:`Follower` reads the Delta versions its source table committed since it last ran (the files those
commits added with data: compactions are skipped) and turns them into one batch of its layer.  Its position is a
small state file in its checkpoint folder, written like Spark's offsets and commits logs::

    {"batch": 7, "done": 41}                            # batch 7 took the source up to version 41
    {"batch": 7, "done": 41, "planned": [8, 41, 45]}    # batch 8 takes versions 42..45 (written first)

so a batch replayed after a crash covers exactly the same versions, with the same batch id: the tables that hold
it already (Delta's idempotent-write id, ``<layer>-<checkpoint id>`` and the batch id) skip it, the others get it.

**Fused.**  When the table before runs in this process (Bronze's query, or Silver's follower), a follower that has
caught up with it *joins* its batches (:class:`Chain`): Bronze's micro-batch, once committed, goes straight on to
Silver and then to Gold, one Spark job for the three layers, as ``lakehouse demo``'s one query does.  Stop Silver
and Bronze goes on alone; start it again and it catches up from Bronze's table, then joins again.  Which way a
batch ran changes nothing in the tables: a batch is "these source versions", either way.

**A first start after maintenance pruned the log** (``maintenance.prune_log``: Silver never started while Bronze
ran longer than the time-travel window): the follower's first batch is the source table as it is, its newest
version's files, as Spark's Delta source starts from a snapshot; it follows the versions after that.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
from deltalake import DeltaTable

from ..config import commit_file
from .query_progress import LayerStats
from .streaming import trigger_kwargs

STATE = "follower.json"
MAX_BYTES = 64 << 20  # a catch-up batch takes versions up to about this much data (as maxBytesPerTrigger)


class FollowerError(RuntimeError):
    """A follower cannot go on (its source's log lost versions it still needs, an unreadable checkpoint)."""


# -- the source table's log ------------------------------------------------------------------------------
def latest_version(table: Path, known: int = -1) -> int:
    """The table's newest version, found by probing the commits after ``known`` (no listing of the log)."""
    version = known
    while commit_file(table, version + 1).exists():
        version += 1
    if version < 0:  # nothing known yet and no version 0: the table may start later (a checkpointed log)
        versions = [int(p.stem) for p in (table / "_delta_log").glob("*.json") if p.stem.isdigit()]
        version = max(versions, default=-1)
    return version


def commit_actions(table: Path, after: int, upto: int, kind: str) -> Iterator[dict[str, Any]]:
    """The ``kind`` actions (``add``, ``remove``) of the commits ``after+1 .. upto``, from their JSON entries;
    FollowerError if a version is gone from the log."""
    for version in range(after + 1, upto + 1):
        try:
            lines = commit_file(table, version).read_text().splitlines()
        except OSError:
            raise FollowerError(f"version {version} of {table} is no longer in its log (cleaned up): the layer "
                                "after it cannot go on from where it stopped; rebuild it (`lakehouse reset`)") from None
        for line in lines:
            if f'"{kind}"' in line and (action := json.loads(line).get(kind)):
                yield action


def added_files(table: Path, after: int, upto: int) -> list[tuple[Path, dict[str, str | None], int]]:
    """Files the commits ``after+1 .. upto`` added with data: (path, partition values, size)."""
    return [(table / unquote(add["path"]), add.get("partitionValues") or {}, int(add.get("size", 0)))
            for add in commit_actions(table, after, upto, "add") if add.get("dataChange", True)]


def log_pruned(table: Path, after: int) -> bool:
    """True for a follower that has read nothing yet (``after`` -1) of a table whose first versions are gone (its
    callers know the table has a version: they are about to read up to it)."""
    return after < 0 and not commit_file(table, 0).exists()


def snapshot_files(table: Path, version: int) -> list[tuple[Path, dict[str, str | None], int]]:
    """The files that make up the table at ``version``: (path, partition values as the log writes them, size)."""
    actions = pa.table(DeltaTable(str(table), version=version).get_add_actions(flatten=True))
    parts = [c for c in actions.column_names if c.startswith("partition.")]
    return [(table / row["path"], {c[len("partition."):]: None if row[c] is None else str(row[c]) for c in parts},
             int(row["size_bytes"])) for row in actions.to_pylist()]


def removed_files(table: Path, after: int, upto: int) -> set[str]:
    """Files the commits ``after+1 .. upto`` removed, relative to the table as named on disk (the log URL-encodes
    a path)."""
    return {unquote(remove["path"]) for remove in commit_actions(table, after, upto, "remove")}


def spark_processed(checkpoint: Path) -> tuple[int, int] | None:
    """(last committed batch, source version fully processed) of a Spark Delta-source checkpoint, or ``None``.

    What a layer that ran as a Spark streaming query (an older release) had done: its follower goes on from there.
    """
    commits, offsets = checkpoint / "commits", checkpoint / "offsets"
    done = sorted((int(p.name) for p in commits.glob("[0-9]*") if p.name.isdigit()), reverse=True) \
        if commits.is_dir() else []
    for batch in done:
        path = offsets / str(batch)
        if path.exists():
            offset = json.loads(path.read_text().strip().splitlines()[-1])
            version, index = int(offset["reservoirVersion"]), int(offset.get("index", -1))
            if index != -1:
                raise FollowerError(f"{checkpoint} stopped inside version {version} of its source (a Spark checkpoint "
                                    "of an older release): rebuild this layer (`lakehouse reset`)")
            return batch, version - 1
    return None


def processed_version(checkpoint: Path) -> int | None:
    """The source version a layer's checkpoint has fully processed (follower state, or an older Spark one)."""
    try:
        return int(json.loads((checkpoint / STATE).read_text())["done"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        found = spark_processed(checkpoint)
    except FollowerError:
        return None
    return None if found is None else found[1]


def batches_committed(checkpoint: Path) -> int:
    """How many batches a layer's checkpoint holds as done: its follower's batch number + 1, or Spark's commits."""
    try:
        return int(json.loads((checkpoint / STATE).read_text())["batch"]) + 1
    except (OSError, ValueError, KeyError):
        pass
    commits = checkpoint / "commits"
    return sum(1 for p in commits.glob("[0-9]*") if p.name.isdigit()) if commits.is_dir() else 0


# -- a layer's follower ----------------------------------------------------------------------------------
class Follower:
    """One layer following its source table (see the module doc); the parts of a StreamingQuery a panel uses.

    ``read(files)`` turns the source's added files into the rows ``apply(rows, batch_id, stats)`` commits
    (``stats``: the follower's ``layer_stats``, for its progress line); ``apply``
    returns what the next layer takes (Silver: its new trades) or ``None``.
    """

    stops_between_batches = True  # stop() lets a batch running end first (streaming.stop_between_batches)

    def __init__(self, name: str, source: Path, output: Path, checkpoint: Path, trigger: str,
                 read: Callable[[list[tuple[Path, dict[str, str | None], int]]], pa.Table],
                 apply: Callable[[pa.Table, int, LayerStats], pa.Table | None], chain: Chain | None = None) -> None:
        self.name, self.source, self.output, self.checkpoint = name, Path(source), Path(output), Path(checkpoint)
        self.read, self.apply, self.chain = read, apply, chain
        kwargs = trigger_kwargs(trigger)
        self.available_now = bool(kwargs.get("availableNow") or kwargs.get("once"))
        self.poll_s = 0.25 if self.available_now else _seconds(kwargs["processingTime"])
        self.id, self.runId = self._ensure_metadata(), str(uuid.uuid4())
        self.layer_stats = LayerStats()
        self.helpers: list[threading.Thread] = []
        self.joined = False
        self.lastProgress: dict[str, Any] | None = None
        self.recentProgress: list[dict[str, Any]] = []  # the last 100 batches' progress, oldest first (as Spark's)
        self._state = self._load_state()
        self._known = int(self._state["done"])
        self._out_known = -1
        self._error: BaseException | None = None
        self._busy = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-follower", daemon=True)

    # -- StreamingQuery's face -------------------------------------------------------------------------
    def start(self) -> Follower:
        self._thread.start()
        return self

    @property
    def isActive(self) -> bool:  # noqa: N802
        return self._thread.is_alive()

    @property
    def status(self) -> dict[str, Any]:
        if not self.isActive:
            message = "Stopped"
        elif self.joined:
            message = f"Joined: runs in {'Bronze' if self.name == 'silver' else 'Silver'}'s batches"
        else:
            message = f"Following {self.source.name} (version {self._state['done']} done)"
        return {"message": message, "isDataAvailable": self._busy,
                "isTriggerActive": self._busy or "planned" in self._state}

    def exception(self) -> BaseException | None:
        return self._error

    def stop(self) -> None:
        self._stop.set()
        self.unjoin()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(60)

    def awaitTermination(self, timeout: float | None = None) -> bool:  # noqa: N802
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self) -> int:
        return int(self._state["done"])

    # -- joining the batches of the table before -------------------------------------------------------
    def unjoin(self) -> None:
        if self.chain is not None:
            with self.chain.lock:
                self.joined = False

    def _try_join(self) -> bool:
        """Join the upstream's batches if it runs here and this follower holds all of its versions."""
        if self.chain is None or self.available_now:
            return False
        with self.chain.lock:
            upstream = self.chain.upstream_of(self)
            if upstream is None:
                self.joined = False
            elif latest_version(self.source, self._known) == self.done:
                self.joined = True
            return self.joined

    def fused(self, rows: pa.Table, before: int, after: int) -> pa.Table | None:
        """A batch handed over by the upstream (under the chain's lock): its rows are the versions before..after."""
        if not self.joined or self._stop.is_set():
            return None
        if self.done != before:  # out of step (cannot happen while joined): catch up from the table instead
            self.joined = False
            return None
        try:
            return self._batch(before, after, rows, mode="fused")
        except BaseException as exc:  # this layer fails and shows why; the upstream goes on
            self._fail(exc)
            return None

    # -- the loop --------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if "planned" in self._state:  # a batch a crash cut short: the same versions again, the same id
                _, first, last = self._state["planned"]
                self._locked(lambda: self._batch(first, last, None, mode="replay"))
            target = latest_version(self.source, self._known) if self.available_now else None
            while not self._stop.is_set():
                if self.joined:
                    if self.chain is None or self.chain.upstream_of(self) is None:
                        self.unjoin()  # the upstream stopped here: follow its table again
                    self._stop.wait(self.poll_s)
                    continue
                latest = latest_version(self.source, self._known)
                self._known = latest
                if latest > self.done:
                    upto = self._chunk_end(latest if target is None else min(latest, target))
                    self._locked(lambda upto=upto: self._batch(self.done, upto, None, mode="follow"))
                    continue
                if target is not None and self.done >= target:
                    return
                if not self._try_join():
                    self._stop.wait(self.poll_s)
        except BaseException as exc:
            self._fail(exc)

    def _locked(self, fn: Callable[[], Any]) -> Any:
        if self.chain is None:
            return fn()
        with self.chain.lock:  # a batch of this layer and a fused batch never run at once
            return fn()

    def _chunk_end(self, latest: int) -> int:
        if log_pruned(self.source, self.done):
            return latest  # a snapshot of the table as it is, one batch
        size, upto = 0, self.done
        while upto < latest:
            size += sum(s for _, _, s in added_files(self.source, upto, upto + 1))
            upto += 1
            if size >= MAX_BYTES:
                break
        return upto

    def _batch(self, first: int, last: int, rows: pa.Table | None, mode: str) -> pa.Table | None:
        """Source versions first+1..last as one batch: planned, applied, done (see the module doc)."""
        t0 = time.perf_counter()
        self._busy = True
        try:
            files = None if rows is not None else snapshot_files(self.source, last) \
                if log_pruned(self.source, first) else added_files(self.source, first, last)
            if rows is None and not files:  # only compactions: nothing to do but move on
                self._save({"batch": self._state["batch"], "done": last})
                return None
            batch = self._state["planned"][0] if mode == "replay" else int(self._state["batch"]) + 1
            self._save({**self._state, "planned": [batch, first, last]})
            if rows is None:
                rows = self.read(files or [])
            before = self._out_known = latest_version(self.output, self._out_known) if self.chain is not None else -1
            out = self.apply(rows, batch, self.layer_stats)
            self._save({"batch": batch, "done": last})
            if self.chain is not None and out is not None:
                self._out_known = latest_version(self.output, before)
                self.chain.after(self, out, before, self._out_known)
            ms = round(1000 * (time.perf_counter() - t0))
            self.lastProgress = {
                "id": self.id, "runId": self.runId, "name": self.name, "batchId": batch,
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"), "numInputRows": rows.num_rows,
                "inputRowsPerSecond": 0.0, "processedRowsPerSecond": rows.num_rows / max(ms / 1000, 1e-3),
                "durationMs": {"triggerExecution": ms}, "mode": mode,
                "sources": [{"description": f"Delta {self.source}", "startOffset": first, "endOffset": last,
                             "numInputRows": rows.num_rows}]}
            self.recentProgress = [*self.recentProgress[-99:], self.lastProgress]
            return out
        finally:
            self._busy = False

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._stop.set()
        self.joined = False

    # -- the checkpoint folder -------------------------------------------------------------------------
    def _ensure_metadata(self) -> str:
        meta = self.checkpoint / "metadata"
        try:
            return json.loads(meta.read_text().splitlines()[0])["id"]
        except (OSError, ValueError, KeyError, IndexError):
            self.checkpoint.mkdir(parents=True, exist_ok=True)
            qid = str(uuid.uuid4())
            meta.write_text(json.dumps({"id": qid}) + "\n")  # as Spark writes it: app ids and checks read it
            return qid

    def _load_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.checkpoint / STATE).read_text())
        except OSError:
            pass
        except ValueError as exc:
            raise FollowerError(f"{self.checkpoint / STATE} is unreadable: {exc}") from None
        found = spark_processed(self.checkpoint)  # a layer an older release ran as a Spark query
        return {"batch": -1, "done": -1} if found is None else {"batch": found[0], "done": found[1]}

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.checkpoint / f".{STATE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.checkpoint / STATE)  # atomic: the old state or the new one, never half
        self._state = state


def _seconds(interval: str) -> float:
    from .streaming import parse_delay

    return max(0.05, parse_delay(interval).total_seconds())


# -- the layers of one data dir in this process ----------------------------------------------------------
class Chain:
    """Bronze's query, Silver's and Gold's followers of one data dir in this process, and the lock of their batches.

    Bronze's batch runs in :meth:`bronze_batch`; a follower's batch calls :meth:`after` once committed: the layer
    after it, if joined, takes the batch's rows at once.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.bronze: Any = None  # Bronze's StreamingQuery, when it runs here with the fused rows
        self.silver: Follower | None = None
        self.gold: Follower | None = None
        self._bronze_known = -1

    def upstream_of(self, follower: Follower) -> Any:
        up = self.bronze if follower is self.silver else self.silver if follower is self.gold else None
        return up if up is not None and up.isActive else None

    def bronze_batch(self, bronze: Path, rows: pa.Table, commit: Callable[[], Any]) -> None:
        """Bronze's micro-batch: ``commit()`` it, then hand its rows to Silver if Silver has joined."""
        with self.lock:
            before = self._bronze_known = latest_version(bronze, self._bronze_known)
            commit()
            after = self._bronze_known = latest_version(bronze, before)
            silver = self.silver
            if silver is not None and after > before:
                silver.fused(rows, before, after)

    def after(self, follower: Follower, out: pa.Table, before: int, after: int) -> None:
        if follower is self.silver and self.gold is not None and after > before:
            self.gold.fused(out, before, after)


_chains: dict[str, Chain] = {}
_chains_lock = threading.Lock()


def chain_for(bronze: Path) -> Chain:
    """The chain of the data dir whose Bronze table is ``bronze`` (one per process)."""
    with _chains_lock:
        return _chains.setdefault(str(Path(bronze).absolute()), Chain())


__all__ = ["Chain", "Follower", "FollowerError", "added_files", "chain_for", "latest_version", "processed_version"]
