"""Missing trade ids: counted per (exchange, symbol) as a source follows them, shown in the producer status and the
ingest summary, and found again in Silver by ``lakehouse check``."""

from __future__ import annotations

import pandas as pd

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.producer import ProducerThread, TradeProducer
from lakehouse_utils.kafka.topics import end_offsets
from lakehouse_utils.ops.ingest import summary
from lakehouse_utils.ops.reconcile import trade_id_gaps
from lakehouse_utils.sources.binance import BinanceSource
from lakehouse_utils.sources.binance_replay import BinanceReplayServer
from lakehouse_utils.sources.gaps import MAX_RANGES, IdGaps, id_ranges, show_ranges
from lakehouse_utils.sources.reencode import BINANCE_ID_BASE
from lakehouse_utils.sources.trades import source_stats


def follow(ids: list[str | int], *, snapshot: list[bool] | None = None, exchange: str = "kraken",
           symbol: str = "BTC/USD") -> tuple[IdGaps, list[bool]]:
    stats = source_stats()
    gaps = IdGaps(stats)
    news = [gaps.see(exchange, symbol, str(i), snapshot=bool(snapshot and snapshot[n])) for n, i in enumerate(ids)]
    return gaps, news


def test_consecutive_ids_leave_no_gap() -> None:
    gaps, news = follow(range(1, 101))
    assert all(news) and gaps.stats["missing_ids"] == 0 and gaps.stats["gaps"] == {}


def test_skipped_ids_are_counted_with_their_ranges_per_symbol() -> None:
    stats = source_stats()
    gaps = IdGaps(stats)
    for i in (1, 2, 5, 6, 10):
        gaps.see("binance", "BTC/USDT", str(i))
    for i in (7, 8, 9):  # another symbol numbers its own trades
        gaps.see("binance", "ETH/USDT", str(i))
    assert stats["missing_ids"] == 2 + 3
    assert stats["gaps"] == {"binance BTC/USDT": [(3, 4), (7, 9)]}


def test_a_snapshot_resending_old_ids_is_no_gap_and_a_late_id_fills_its_gap() -> None:
    gaps, news = follow([1, 2, 3, 4, 2, 3, 4, 5], snapshot=[False] * 4 + [True] * 3 + [False])
    assert news == [True] * 4 + [False] * 3 + [True]
    assert gaps.stats["snapshot_repeats"] == 3 and gaps.stats["missing_ids"] == 0
    gaps, news = follow([1, 2, 6, 4, 3, 5])  # 3..5 arrive late, out of order: each fills its place
    assert news == [True] * 6 and gaps.stats["missing_ids"] == 0 and gaps.stats["gaps"] == {}
    gaps, _ = follow([1, 2, 9, 5])
    assert gaps.stats["missing_ids"] == 5 and gaps.stats["gaps"] == {"kraken BTC/USD": [(3, 4), (6, 8)]}
    gaps, news = follow([1, 2, 2])  # a repeat outside a snapshot (the hour prints one trade twice): not counted
    assert news == [True, True, False] and gaps.stats["snapshot_repeats"] == 0


def test_only_consecutive_numeric_ids_are_followed() -> None:
    gaps, news = follow(["a1", "7", "9"], exchange="synthetic")
    assert all(news) and gaps.stats["missing_ids"] == 0
    gaps, news = follow(["1", "uuid-x", "3", "²"])
    assert gaps.stats["missing_ids"] == 1  # "uuid-x" and "²" are not counters


def test_ranges_are_bounded_the_count_is_not() -> None:
    gaps, _ = follow(range(1, 4 * (MAX_RANGES + 10), 4))
    assert gaps.stats["missing_ids"] == 3 * (MAX_RANGES + 9)
    ranges = gaps.stats["gaps"]["kraken BTC/USD"]
    assert len(ranges) == MAX_RANGES and ranges[-1] == (4 * (MAX_RANGES + 9) - 2, 4 * (MAX_RANGES + 9))


def test_id_ranges_and_their_text() -> None:
    assert id_ranges([5, 1, 2, 2, 9]) == [(3, 4), (6, 8)]
    assert id_ranges([]) == [] and id_ranges([3]) == []
    assert show_ranges([(3, 4), (6, 6), (8, 9), (12, 20)], 2) == "3..4, 6 +2 more"


def test_check_finds_the_missing_ids_in_silver() -> None:
    silver = pd.DataFrame({
        "exchange": ["kraken"] * 5 + ["binance"] * 3 + ["synthetic"] * 2 + ["bybit"],
        "symbol": ["BTC/USD"] * 5 + ["BTC/USDT"] * 3 + ["ETH/USD"] * 2 + ["BTC/USDT"],
        "trade_id": ["1", "2", "3", "7", "8", "100", "101", "102", "1", "9", "uuid"],
    })
    assert trade_id_gaps(silver) == {
        "binance BTC/USDT": {"first": 100, "last": 102, "missing": 0, "ranges": 0, "examples": ""},
        "kraken BTC/USD": {"first": 1, "last": 8, "missing": 3, "ranges": 1, "examples": "4..6"},
    }


def test_producer_status_and_ingest_summary_show_the_missing_ids(settings: Settings, kafka: LocalKafka) -> None:
    with BinanceReplayServer(drop_after=500, skip_on_drop=7, close_when_done=True) as server:
        source = BinanceSource(["BTC/USDT"], server.url, backoff_initial=0.05, end_on_close=True)
        thread = ProducerThread(source, TradeProducer.from_settings(settings), name="replay:binance")
        thread.start()
        assert thread.join(60)
    status = thread.status()
    assert status.ok and status.delivered == 2672 - 7 == end_offsets(kafka.bootstrap, settings.topic)[0]
    first, last = BINANCE_ID_BASE + 501, BINANCE_ID_BASE + 507
    assert status.missing_ids == 7 and status.gaps == {"binance BTC/USDT": [(first, last)]}
    assert f"missing_ids=7 (binance BTC/USDT {first}..{last})" in status.line()
    text = summary(status)
    assert f"  missing ids              7  (binance BTC/USDT {first}..{last})" in text
    assert "  reconnects               1" in text and "  snapshot trades          0" in text
