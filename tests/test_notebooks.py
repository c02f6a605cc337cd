"""The numbered notebooks, executed in order by papermill against the real broker and the bundled hour."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from deltalake import DeltaTable

from lakehouse_utils.broker import LocalKafka, end_offsets
from lakehouse_utils.notebooks import numbered, run_notebooks

pytestmark = pytest.mark.slow


def outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_notebooks_run_in_order_and_build_every_layer(kafka: LocalKafka, topic: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = run_notebooks(data, tmp_path / "executed", kafka.bootstrap, run_seconds=240,
                         parameters={"topic": topic, "alerts_topic": f"{topic}.alerts"})
    assert [p.name for p in done] == [p.name for p in numbered()]
    by_name = {p.name[:2]: outputs(p) for p in done}

    # 01: the hour on the topic, nothing in the DLQ, the peek shows the last messages
    assert end_offsets(kafka.bootstrap, topic) == {0: 2672}
    assert end_offsets(kafka.bootstrap, f"{topic}.dlq") == {0: 0}
    assert "[finished] replay: received=2672 sent=2672 delivered=2672 rejected=0" in by_name["01"]
    assert '"price":11014.3' in by_name["01"]
    assert f"0 message(s) shown from {topic}.dlq" in by_name["01"]

    # 02-04: each layer's verification cell and the tables themselves (read without a JVM)
    assert "topic end offsets: {0: 2672}" in by_name["02"]
    assert "2671 trades, 2671 distinct keys" in by_name["03"]
    assert "0 late trade(s)" in by_name["04"]
    assert len(DeltaTable(str(data / "bronze" / "crypto_trades")).to_pandas()) == 2672
    assert len(DeltaTable(str(data / "silver" / "trades")).to_pandas()) == 2671
    for tf, n in {"1m": 60, "5m": 12, "1h": 1}.items():
        bars = DeltaTable(str(data / "gold" / f"bars_{tf}")).to_pandas()
        assert len(bars) == n and bars["trades"].sum() == 2671
    hour = DeltaTable(str(data / "gold" / "bars_1h")).to_pandas().iloc[0]
    assert (hour.open, hour.close) == (10749.4, 11014.3)

    # 05: the live chart shows Gold; its HTML is self-contained (plotly.js embedded)
    assert "bars shown: 60" in by_name["05"]
    assert ("last bar: 2019-07-01 00:59 UTC open=10985.1 high=11041.8 low=10985.1 close=11014.3 (forming)"
            in by_name["05"])
    assert (data / "reports" / "candles_1m.html").stat().st_size > 1_000_000
    # 06: signals and alerts, written once to the Delta table and the topic
    assert "60 bars, 57 final" in by_name["06"]
    assert "1 alert(s) on final bars: {'volume_z': 1}" in by_name["06"]
    assert "1 new alert(s) written" in by_name["06"]
    assert f"alerts table: 1 rows; topic {topic}.alerts: 1 messages" in by_name["06"]
    assert end_offsets(kafka.bootstrap, f"{topic}.alerts") == {0: 1}
    alerts = DeltaTable(str(data / "gold" / "alerts")).to_pandas()
    assert alerts.alert_id.tolist() == ["BTC/USD|1m|2019-07-01T00:48:00Z|volume_z"]
