"""``lakehouse check`` on a copy of the bundled hour's tables: intact it passes; each kind of damage is named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse_utils.config import Settings
from lakehouse_utils.ops import check_scan
from lakehouse_utils.ops.check import check

pytestmark = pytest.mark.slow  # the session's hour fixture runs the demo once (shared with other tests)


def _copy(hour, tmp_path: Path) -> Settings:
    settings, _ = hour
    data = tmp_path / "data"
    for part in ("bronze", "silver", "gold"):
        shutil.copytree(settings.data_dir / part, data / part)
    return settings.with_(data_dir=data)


@pytest.fixture(params=["whole", "sliced"])
def slices(request, monkeypatch) -> str:
    """``sliced``: check reads Silver 300 rows a batch and compares it with Bronze in slices of 400 offsets, so
    the hour's 2,672 messages cross every boundary (a later copy and its first message in different slices)."""
    if request.param == "sliced":
        monkeypatch.setattr(check_scan, "SLICE_ROWS", 400)
        monkeypatch.setattr(check_scan, "BATCH_ROWS", 300)
    return request.param


def _kinds(report) -> set[tuple[str, str]]:
    return {(f.table, f.kind.split(" in ")[0]) for f in report.findings}


def test_the_hour_reconciles(hour, tmp_path: Path, slices: str) -> None:
    settings = _copy(hour, tmp_path)
    steps: list[str] = []
    report = check(settings, progress=steps.append)
    assert ("checking Silver and quarantine against Bronze: slice 7/7" in steps) == (slices == "sliced")
    assert report.ok, report.summary()
    f = report.facts
    bronze = DeltaTable(str(settings.bronze)).to_pandas()
    assert f["bronze_rows"] == len(bronze) == f["silver_rows"] + f["duplicates"] + f["quarantine_rows"]
    (part,) = f["bronze_partitions"].values()
    assert part["first"] == 0 and part["last"] == len(bronze) - 1
    assert part["lag"] == 0  # the broker is up and Bronze has read the whole topic
    gold = DeltaTable(str(settings.bars_table("1m"))).to_pandas()
    assert f["gold"]["1m"]["bars"] == len(gold) and f["gold"]["1m"]["final"] == int(gold["is_final"].sum())
    assert "OK: Bronze, Silver, quarantine and Gold agree." in report.summary()
    assert report.seconds < 30


def _gold_bar(settings: Settings, tf: str, i: int) -> str:
    g = DeltaTable(str(settings.bars_table(tf))).to_pandas().sort_values("bar_start")
    return g.iloc[i].bar_start.isoformat()


def _bronze_row_removed(s: Settings) -> None:
    DeltaTable(str(s.bronze)).delete("\"offset\" = 100")


def _silver_row_removed(s: Settings) -> None:
    DeltaTable(str(s.silver)).delete("\"offset\" = 200")


def _silver_row_doubled(s: Settings) -> None:
    one = DeltaTable(str(s.silver)).to_pyarrow_dataset().to_table(filter=pa.compute.field("offset") == 300)
    write_deltalake(str(s.silver), one, mode="append")


def _gold_volume_changed(s: Settings) -> None:
    DeltaTable(str(s.bars_table("1m"))).update(updates={"volume": "volume + 1.5"},
                                               predicate=f"bar_start = '{_gold_bar(s, '1m', 10)}'")


def _gold_bar_removed(s: Settings) -> None:
    DeltaTable(str(s.bars_table("5m"))).delete(f"bar_start = '{_gold_bar(s, '5m', 2)}'")


# Gold's expected bars come from Silver: a Silver trade removed or doubled also shows in the bars it is in
_KNOCK_ON = {(f"gold/bars_{tf}", f"{c} differs") for tf in ("1m", "5m", "1h")
             for c in ("trades", "open", "high", "low", "close", "volume", "buy_volume", "sell_volume")}


@pytest.mark.parametrize(("damage", "named", "example", "also"), [
    (_bronze_row_removed, [("bronze", "offsets missing", 1), ("silver", "row with no Bronze message", 1)],
     "100..100", set()),
    (_silver_row_removed, [("silver", "valid trade missing (in neither Silver nor quarantine)", 1)],
     "offset=200", _KNOCK_ON),
    (_silver_row_doubled, [("silver", "trade held more than once", 1)], "offset=300", _KNOCK_ON),
    (_gold_volume_changed, [("gold/bars_1m", "volume differs", 1)], "volume=", set()),
    (_gold_bar_removed, [("gold/bars_5m", "bar missing", 1)], "kraken BTC/USD 2019-07-01 00:10", set()),
], ids=lambda v: getattr(v, "__name__", None))
def test_each_kind_of_damage_is_named(hour, tmp_path: Path, damage, named, example, also, slices: str) -> None:
    settings = _copy(hour, tmp_path)
    damage(settings)
    report = check(settings, examples=3)
    assert not report.ok
    found = {(f.table, f.kind.split(" in ")[0]): f for f in report.findings}
    for table, kind, count in named:
        assert found[(table, kind)].count == count, report.summary()
    assert example in found[named[0][:2]].examples[0], report.summary()
    assert set(found) <= {n[:2] for n in named} | also, report.summary()  # nothing unrelated is reported


def test_check_command_exit_code_summary_and_json(hour, tmp_path: Path) -> None:
    settings = _copy(hour, tmp_path)
    cli = [sys.executable, "-m", "lakehouse_utils.ops.cli", "check", "--data-dir", str(settings.data_dir),
           "--bootstrap", settings.bootstrap, "--topic", settings.topic]
    ok = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: Bronze, Silver, quarantine and Gold agree." in ok.stdout and "lag 0" in ok.stdout
    assert "[check] reading Bronze" in ok.stderr  # the progress line
    _bronze_row_removed(settings)
    bad = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "FAILED" in bad.stdout
    assert "bronze: offsets missing in" in bad.stdout and "100..100" in bad.stdout
    out = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=300)
    doc = json.loads(out.stdout)
    assert out.returncode == 1 and doc["ok"] is False and out.stderr == ""
    assert {(f["table"], f["kind"].split(" in ")[0]) for f in doc["findings"]} == {
        ("bronze", "offsets missing"), ("silver", "row with no Bronze message")}


def test_a_partition_bronze_holds_nothing_of_is_all_lag() -> None:
    """Partitions come from the topic's end offsets too: one Bronze never read is not left out of the report."""
    import pandas as pd

    from lakehouse_utils.ops.reconcile import check_bronze

    bronze = pd.DataFrame({"topic": "t", "partition": [0, 0, 2], "offset": [0, 1, 0]})
    findings, facts = check_bronze(bronze, {("t", 0): 2, ("t", 1): 7, ("t", 2): 3})
    assert findings == []
    parts = facts["bronze_partitions"]
    assert parts["t[1]"] == {"first": None, "last": None, "rows": 0, "lag": 7}
    assert (parts["t[0]"]["lag"], parts["t[2]"]["lag"]) == (0, 2)
