"""Cross-venue arithmetic on tiny bar frames (layers/venues.py): premium, spread, volume share."""

from __future__ import annotations

import math

import pandas as pd

from lakehouse_utils.layers.venues import venue_spreads, venue_table, volume_shares

T0, T1 = pd.Timestamp("2026-01-01 00:00", tz="UTC"), pd.Timestamp("2026-01-01 00:01", tz="UTC")


def bars() -> pd.DataFrame:
    return pd.DataFrame([
        {"exchange": "kraken", "symbol": "BTC/USD", "bar_start": T0, "close": 100.0, "volume": 1.0},
        {"exchange": "coinbase", "symbol": "BTC/USD", "bar_start": T0, "close": 100.2, "volume": 3.0},
        {"exchange": "binance", "symbol": "BTC/USD", "bar_start": T0, "close": 99.9, "volume": 4.0},
        {"exchange": "kraken", "symbol": "BTC/USD", "bar_start": T1, "close": 101.0, "volume": 2.0},  # alone
    ])


def test_spread_is_highest_minus_lowest_close_over_their_mid_in_bp_and_a_lone_venue_has_none() -> None:
    s = venue_spreads(bars())
    assert len(s) == 1
    row = s.iloc[0]
    assert (row["high_exchange"], row["low_exchange"], row["venues"]) == ("coinbase", "binance", 3)
    assert math.isclose(row["spread_bp"], (100.2 - 99.9) / 100.05 * 10_000)
    assert venue_spreads(bars().iloc[3:]).empty and venue_spreads(bars().iloc[:0]).empty


def test_premium_is_against_the_median_close_and_shares_add_up_to_one() -> None:
    t = venue_table(bars())
    at0 = t[t["bar_start"] == T0].set_index("exchange")
    assert math.isclose(at0.loc["coinbase", "premium_bp"], (100.2 / 100.0 - 1) * 10_000)
    assert at0.loc["kraken", "premium_bp"] == 0.0
    assert math.isclose(at0["volume_share"].sum(), 1.0) and math.isclose(at0.loc["binance", "volume_share"], 0.5)
    assert math.isnan(t[t["bar_start"] == T1]["premium_bp"].iloc[0])
    shares = volume_shares(bars()).set_index("exchange")["share"]
    assert math.isclose(shares.sum(), 1.0) and math.isclose(shares["kraken"], 0.3)
