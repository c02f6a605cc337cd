"""The seed's Gold, for comparison only: a windowed aggregation in append output mode behind a watermark.

``seed_bars`` is what the original design ran (``withWatermark("event_time", "2 minutes")``, a 1-minute
``window`` per symbol, ``outputMode("append")``): a bar is written once, after its minute plus the
watermark has passed in event time.  ``python -m lakehouse_utils.bench.seed`` runs it beside the real
pipeline (``run_demo``) on the same feed, writing ``<data>/gold_seed/bars_1m``, so the bench measures both
with the same reader.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from ..config import Settings
from ..layers.streaming import scheduler_pool, trigger_kwargs


def seed_bars(silver: DataFrame, watermark: str = "2 minutes") -> DataFrame:
    """Silver stream -> 1-minute bars per symbol, emitted once the watermark passes (the seed's Gold)."""
    w = F.window("event_time", "1 minute")
    return (silver.withWatermark("event_time", watermark).groupBy(w.alias("w"), "exchange", "symbol")
            .agg(F.min_by("price", "event_time").alias("open"), F.max("price").alias("high"),
                 F.min("price").alias("low"), F.max_by("price", "event_time").alias("close"),
                 F.sum("qty").alias("volume"), F.count(F.lit(1)).alias("trades"))
            .select("exchange", "symbol", F.col("w.start").alias("bar_start"), F.col("w.end").alias("bar_end"),
                    "open", "high", "low", "close", "volume", "trades", F.lit(True).alias("is_final"),
                    F.current_timestamp().alias("updated_at"), F.lit(0.0).alias("vwap"),
                    F.lit(0.0).alias("buy_volume"), F.lit(0.0).alias("sell_volume")))


def seed_gold_dir(settings: Settings) -> Path:
    return settings.data_dir / "gold_seed"


def start_seed_gold(spark: SparkSession, settings: Settings, trigger: str = "1 second") -> StreamingQuery:
    out = seed_gold_dir(settings) / "bars_1m"
    with scheduler_pool(spark, "seed_gold"):
        return (seed_bars(spark.readStream.format("delta").load(str(settings.silver)), "2 minutes")
                .writeStream.format("delta").outputMode("append").queryName("seed_gold")
                .option("checkpointLocation", str(settings.checkpoint("seed_gold")))
                .trigger(**trigger_kwargs(trigger)).start(str(out)))


def main(argv: list[str] | None = None) -> int:
    """``run_demo`` plus the seed's Gold query in the same process, on the same feed."""
    from ..ops.demo import run_demo

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--speed", default="1")
    ap.add_argument("--duration", type=float, required=True)
    args = ap.parse_args(argv)
    settings = Settings.from_env(data_dir=args.data_dir, bootstrap=args.bootstrap, topic=args.topic)
    run_demo(settings, speed=args.speed, start_broker=False, duration=args.duration, write_report=False,
             extra_queries={"seed_gold": start_seed_gold})
    return 0


if __name__ == "__main__":
    sys.exit(main())
