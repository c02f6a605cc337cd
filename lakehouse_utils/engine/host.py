"""The layer queries of one process, by name: start, find, stop, watch, and restart after a Kafka error.

A :class:`QueryHost` runs Bronze, Silver, Gold (or the one-query pipeline) in this process's Spark session, each
under a key made of its layer and its checkpoint (one query per checkpoint, as Spark allows).  Bronze runs with
Silver's parse in its Spark job, so Silver and Gold, once started here and caught up, join its batches
(``layers.follow``): a trade crosses the three layers in one micro-batch, and each layer still starts and stops
on its own.  The shared engine
(``engine.serve``) holds one for every kernel; a kernel with ``LAKEHOUSE_ENGINE=local`` holds its own.

- ``start`` returns the running query of that key if there is one (a second Start is not a second query);
- ``check`` (a watcher thread calls it every second) restarts a query that failed on a Kafka error from its
  checkpoint, at most three times, with a line saying so (as ``lakehouse demo`` does), and leaves any other
  failure to be shown;
- with a ``state`` file, the queries running with a processing-time trigger are written down, so an engine
  killed (``kill -9``) and started again resumes them from their checkpoints (secrets are not written: they come
  from the engine's environment again).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Settings
from ..layers import bronze, gold, pipeline, silver
from ..layers.follow import chain_for
from ..layers.jobs import explain_error, is_transient
from ..layers.streaming import AVAILABLE_NOW, join_helpers, stop_between_batches

log = logging.getLogger(__name__)

LAYERS: dict[str, tuple[Callable[..., Any], str]] = {
    "bronze": (bronze.start_bronze, bronze.CHECKPOINT),
    "silver": (silver.start_silver, silver.CHECKPOINT),
    "gold": (gold.start_gold, gold.CHECKPOINT),
    "pipeline": (pipeline.start_pipeline, pipeline.CHECKPOINT),
}
MAX_RESTARTS = 3


def warm_up_rows(spark: SparkSession) -> DataFrame:
    """One made-up Kafka row, built by the JVM alone.  Not ``createDataFrame`` of a Python list: that ships
    pickled rows to Python workers (a ``pyspark.daemon`` and a worker per core, ~150 MB the engine then keeps)."""
    value = ('{"exchange":"warm","symbol":"WARM/UP","trade_id":"0","price":1.0,"qty":1.0,"side":"buy",'
             '"event_time":"2020-01-01T00:00:00Z","ingest_time":"2020-01-01T00:00:00Z"}')
    return spark.range(1).select(*(F.expr(sql).alias(name) for name, sql in (
        ("key", "cast('WARM/UP' as binary)"), ("value", f"cast('{value}' as binary)"), ("topic", "'warm-up'"),
        ("partition", "0"), ("offset", "0L"), ("timestamp", "current_timestamp()"), ("timestampType", "1"),
        ("headers", "cast(array() as array<struct<key:string,value:binary>>)"))))


def warm_up(spark: SparkSession) -> float:
    """Run a micro-batch's transformation once on one made-up Kafka row (to Arrow, as a batch does): the classes,
    the JIT and the code generation a first batch needs are then ready when the first trade comes.  Returns s."""
    t0 = time.monotonic()
    pipeline.rows_for_layers(warm_up_rows(spark)).toArrow()
    return time.monotonic() - t0


def checkpoint_of(layer: str, settings: Settings, checkpoint: str | Path | None = None) -> Path:
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}: expected one of {', '.join(LAYERS)}")
    return Path(checkpoint or settings.checkpoint(LAYERS[layer][1])).absolute()


def key_of(layer: str, settings: Settings, checkpoint: str | Path | None = None) -> str:
    """A query's name in the host: its layer and its checkpoint."""
    return f"{layer}:{checkpoint_of(layer, settings, checkpoint)}"


@dataclass
class Hosted:
    """One query of the host, with what started it."""

    key: str
    layer: str
    settings: Settings
    trigger: str
    checkpoint: Path
    client: str
    options: dict[str, Any]
    query: Any = None
    started_at: float = field(default_factory=time.time)
    restarts: int = 0
    messages: list[str] = field(default_factory=list)
    stopped: bool = False  # stopped on purpose: the watcher does not restart it, even if it had failed

    @property
    def persistent(self) -> bool:
        """Resumed after an engine restart: a query meant to run on (not an available-now run)."""
        return self.trigger.strip().lower() not in (AVAILABLE_NOW, "availablenow", "available_now", "once")


class QueryHost:
    """The layer queries running in this process (see the module doc)."""

    def __init__(self, spark: SparkSession, state: str | Path | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.spark = spark
        self.state = Path(state) if state else None
        self.say = say
        self.hosted: dict[str, Hosted] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- queries ---------------------------------------------------------------------------------
    def start(self, layer: str, settings: Settings, trigger: str | None = None, *, client: str = "",
              checkpoint: str | Path | None = None, **options: Any) -> Hosted:
        """Start ``layer`` for ``settings`` (or return it if it runs); ``options`` go to the layer's starter."""
        ckpt = checkpoint_of(layer, settings, checkpoint)
        key = key_of(layer, settings, ckpt)
        with self._lock:
            hosted = self.hosted.get(key)
            if hosted is not None and hosted.query is not None and hosted.query.isActive:
                return hosted
            hosted = Hosted(key, layer, settings, trigger or settings.trigger, ckpt, client, dict(options))
            hosted.query = self._run(hosted)
            self.hosted[key] = hosted
            self._save()
            return hosted

    def _run(self, hosted: Hosted) -> Any:
        start, _ = LAYERS[hosted.layer]
        if hosted.layer != "bronze":
            return start(self.spark, hosted.settings, trigger=hosted.trigger, checkpoint=hosted.checkpoint,
                         **hosted.options)
        # Bronze with Silver's parse in the same Spark job: Silver and Gold, once they run here and have caught up,
        # take each batch as soon as Bronze committed it (follow.Chain), as lakehouse demo's one query does
        settings = hosted.settings
        chain = chain_for(settings.bronze)
        plan, parse = pipeline.layer_rows(self.spark, settings)
        query = start(self.spark, settings, trigger=hosted.trigger, checkpoint=hosted.checkpoint,
                      transform=plan, parse=parse,
                      on_batch=lambda rows, commit: chain.bronze_batch(settings.bronze, rows, commit), **hosted.options)
        with chain.lock:
            chain.bronze = query
        return query

    def find(self, key: str) -> Hosted | None:
        with self._lock:
            return self.hosted.get(key)

    def stop(self, key: str) -> Hosted | None:
        """Stop a query between batches (its checkpoint keeps its position); it is not resumed any more."""
        with self._lock:
            hosted = self.hosted.get(key)
        if hosted is None:
            return None
        with self._lock:
            hosted.stopped = True
        query = hosted.query
        if query is not None:
            stop_between_batches(query)
        with self._lock:
            self._save()
        return hosted

    def stop_all(self, forget: bool = True) -> None:
        """Stop every query; ``forget=False`` keeps them written down (resumed at the next start)."""
        keep = None if forget else self._entries()
        for key in list(self.hosted):
            self.stop(key)
        if keep is not None and self.state is not None:
            self._write(keep)

    def active(self) -> list[Hosted]:
        with self._lock:
            return [h for h in self.hosted.values() if h.query is not None and h.query.isActive]

    # -- watching --------------------------------------------------------------------------------
    def check(self) -> None:
        """Restart queries that failed on a Kafka error (from their checkpoints, at most MAX_RESTARTS times)."""
        with self._lock:
            failed = [h for h in self.hosted.values() if h.query is not None and not h.stopped
                      and not h.query.isActive and h.query.exception() is not None]
        for hosted in failed:
            text = str(hosted.query.exception())
            if explain_error(hosted.layer, text) is not None or not is_transient(text) \
                    or hosted.restarts >= MAX_RESTARTS:
                continue  # shown to whoever looks (the panel, `lakehouse engine status`)
            hosted.restarts += 1
            join_helpers(hosted.query)
            message = (f"{hosted.layer}: query failed on a Kafka error; restarting it from its checkpoint "
                       f"({hosted.restarts} of at most {MAX_RESTARTS})")
            hosted.messages.append(message)
            self.say(message)
            try:
                with self._lock:
                    if hosted.stopped or self.hosted.get(hosted.key) is not hosted:
                        continue  # stopped (or replaced) since it was seen failed: its owner is done with it
                    hosted.query = self._run(hosted)
            except Exception as exc:  # the broker may still be away: tried again on the next check
                hosted.messages.append(f"{hosted.layer}: restart failed: {exc}")

    def watch(self, interval: float = 1.0) -> None:
        """Call :meth:`check` every ``interval`` s on a daemon thread until :meth:`close`."""
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check()
                except Exception:  # never let the watcher die
                    log.exception("query watcher")

        self._watcher = threading.Thread(target=loop, name="query-host-watch", daemon=True)
        self._watcher.start()

    def close(self, forget: bool = True) -> None:
        self._stop.set()
        self.stop_all(forget=forget)

    # -- resuming after a crash ------------------------------------------------------------------
    def resume(self) -> list[Hosted]:
        """Start the queries the state file says were running (an engine killed and started again)."""
        if self.state is None or not self.state.exists():
            return []
        try:
            entries = json.loads(self.state.read_text())
        except ValueError:
            return []
        resumed = []
        for entry in entries:
            try:
                settings = _with_env_secrets(Settings.from_json(entry["settings"]))
                hosted = self.start(entry["layer"], settings, entry["trigger"], client=entry.get("client", ""),
                                    checkpoint=entry["checkpoint"], **entry.get("options", {}))
                hosted.messages.append(f"{entry['layer']}: resumed from its checkpoint after the engine restarted")
                resumed.append(hosted)
            except Exception as exc:
                self.say(f"{entry.get('layer')}: could not be resumed: {exc}")
        return resumed

    def _entries(self) -> list[dict[str, Any]]:
        return [{"layer": h.layer, "settings": h.settings.to_json(), "trigger": h.trigger,
                 "checkpoint": str(h.checkpoint), "client": h.client, "options": h.options}
                for h in self.hosted.values() if h.persistent and h.query is not None and h.query.isActive]

    def _save(self) -> None:
        if self.state is not None:
            self._write(self._entries())

    def _write(self, entries: list[dict[str, Any]]) -> None:
        assert self.state is not None
        tmp = self.state.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, self.state)


def _with_env_secrets(settings: Settings) -> Settings:
    """``settings`` with the passwords it lacks taken from this process's ``LAKEHOUSE_*`` environment."""
    env = Settings.from_env()
    secrets = {name: getattr(env, name) for name in ("kafka_sasl_password", "kafka_ssl_key_password")
               if getattr(settings, name) is None and getattr(env, name) is not None}
    return settings.with_(**secrets)


__all__ = ["LAYERS", "Hosted", "QueryHost", "checkpoint_of", "key_of", "warm_up"]
