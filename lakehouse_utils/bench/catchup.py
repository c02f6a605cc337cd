"""Catch-up throughput: N synthetic trades already in Kafka -> Bronze -> Silver -> Gold, then checked.

``python -m lakehouse_utils.bench.catchup --data-dir D --bootstrap B [--n 1000000] [--flow pipeline|layers]
[--partitions 1] [--master URL]`` prints one JSON line.  The trades (3 symbols, keyed by symbol) are produced
first, to a new topic of ``--partitions`` partitions; then, with ``available-now`` (on ``--master``, a Spark
standalone cluster, if given):

- ``pipeline`` (as ``lakehouse demo`` and ``lakehouse pipeline`` catch up): the one query takes the topic
  in batches of ``per_trigger`` offsets through Bronze, Silver and Gold together;
- ``layers`` (as notebooks 02-04 or ``lakehouse bronze|silver|gold`` catch up): Bronze, Silver and Gold one
  after another in one Spark session, each reading what the previous one wrote.

The wall time of the whole catch-up is the figure.  Gold's 1-minute bars must then hold every trade once, and
``lakehouse check`` must pass on the tables (``check_s``: how long it took).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD"]


def run(data: Path, bootstrap: str, n: int, per_trigger: int = 250_000,
        flow: str = "pipeline", partitions: int = 1, master: str | None = None,
        silver_parse: str = "arrow", checked: bool = True) -> dict[str, Any]:
    from deltalake import DeltaTable

    from ..config import Settings
    from ..engine.spark import get_spark
    from ..kafka.producer import ProducerThread, TradeProducer, ensure_topics
    from ..layers.bronze import start_bronze
    from ..layers.gold import start_gold
    from ..layers.pipeline import start_pipeline
    from ..layers.silver import start_silver
    from ..layers.streaming import join_helpers
    from ..ops.check import check
    from ..sources.synthetic import SyntheticSource

    topic = f"bench.catchup.{uuid.uuid4().hex[:8]}.{partitions}p"  # a new topic each run, even two in one second
    settings = Settings(data_dir=data, bootstrap=bootstrap, topic=topic,
                        spark_ui=False, max_offsets_per_trigger=per_trigger, partitions=partitions,
                        spark_master=master or Settings().spark_master, silver_parse=silver_parse)
    ensure_topics(settings)
    thread = ProducerThread(SyntheticSource(PAIRS, rate=None, n_trades=n), TradeProducer.from_settings(settings))
    thread.start()
    thread.join()
    produced = thread.stop().delivered
    spark = get_spark(settings)
    layers: dict[str, float] = {}
    last_batch_ms: dict[str, int] = {}  # where a (full-size) batch's time went: Spark, then each table's commit
    t0 = time.monotonic()
    steps = (("pipeline", start_pipeline),) if flow == "pipeline" else \
        (("bronze", start_bronze), ("silver", start_silver), ("gold", start_gold))
    for name, start in steps:
        t = time.monotonic()
        query = start(spark, settings, trigger="available-now")
        query.awaitTermination()
        if query.exception() is not None:
            raise RuntimeError(f"{name}: {query.exception()}")
        join_helpers(query)
        stats = getattr(query, "layer_stats", {})
        last_batch_ms.update({f"{name}{k}": v for k, v in stats.items() if k.endswith("_ms")})
        layers[name] = time.monotonic() - t
    wall = time.monotonic() - t0
    in_gold = int(DeltaTable(str(settings.bars_table("1m"))).to_pandas(columns=["trades"])["trades"].sum())
    spark.stop()
    if in_gold != produced:
        raise AssertionError(f"Gold holds {in_gold} trades, {produced} were produced")
    out = {"catchup_trades_per_s": produced / wall, "trades": produced, "wall_s": wall, "flow": flow,
           "partitions": partitions, "silver_parse": silver_parse, **{f"{k}_s": v for k, v in layers.items()},
           "last_batch_ms": last_batch_ms}
    if not checked:  # the caller checks the tables itself (the bench's check measurement, in a process of its own)
        return out
    report = check(settings)  # what `lakehouse check` says of the caught-up tables, and how long it takes
    if not report.ok:
        raise AssertionError(report.summary())
    return out | {"bronze_partitions": {k: v["rows"] for k, v in report.facts["bronze_partitions"].items()},
                  "check_s": report.seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--flow", choices=["pipeline", "layers"], default="pipeline")
    ap.add_argument("--partitions", type=int, default=1, help="partitions of the trades topic (default 1)")
    ap.add_argument("--master", help="Spark master, e.g. spark://127.0.0.1:17077 (default local[*])")
    ap.add_argument("--silver-parse", choices=["arrow", "spark"], default="arrow",
                    help="Silver's parse: canonical rows in Arrow (default), or every row in Spark")
    ap.add_argument("--no-check", action="store_true", help="leave lakehouse check of the tables to the caller")
    args = ap.parse_args(argv)
    print(json.dumps(run(Path(args.data_dir), args.bootstrap, args.n, flow=args.flow, partitions=args.partitions,
                         master=args.master, silver_parse=args.silver_parse, checked=not args.no_check)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
