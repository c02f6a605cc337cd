"""Gold's write path: exact bar algebra, restarts and partial crashes, finality when the feed goes quiet."""

from __future__ import annotations

import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import Row

from lakehouse_utils.config import TIMEFRAMES, Settings
from lakehouse_utils.layers import gold, silver
from lakehouse_utils.layers.bars import US, Bar, fold_all, roll_up
from lakehouse_utils.layers.gold_tables import bars_path, late_path
from lakehouse_utils.layers.gold_writer import GoldWriter

T = datetime(2019, 7, 1, 0, 0, 0)


def trade_bar(i: int, price: float, qty: float, t_us: int, seconds: int, side: str = "buy") -> Bar:
    step = seconds * US
    tid = str(i)
    return Bar("kraken", "BTC/USD", t_us - t_us % step, seconds, price, price, price, price, qty, price * qty, 1,
               qty if side == "buy" else 0.0, qty if side == "sell" else 0.0, (t_us, len(tid), tid),
               (t_us, len(tid), tid))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_folding_fragments_in_any_order_and_grouping_gives_the_direct_bar(seed: int) -> None:
    rng = random.Random(seed)
    trades = [(i, round(rng.uniform(90, 110), 2), round(rng.uniform(0.01, 2), 4),
               int((rng.uniform(0, 3 * 3600)) * US), rng.choice(["buy", "sell"])) for i in range(400)]
    for tf in ("5m", "1h"):
        seconds = TIMEFRAMES[tf]
        direct = fold_all(trade_bar(i, p, q, t, seconds, s) for i, p, q, t, s in sorted(trades, key=lambda x: x[3]))
        minutes = list(fold_all(trade_bar(i, p, q, t, 60, s) for i, p, q, t, s in trades).values())
        rng.shuffle(minutes)
        chunks = [minutes[i::3] for i in range(3)]  # three "batches" folded one after another
        state: dict = {}
        for chunk in chunks:
            state = fold_all(roll_up(chunk, seconds).values(), state)
        assert state.keys() == direct.keys()
        for k, b in direct.items():
            s = state[k]
            assert (s.open, s.high, s.low, s.close, s.trades, s.first, s.last) == \
                (b.open, b.high, b.low, b.close, b.trades, b.first, b.last)
            assert s.volume == pytest.approx(b.volume, rel=1e-12) and s.vwap == pytest.approx(b.vwap, rel=1e-12)


def silver_rows(spark, trades: list[tuple[str, float, float, datetime]]):
    rows = [Row(exchange="kraken", symbol="BTC/USD", trade_id=i, price=p, qty=q, side="buy" if n % 2 else "sell",
                ord_type=None, event_time=t, ingest_time=t, topic="t", partition=0, offset=n, event_date=t.date(),
                venue_symbol="BTC/USD")
            for n, (i, p, q, t) in enumerate(trades)]
    return spark.createDataFrame(rows, silver.SILVER_SCHEMA)


def table(spark, settings: Settings, tf: str) -> dict:
    rows = spark.read.format("delta").load(str(bars_path(settings, tf))).collect()
    keys = [(r.exchange, r.symbol, r.bar_start) for r in rows]
    assert len(keys) == len(set(keys)), f"{tf}: a bar is in the table twice"
    return {r.bar_start: (r.open, r.high, r.low, r.close, r.trades, round(r.volume, 9), r.is_final) for r in rows}


def batches(spark) -> list:
    rng = random.Random(5)
    out, n = [], 0
    for b in range(4):  # four batches moving through 00:00 .. 00:12, each a little out of order
        trades = []
        for _ in range(30):
            t = T + timedelta(seconds=b * 180 + rng.uniform(0, 200))
            trades.append((str(n), round(rng.uniform(99, 101), 1), round(rng.uniform(0.1, 1), 3), t))
            n += 1
        out.append(silver_rows(spark, trades))
    return out


def test_a_restart_and_a_crash_between_tables_give_the_same_gold(spark, tmp_path: Path) -> None:
    data = batches(spark)
    ref = Settings(data_dir=tmp_path / "ref", watermark="1 minute")
    gold.ensure_tables(spark, ref)
    w = GoldWriter(spark, ref, "g", ref.checkpoint(gold.CHECKPOINT))
    for i, b in enumerate(data):
        w.process(b, i)
    expected = {tf: table(spark, ref, tf) for tf in TIMEFRAMES}
    assert any(v[-1] for v in expected["1m"].values()) and not all(v[-1] for v in expected["1m"].values())

    s = Settings(data_dir=tmp_path / "crash", watermark="1 minute")
    gold.ensure_tables(spark, s)
    chk = s.checkpoint(gold.CHECKPOINT)
    first = GoldWriter(spark, s, "g", chk)
    first.process(data[0], 0)
    first.process(data[1], 1)
    saved = {tf: tmp_path / f"saved_{tf}" for tf in ("5m", "1h")}
    for tf, p in saved.items():
        shutil.copytree(bars_path(s, tf), p)
    first.process(data[2], 2)
    for tf, p in saved.items():  # as if the process died after bars_1m committed batch 2, before 5m and 1h
        shutil.rmtree(bars_path(s, tf))
        shutil.copytree(p, bars_path(s, tf))
    second = GoldWriter(spark, s, "g", chk)  # a new process: state from the tables and the decision log
    assert second.applied == {"1m": 2, "5m": 1, "1h": 1}
    second.process(data[2], 2)  # Spark replays the batch it had not committed
    second.process(data[2], 2)  # and a replay in the same process changes nothing
    second.process(data[3], 3)
    assert {tf: table(spark, s, tf) for tf in TIMEFRAMES} == expected


def test_bars_turn_final_when_the_feed_goes_quiet_and_later_trades_are_late(spark, tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, watermark="30 seconds")
    gold.ensure_tables(spark, s)
    w = GoldWriter(spark, s, "g", s.checkpoint(gold.CHECKPOINT))
    w.process(silver_rows(spark, [("1", 100.0, 1.0, T + timedelta(seconds=10)),
                                  ("2", 101.0, 1.0, T + timedelta(minutes=1, seconds=40))]), 0)
    m = table(spark, s, "1m")
    assert m[T][-1] is True and m[T + timedelta(minutes=1)][-1] is False  # wm = 00:01:10
    now = [w.clock()]
    w.clock = lambda: now[0]  # the wall clock, moved by hand (Spark and Delta stay real)
    w.last_arrival = now[0]
    assert w.finalize_idle(idle_after_s=10) == 0  # just arrived: not idle
    now[0] += 15  # quiet for 15 s: wm = 00:01:40 + 15 s - 30 s, still before the bar's end
    assert w.finalize_idle(idle_after_s=10) == 0
    now[0] += 30  # quiet for 45 s: wm = 00:01:40 + 45 s - 30 s = 00:01:55 ... not yet 00:02
    assert w.finalize_idle(idle_after_s=10) == 0
    now[0] += 10  # 55 s: wm = 00:02:05 passes the 00:01 bar's end (00:02): it turns final
    assert w.finalize_idle(idle_after_s=10) == 1
    m = table(spark, s, "1m")
    assert m[T + timedelta(minutes=1)] == (101.0, 101.0, 101.0, 101.0, 1, 1.0, True)
    assert table(spark, s, "5m")[T][-1] is False  # 00:00-00:05 is not over in event time
    # a trade for the finalized minute arrives after all: late, counted apart, the final bar stays as it was
    fresh = GoldWriter(spark, s, "g", s.checkpoint(gold.CHECKPOINT))  # and the watermark survives a restart
    assert fresh.watermark == w.watermark
    fresh.process(silver_rows(spark, [("3", 500.0, 1.0, T + timedelta(minutes=1, seconds=50)),
                                      ("4", 102.0, 1.0, T + timedelta(minutes=2, seconds=30))]), 1)
    m = table(spark, s, "1m")
    assert m[T + timedelta(minutes=1)] == (101.0, 101.0, 101.0, 101.0, 1, 1.0, True)
    assert m[T + timedelta(minutes=2)][4] == 1
    late = spark.read.format("delta").load(str(late_path(s))).collect()
    assert [r.trade_id for r in late] == ["3"]
