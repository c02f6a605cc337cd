"""The numbered notebooks: as stored under nbval against the real broker and the bundled hour (what CI checks),
their stored outputs, and papermill's injected parameters (``make notebooks``)."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from deltalake import DeltaTable

from lakehouse_utils.config import ENV_PREFIX
from lakehouse_utils.engine import EngineServer
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.topics import end_offsets
from lakehouse_utils.ops.notebooks import bounded_env, is_checked, nbval_command, numbered, run_nbval, run_notebooks
from lakehouse_utils.views.charts import read_bars

# What each checked cell prints for the bundled hour on a new topic and data dir: the outputs stored in git
# (nbval compares a run with them) must be exactly these.
HOUR = {
    "01_ingest.ipynb": [
        "replay: received=2672 delivered=2672 rejected=0 errors=0\n"
        "trades end offsets: {0: 2672}\n"
        "DLQ end offsets: {0: 0}\n"
        "last trade: BTC/USD #2671 sell 0.003 @ 11014.3 at 2019-07-01T00:59:51.213000Z\n"],
    "02_bronze.ipynb": [
        "Bronze partition 0: 2672 rows, offsets 0..2671\n"
        "topic end offsets: {0: 2672}\n"],
    "03_silver.ipynb": [
        "2671 trades, 2671 distinct keys\n"
        "Bronze 2672 rows = 2671 trades + 0 quarantined + 1 duplicate(s) skipped\n"
        "latest trade: BTC/USD #2671 sell 0.003 @ 11014.3\n"],
    "04_gold.ipynb": [
        "1m: 60 bars (57 final), 2671 trades\n"
        "5m: 12 bars (11 final), 2671 trades\n"
        "1h: 1 bars (0 final), 2671 trades\n"
        "1h bar BTC/USD 2019-07-01 00:00 UTC: open=10749.4 high=11041.8 low=10600.0 close=11014.3 (forming)\n"
        "late trades: 0\n"],
    "05_live_candles.ipynb": [
        "bars shown: 60\n"
        "last bar: 2019-07-01 00:59 UTC open=10985.1 high=11041.8 low=10985.1 close=11014.3 (forming)\n"
        "alerts on the chart: 1\n"],
    "06_analytics_alerts.ipynb": [
        "60 bars, 57 final\n",
        "1 alert(s) on final bars: {'volume_z': 1}\n"
        "kraken|BTC/USD|1m|2019-07-01T00:48:00Z|volume_z\n"
        "0 new alert(s) written\n"  # Gold (notebook 04) raised them already: the same ids
        "alerts table: 2 rows; alerts topic: 2 messages\n"],
    "07_reconcile.ipynb": [
        "ok: True (0 kind(s) of difference)\n"
        "bronze: 2,672 rows in 1 partition(s), lag 0\n"
        "silver: 2,671 trades, 1 later copies left out, 0 quarantined\n"
        "gold: 1m 60 bars (57 final), 5m 12 bars (11 final), 1h 1 bars (0 final)\n"],
    # Gold's first version against now, the append-only layers' rows, the SQL cell's silver (the version in the
    # middle of Gold's history depends on the run's batches: only what holds for any of them is printed)
    "08_time_travel_sql.ipynb": [
        "gold_1m version 0: 0 bars (0 final); now: 60 bars (57 final)\n"
        "since version 0: 60 new\n"
        "final bars changed since the middle version: 0\n"
        "bronze: 2,672 rows added by its commits, 2,672 rows now\n"
        "silver: 2,671 rows added by its commits, 2,671 rows now\n"
        "exchange | symbol  | trades |     low |    high\n"
        "---------+---------+--------+---------+--------\n"
        "kraken   | BTC/USD |   2671 | 10600.0 | 11041.8\n"
        "(1 row)\n"],
}


def code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def outputs(path: Path) -> str:
    return "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                     for c in code_cells(path) for o in c.get("outputs", []))


def test_only_the_checked_cells_keep_outputs_and_they_hold_the_hour() -> None:
    assert [p.name for p in numbered()] == list(HOUR)
    for path in numbered():
        cells = code_cells(path)
        checked = [c for c in cells if is_checked(c)]
        for c in cells:
            if not is_checked(c):
                assert c.outputs == [] and c.execution_count is None, (path.name, c.source)
        # nbval only compares a cell that was run (an execution count) and only stdout here: no stderr, no error
        assert all(c.execution_count and [o.output_type for o in c.outputs] == ["stream"]
                   and c.outputs[0].name == "stdout" for c in checked), path.name
        texts = [c.outputs[0].text for c in checked]
        assert texts == HOUR[path.name], path.name
        # nothing that depends on the machine or the run: paths, random topic names, timings
        for text in texts:
            assert not any(s in text for s in ("/tmp", "/work", "/home", "nbval.", "t.", " ms", "msg/s")), text


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_notebooks_as_stored_pass_nbval_in_order(kafka: LocalKafka, topic: str, tmp_path: Path) -> None:
    data, junit = tmp_path / "data", tmp_path / "nbval.xml"
    proc = run_nbval(data, kafka.bootstrap, topic, junit=junit, capture=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]

    # every code cell ran and passed, notebook by notebook in order; the checked ones compared their outputs
    cases = [(c.get("classname"), c.get("name"), [e.tag for e in c]) for c in ET.parse(junit).iter("testcase")]
    ran = [(cls, name) for cls, name, problems in cases if not problems]
    assert len(ran) == len(cases) == sum(len(code_cells(p)) for p in numbered())
    assert list(dict.fromkeys(cls for cls, _ in ran)) == [f"notebooks.{p.name}" for p in numbered()]
    checked = [(f"notebooks.{p.name}", f"Cell {i}") for p in numbered()
               for i, c in enumerate(code_cells(p)) if is_checked(c)]
    assert len(checked) == 9 and set(checked) <= set(ran)
    assert f"{len(cases)} passed" in proc.stdout

    # 01: the hour on the topic, nothing in the DLQ
    assert end_offsets(kafka.bootstrap, topic) == {0: 2672}
    assert end_offsets(kafka.bootstrap, f"{topic}.dlq") == {0: 0}
    # 02-04: the tables themselves (read without a JVM)
    assert len(DeltaTable(str(data / "bronze" / "crypto_trades")).to_pandas()) == 2672
    assert len(DeltaTable(str(data / "silver" / "trades")).to_pandas()) == 2671
    for tf, n in {"1m": 60, "5m": 12, "1h": 1}.items():
        bars = DeltaTable(str(data / "gold" / f"bars_{tf}")).to_pandas()
        assert len(bars) == n and bars["trades"].sum() == 2671
    hour = DeltaTable(str(data / "gold" / "bars_1h")).to_pandas().iloc[0]
    assert (hour.open, hour.close) == (10749.4, 11014.3)
    # 05: the self-contained HTML report (plotly.js embedded); 04's Gold raised the hour's two alerts (the 1m volume
    # spike, a 1.2 % 5m move), once in the table and the topic, and 06's publish found nothing new
    assert (data / "reports" / "candles_1m.html").stat().st_size > 1_000_000
    assert end_offsets(kafka.bootstrap, f"{topic}.alerts") == {0: 2}
    alerts = DeltaTable(str(data / "gold" / "alerts")).to_pandas()
    assert sorted(alerts.alert_id) == ["kraken|BTC/USD|1m|2019-07-01T00:48:00Z|volume_z",
                                       "kraken|BTC/USD|5m|2019-07-01T00:10:00Z|move_pct"]
    # the notebooks started no broker of their own: LAKEHOUSE_BOOTSTRAP named the session's
    assert not (data / "kafka").exists()
    # 02-04 ran their queries in one shared engine (02 started it; the run stopped it), not a JVM per kernel
    assert (data / "engine" / "engine.log").read_text().count("[engine] ready in") == 1
    assert not EngineServer(data / "engine", data).is_running()

    # a checked cell fails on a wrong value: notebook 05 with one digit of its stored last bar changed
    nb = nbformat.read(numbered()[4], as_version=4)
    cell = next(c for c in nb.cells if is_checked(c))
    cell.outputs[0].text = cell.outputs[0].text.replace("close=11014.3 (forming)", "close=11014.4 (forming)")
    wrong = tmp_path / "05_wrong.ipynb"
    nbformat.write(nb, wrong)
    proc = subprocess.run(nbval_command([wrong]), cwd=Path(__file__).parent.parent, capture_output=True, text=True,
                          env=bounded_env(data, kafka.bootstrap, topic, run_seconds=30))
    assert proc.returncode == 1 and "Cell outputs differ" in proc.stdout and "1 failed" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_papermill_injects_the_parameters(hour, kafka: LocalKafka, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``make notebooks``' path, on the tables of the session's hour (read only: 06 does not publish)."""
    settings, _ = hour
    stored = DeltaTable(str(settings.alerts_table)).to_pandas()  # what the demo's Gold raised
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)  # every value below comes from papermill's injected cell
    done = [*run_notebooks(settings.data_dir, tmp_path, kafka.bootstrap, run_seconds=30, only=["05"]),
            *run_notebooks(settings.data_dir, tmp_path, kafka.bootstrap, run_seconds=30, only=["06"],
                           parameters={"topic": settings.topic, "publish": False})]
    assert [p.name for p in done] == ["05_live_candles.ipynb", "06_analytics_alerts.ipynb"]
    live, alerts = (outputs(p) for p in done)
    assert f"Gold tables under {settings.gold.resolve()}" in live  # data_dir
    assert " refreshes, the last took " in live  # run_seconds > 0: the bounded cell ran
    assert "last bar: 2019-07-01 00:59 UTC open=10985.1 high=11041.8 low=10985.1 close=11014.3 (forming)" in live
    assert (settings.reports / "candles_1m.html").stat().st_size > 1_000_000
    # the hour has one venue: the venues view (05) and the venues section (06) say so, and nothing breaks
    assert "BTC/USD 1m: one venue only: kraken (60 bars), no spread between venues" in live
    assert "BTC/USD 1m: one venue only: kraken (" in alerts and " final bars), no spread between venues" in alerts
    # the hour's own finality (the demo's idle finalizer closes more bars than notebook 04 does)
    bars = read_bars(settings, "1m")
    assert f"{len(bars)} bars, {int(bars.is_final.sum())} final" in alerts
    assert "kraken|BTC/USD|1m|2019-07-01T00:48:00Z|volume_z" in alerts
    assert "new alert(s) written" not in alerts  # publish=False: the table is as Gold left it
    assert sorted(DeltaTable(str(settings.alerts_table)).to_pandas().alert_id) == sorted(stored.alert_id)


@pytest.mark.slow
def test_papermill_runs_08_on_the_hour(hour, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook 08 under papermill on the session's hour (read only; its Spark SQL cell is left to nbval, which
    runs it on the engine 02-04 started: here it would start one JVM more)."""
    settings, _ = hour
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)  # every value below comes from papermill's injected cell
    [done] = run_notebooks(settings.data_dir, tmp_path, run_seconds=0, only=["08"],
                           parameters={"spark_sql_too": False, "timeframe": "5m"})
    text = outputs(done)
    assert all(o.output_type != "error" for c in code_cells(done) for o in c.outputs)
    assert f"tables under {settings.data_dir.resolve()}" in text  # data_dir
    bars = read_bars(settings, "5m")  # timeframe: the injected 5m, read here without the notebook's helpers
    now = f"{len(bars)} bars ({int(bars.is_final.sum())} final)"
    assert f"gold_5m version 0: 0 bars (0 final); now: {now}" in text
    assert f"since version 0: {len(bars)} new" in text
    assert "final bars changed since the middle version: 0" in text
    for name, table in (("bronze", settings.bronze), ("silver", settings.silver)):
        rows = len(DeltaTable(str(table)).to_pandas())
        assert f"{name}: {rows:,} rows added by its commits, {rows:,} rows now" in text
    silver = DeltaTable(str(settings.silver)).to_pandas()
    low, high = float(silver.price.min()), float(silver.price.max())
    row = f"{silver.exchange[0]:<8} | {silver.symbol[0]} | {len(silver):>6} | {low!r} | {high!r}"
    assert row in text  # the SQL cell (one venue and symbol in the hour)
    assert "Spark SQL: skipped (spark_sql_too = False)" in text
