"""``lakehouse demo --venues kraken,coinbase,binance``: the real hour through the three venues' replay servers at
once (each in its own wire format); Gold holds each venue's bars, each equal to the bars computed here in pandas
from that venue's recording with the venue's taker-side rule, and ``lakehouse check`` passes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from deltalake import DeltaTable

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka import group
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.source_kinds import make_source
from lakehouse_utils.layers.gold_tables import bars_path
from lakehouse_utils.ops.check import check
from lakehouse_utils.ops.demo import run_demo
from lakehouse_utils.sources.recording import read_recording
from lakehouse_utils.sources.trades import Rejected, Trade, TradeSource
from lakehouse_utils.views.venues_view import final_venues

pytestmark = pytest.mark.slow
FRAMES = {"1m": "1min", "5m": "5min", "1h": "1h"}
VENUES = {"kraken": "BTC/USD", "coinbase": "BTC/USD", "binance": "BTC/USDT"}  # venue (= exchange) -> symbol
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def recorded_trades(venue: str, path: Path) -> pd.DataFrame:
    """id, time, price, qty, taker side of each print in a venue's recording, by that venue's documented rules."""
    rows = []
    for entry in read_recording(path):
        f = entry.get("frame") or {}
        if venue == "kraken" and f.get("channel") == "trade":  # side: the taker's
            rows += [(int(i["trade_id"]), pd.Timestamp(i["timestamp"]), i["price"], i["qty"], i["side"])
                     for i in f["data"]]
        elif venue == "coinbase" and f.get("type") == "match":  # side: the maker's
            rows.append((f["trade_id"], pd.Timestamp(f["time"]), float(f["price"]), float(f["size"]),
                         "buy" if f["side"] == "sell" else "sell"))
        elif venue == "binance" and f.get("data", {}).get("e") == "trade":  # m: the buyer was the maker
            d = f["data"]
            rows.append((d["t"], pd.Timestamp(EPOCH + timedelta(milliseconds=d["T"])), float(d["p"]), float(d["q"]),
                         "sell" if d["m"] else "buy"))
    return pd.DataFrame(rows, columns=["id", "t", "price", "qty", "side"]).drop_duplicates("id")


def expected_bars(trades: pd.DataFrame, freq: str) -> pd.DataFrame:
    t = trades.sort_values(["t", "id"]).assign(bar_start=lambda d: d["t"].dt.floor(freq),
                                               buy=lambda d: d["qty"].where(d["side"] == "buy", 0.0),
                                               sell=lambda d: d["qty"].where(d["side"] == "sell", 0.0))
    g = t.groupby("bar_start")
    return pd.DataFrame({"open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
                         "close": g["price"].last(), "volume": g["qty"].sum(), "trades": g.size(),
                         "buy_volume": g["buy"].sum(), "sell_volume": g["sell"].sum()})


class LateStart:
    """A venue's real source whose first trade comes ``seconds`` late (a venue slow to connect on a loaded machine)."""

    def __init__(self, source: TradeSource, seconds: float) -> None:
        self.source, self.seconds, self.stats = source, seconds, source.stats
        self.name = getattr(source, "name", None)

    def stream(self, stop: threading.Event) -> Iterator[Trade | Rejected]:
        stop.wait(self.seconds)
        yield from self.source.stream(stop)


def test_three_venues_demo_gold_per_venue_equals_bars_from_each_recording(kafka: LocalKafka, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def binance_starts_late(kind: str, pairs: list[str] | None, **kw: Any) -> tuple[Any, Any]:
        src, cleanup = make_source(kind, pairs, **kw)
        return (LateStart(src, 8.0) if kw.get("venue") == "binance" else src), cleanup

    # without the event clock, Gold's first batches take the other venues' whole hour and binance's trades are late
    monkeypatch.setattr(group, "make_source", binance_starts_late)
    settings = Settings(data_dir=tmp_path / "data", bootstrap=kafka.bootstrap, topic=f"venues.{uuid.uuid4().hex[:8]}",
                        spark_ui=False)
    result = run_demo(settings, venues="kraken,coinbase,binance", start_broker=False, until_drained=True)
    assert result.drained and result.topic_offsets == {0: 3 * 2672}
    # replays at speed max are kept together in event time (kafka/event_clock.py): no venue's trades are late, even
    # binance's, which start 8 s after the others'
    assert result.counts.late == 0
    assert result.counts.bars_by_exchange["1m"] == {"binance": 60, "coinbase": 60, "kraken": 60}
    assert sorted(result.recordings) == sorted(VENUES)
    report = (settings.reports / "summary.md").read_text()
    assert "| gold bars 1m coinbase | 60 |" in report and "| recording binance |" in report

    for tf, freq in FRAMES.items():
        gold = DeltaTable(str(bars_path(settings, tf))).to_pandas()
        gold["bar_start"] = pd.to_datetime(gold["bar_start"], utc=True)
        for venue, symbol in VENUES.items():
            want = expected_bars(recorded_trades(venue, Path(result.recordings[venue])), freq)
            got = gold[gold["exchange"] == venue].set_index("bar_start").sort_index()
            assert (got["symbol"] == symbol).all(), (venue, tf)
            assert list(got.index) == list(want.index), (venue, tf)
            for col in ("open", "high", "low", "close", "trades"):
                assert got[col].tolist() == want[col].tolist(), (venue, tf, col)
            for col in ("volume", "buy_volume", "sell_volume"):
                assert got[col].to_numpy() == pytest.approx(want[col].to_numpy(), rel=1e-9), (venue, tf, col)
    # the same hour: the venues' bars agree with each other too (the taker rules undo each venue's encoding)
    hour = DeltaTable(str(bars_path(settings, "1h"))).to_pandas().set_index("exchange")
    assert hour[["open", "close", "trades"]].nunique().tolist() == [1, 1, 1]
    # volumes are float sums over each venue's own batches (their order differs from venue to venue)
    assert hour["buy_volume"].to_numpy() == pytest.approx([hour["buy_volume"].iloc[0]] * 3, rel=1e-12)

    # the venues view on final bars: BTC/USD on kraken and coinbase (binance quotes BTC/USDT), the same prices and
    # volumes on both (the re-encoded hour), so every bar's spread is 0 bp and each venue has half the volume
    report = final_venues(settings, "BTC/USD", "1m")
    assert sorted(report.bars["exchange"].unique()) == ["coinbase", "kraken"] and len(report.spreads) >= 50
    assert (report.spreads["spread_bp"] == 0).all() and report.shares["share"].tolist() == pytest.approx([0.5, 0.5])
    assert final_venues(settings, "BTC/USDT", "1m").summary.startswith("BTC/USDT 1m: one venue only: binance (")

    verdict = check(settings)
    assert verdict.ok, verdict.summary()
    assert {k: g["missing"] for k, g in verdict.facts["trade_id_gaps"].items()} == {
        "binance BTC/USDT": 0, "coinbase BTC/USD": 0, "kraken BTC/USD": 0}
