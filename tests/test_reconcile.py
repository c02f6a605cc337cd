"""``lakehouse check``'s comparisons in slices (issue 22: bounded memory) give what they give on whole frames.

Offsets and ids are kept as runs (:class:`Runs`), Gold's expected bars are built in pieces
(:func:`partial_bars`, :func:`merge_partials`): both are checked here against plain numpy and pandas on random
data cut into random slices, in a random order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lakehouse_utils.ops.reconcile import Finding, Runs, merge_findings
from lakehouse_utils.ops.reconcile_gold import BAR_COLUMNS, expected_bars, merge_partials, partial_bars


def _slices(n: int, rng: np.random.Generator, parts: int) -> list[np.ndarray]:
    order = rng.permutation(n)
    return np.array_split(order, np.sort(rng.choice(np.arange(1, n), parts - 1, replace=False)))


@pytest.mark.parametrize("seed", range(20))
def test_runs_of_sliced_offsets_count_what_the_whole_array_holds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kept = np.sort(rng.choice(np.arange(5_000), 3_000, replace=False))  # gaps
    offsets = np.concatenate([kept, rng.choice(kept, 200)])  # some stored twice (or more)
    runs = Runs()
    for part in _slices(len(offsets), rng, 7):
        runs.add(offsets[part])
    u = np.unique(offsets)
    assert runs.rows == len(offsets)
    assert runs.doubled == len(offsets) - len(u)
    assert (runs.first, runs.last) == (int(u[0]), int(u[-1]))
    missing = sorted(set(range(u[0], u[-1] + 1)) - set(u.tolist()))
    assert sum(b - a + 1 for a, b in runs.missing()) == len(missing)
    assert runs.missing()[0][0] == missing[0]
    doubled = np.sort(offsets)[1:][np.sort(offsets)[1:] == np.sort(offsets)[:-1]]
    assert runs.doubled_examples == sorted(doubled.tolist())[:5]


def test_runs_of_one_range_and_of_nothing() -> None:
    runs = Runs()
    runs.add(np.array([], dtype=np.int64))
    assert runs.runs == [] and runs.rows == 0
    runs.add(np.arange(10, 20))
    runs.add(np.arange(0, 10))
    assert runs.runs == [(0, 19)] and runs.missing() == [] and runs.doubled == 0
    runs.add(np.arange(15, 25))
    assert runs.runs == [(0, 24)] and runs.doubled == 5 and runs.doubled_examples == [15, 16, 17, 18, 19]


def _trades(n: int, rng: np.random.Generator) -> pd.DataFrame:
    t0 = pd.Timestamp("2019-07-01", tz="UTC")
    return pd.DataFrame({
        "exchange": rng.choice(["kraken", "coinbase"], n), "symbol": rng.choice(["BTC/USD", "ETH/USD"], n),
        "trade_id": rng.permutation(np.arange(1, n + 1)).astype(str),
        "price": rng.uniform(100, 200, n).round(2), "qty": rng.uniform(0, 1, n).round(6),
        "side": rng.choice(["buy", "sell"], n),
        # many trades share a microsecond: open and close are then decided by (len(trade_id), trade_id)
        "event_time": t0 + pd.to_timedelta(rng.integers(0, 3 * 3_600, n) // 7 * 7, unit="s")})


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("tf", ["1m", "5m", "1h"])
def test_bars_built_in_slices_equal_the_bars_of_all_trades(seed: int, tf: str) -> None:
    rng = np.random.default_rng(seed)
    trades = _trades(4_000, rng)
    whole = expected_bars(trades, tf)
    pieces: pd.DataFrame | None = None
    for part in _slices(len(trades), rng, 9):
        pieces = merge_partials([pieces, partial_bars(trades.iloc[part], tf)])
    sliced = merge_partials([pieces])[BAR_COLUMNS]
    assert len(sliced) == len(whole) > 3
    exact = ["exchange", "symbol", "bar_start", "open", "high", "low", "close", "trades"]
    pd.testing.assert_frame_equal(sliced[exact].reset_index(drop=True), whole[exact].reset_index(drop=True))
    for c in ("volume", "buy_volume", "sell_volume"):
        assert np.allclose(sliced[c], whole[c], rtol=1e-12)


def test_findings_of_slices_are_one_per_kind_with_the_first_examples() -> None:
    merged = merge_findings([Finding("silver", "a", 2, ["x", "y"]), Finding("gold", "b", 1, ["z"]),
                             Finding("silver", "a", 3, ["u", "v", "w"])], n=3)
    assert [(f.table, f.kind, f.count, f.examples) for f in merged] == [("silver", "a", 5, ["x", "y", "u"]),
                                                                          ("gold", "b", 1, ["z"])]
