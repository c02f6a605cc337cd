"""How long one live-chart refresh takes: ``python -m lakehouse_utils.bench.charts [--bars 500]``.

Builds a Gold-shaped ``bars_1m`` table of N synthetic bars with ``deltalake`` in a temp dir (written in
``--commits`` MERGE commits, like a streaming Gold, the last bars still forming), then times
``LiveCandles.refresh_once`` (bars and stored alerts read with deltalake + ``update_figure``) and its parts.
Also home of the small helpers the tests use to write Gold-shaped tables without Spark.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..views.charts import BAR_COLUMNS, TIMEFRAMES


def synthetic_bars(n: int, symbol: str = "BTC/USD", start: str = "2026-01-01T00:00:00Z", timeframe: str = "1m",
                   seed: int = 7, price: float = 50_000.0, forming: int = 2) -> pd.DataFrame:
    """``n`` Gold-shaped bars (a random walk), the last ``forming`` ones with ``is_final = false``."""
    rng = np.random.default_rng(seed)
    step = pd.Timedelta(seconds=TIMEFRAMES[timeframe])
    first = pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
    starts = pd.date_range(first, periods=n, freq=step)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.concatenate([[price], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.0008, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.0008, n))
    volume = rng.lognormal(0, 0.5, n)
    buy = volume * rng.uniform(0.3, 0.7, n)
    return gold_frame(pd.DataFrame({
        "symbol": symbol, "bar_start": starts, "open": open_, "high": high, "low": low, "close": close,
        "volume": volume, "vwap": (open_ + close + high + low) / 4, "trades": rng.integers(1, 50, n),
        "buy_volume": buy, "sell_volume": volume - buy, "is_final": np.arange(n) < n - forming,
    }), timeframe)


def gold_frame(bars: pd.DataFrame, timeframe: str = "1m") -> pd.DataFrame:
    """Fill bar_end / updated_at / bar_date and order the columns like Gold (times UTC, microseconds)."""
    df = bars.copy()
    if "exchange" not in df:
        df["exchange"] = "kraken"
    df["bar_start"] = pd.to_datetime(df["bar_start"], utc=True).astype("datetime64[us, UTC]")
    if "bar_end" not in df:
        df["bar_end"] = df["bar_start"] + pd.Timedelta(seconds=TIMEFRAMES[timeframe])
    if "updated_at" not in df:
        df["updated_at"] = pd.Timestamp.now(tz="UTC")
    for c in ("bar_end", "updated_at"):
        df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[us, UTC]")
    df["trades"] = df["trades"].astype("int64")
    df["is_final"] = df["is_final"].astype(bool)
    df["bar_date"] = df["bar_start"].dt.date
    return df[[*BAR_COLUMNS, "bar_date"]].reset_index(drop=True)


def write_gold_bars(path: str | Path, bars: pd.DataFrame, timeframe: str = "1m") -> None:
    """Upsert bars into a Gold-shaped Delta table on (exchange, symbol, bar_start), creating it (partitioned
    by is_final like Gold) if needed: one commit, like one Gold micro-batch."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    data = pa.Table.from_pandas(gold_frame(bars, timeframe), preserve_index=False)
    if not (Path(path) / "_delta_log").is_dir():
        write_deltalake(str(path), data, mode="append", partition_by=["is_final"])
        return
    (DeltaTable(str(path)).merge(data, predicate="t.exchange = s.exchange AND t.symbol = s.symbol "
                                                 "AND t.bar_start = s.bar_start",
                                 source_alias="s", target_alias="t")
     .when_matched_update_all().when_not_matched_insert_all().execute())
    from ..layers.delta_io import compact

    compact(path, partition_filters=[("is_final", "=", "true")])  # as Gold keeps its final bars


def bench(n_bars: int = 500, commits: int = 20, repeats: int = 10, window: int | None = None) -> dict[str, float]:
    """Median seconds of one refresh and of its parts for an ``n_bars`` table (all bars shown)."""
    from ..config import Settings
    from ..views import analytics, charts
    from ..views.live import LiveCandles

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        bars = synthetic_bars(n_bars)
        path = charts.table_path(settings, "1m")
        for chunk in np.array_split(np.arange(n_bars), max(1, commits)):
            write_gold_bars(path, bars.iloc[chunk])
        # the alerts Gold would have raised on them (the chart reads them: it computes none)
        analytics.write_alerts(analytics.detect_alerts(analytics.add_signals(bars), timeframe="1m"), settings,
                               publish=False)
        live = LiveCandles(settings, window=window or n_bars, refresh=3600, autostart=False)
        try:
            parts: dict[str, list[float]] = {"refresh_once": [], "read_bars": [], "read_alerts": [],
                                             "update_figure": []}
            for _ in range(repeats):
                t0 = time.perf_counter()
                shown = live.refresh_once()
                parts["refresh_once"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                b = charts.read_bars(settings, "1m", "BTC/USD", window=live.window)
                t1 = time.perf_counter()
                a = analytics.read_alerts(settings, "BTC/USD", "1m", since=b["bar_start"].iloc[0])
                t2 = time.perf_counter()
                charts.update_figure(live.figure, b, a)
                t3 = time.perf_counter()
                parts["read_bars"].append(t1 - t0)
                parts["read_alerts"].append(t2 - t1)
                parts["update_figure"].append(t3 - t2)
            assert shown == min(n_bars, live.window), shown
        finally:
            live.close()
    return {k: statistics.median(v) for k, v in parts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bars", type=int, default=500)
    ap.add_argument("--commits", type=int, default=20, help="Delta commits the table is written in")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    result = bench(args.bars, args.commits, args.repeats)
    print(f"live chart refresh, {args.bars} bars ({args.commits} commits), median of {args.repeats}:")
    for k, v in result.items():
        print(f"  {k:<15} {1000 * v:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
