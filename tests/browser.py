"""What the browser tests share beyond :mod:`lakehouse_utils.bench.browser`: artifacts and Gold read apart.

Screenshots and the servers' logs go to ``data/executed/`` of the repository, kept after a failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lakehouse_utils.bench.browser import (  # noqa: F401  (what the browser tests use, in one place)
    VENV_BIN,
    Lab,
    Server,
    allow_root,
    browser_page,
    chart_candles,
    chromium_path,
    jupyter_lab,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "data" / "executed"


def keep_artifacts(*paths: Path) -> None:
    """Copy logs next to the screenshots (``data/executed``) for diagnosis."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p.exists():
            shutil.copy(p, ARTIFACTS / p.name)


def _utc_naive(x: object) -> Any:
    import pandas as pd

    ts = pd.Timestamp(x)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def gold_bars(data: Path, symbol: str, timeframe: str = "1m") -> dict[Any, tuple]:
    """Gold's bars of ``symbol`` read without Spark: {bar_start (naive UTC): (open, high, low, close, is_final)}."""
    from deltalake import DeltaTable

    path = data / "gold" / f"bars_{timeframe}"
    if not (path / "_delta_log").is_dir():
        return {}
    df = DeltaTable(str(path)).to_pandas()
    df = df[df["symbol"] == symbol]
    return {_utc_naive(r.bar_start): (r.open, r.high, r.low, r.close, bool(r.is_final)) for r in df.itertuples()}


def shown_bars(candles: dict[str, Any]) -> dict[Any, tuple]:
    """The chart's candles keyed like :func:`gold_bars`: {bar_start: (open, high, low, close)}."""
    return {_utc_naive(x): v for x, v in candles["bars"].items()}
