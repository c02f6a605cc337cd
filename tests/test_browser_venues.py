"""The Voila dashboard in Chromium on Gold of three venues: the exchange picker and the venues view, as the page
shows them.

Gold (``bars_1m``) is written with ``deltalake`` (BTC/USD on binance, coinbase and kraken, each venue's close a
fixed premium off the same walk); the dashboard is served by ``jupyter lab`` (``/voila/render``).  What is
checked is read from the page: the Plotly div's traces (one close line per venue with Gold's closes, the spread
in bp equal to ``venue_spreads`` of Gold read apart), the view's summary line, and the candle chart's title
after picking another exchange.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lakehouse_utils.bench.charts import write_gold_bars
from lakehouse_utils.config import Settings
from lakehouse_utils.layers.venues import venue_spreads
from lakehouse_utils.views import charts

from .browser import ARTIFACTS, REPO, browser_page, chart_candles, jupyter_lab, keep_artifacts, wait_until
from .test_venues_view import PREMIUM, venue_bars

pytestmark = pytest.mark.slow

# every Plotly div's traces: [{title, traces: [{name, y}]}]
PLOTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => ({
  title: ((g.layout || {}).title || {}).text || '',
  traces: (g.data || []).map(t => ({name: t.name, n: (t.x || []).length, y: Array.from(t.y || [])}))}))"""


def venues_plot(page) -> dict | None:
    """The venues view's figure on the page (the plot with a 'spread bp' trace): {trace name: y values}."""
    for plot in page.evaluate(PLOTS_JS):
        names = [t["name"] for t in plot["traces"]]
        if "spread bp" in names:
            return {"title": plot["title"], **{t["name"]: t["y"] for t in plot["traces"]}}
    return None


def test_dashboard_shows_the_exchange_picker_and_the_venues_view(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "dashboard.ipynb", work / "notebooks")
    data = work / "data"
    table = charts.table_path(Settings(data_dir=data), "1m")
    bars = venue_bars(20)
    write_gold_bars(table, bars)
    env = {"LAKEHOUSE_DATA_DIR": str(data), "LAKEHOUSE_BOOTSTRAP": "127.0.0.1:1"}  # no broker: nothing published
    server, token = jupyter_lab(tmp_path, work / "notebooks", env)
    console = tmp_path / "logs" / "venues-console.log"
    try:
        server.wait_ready(f"/api/status?token={token}")
        with browser_page(1400, 1000) as page:
            try:
                page.goto(f"{server.url}/voila/render/dashboard.ipynb?token={token}", timeout=180_000)
                shown = wait_until(lambda: (v := venues_plot(page)) and len(v.get("kraken", [])) == 20 and v, 180,
                                   "the venues view with Gold's 20 bars of each venue")
                gold = charts.read_bars(Settings(data_dir=data), "1m", "BTC/USD")
                closes = [n for n in shown if n != "title" and " " not in n]
                assert sorted(closes) == sorted(PREMIUM)  # one close line per venue
                for ex in PREMIUM:
                    assert shown[ex] == pytest.approx(gold[gold.exchange == ex]["close"].tolist())
                want = venue_spreads(gold)["spread_bp"].tolist()
                assert shown["spread bp"] == pytest.approx(want) and want == pytest.approx([3.0] * 20, abs=0.01)
                assert shown["title"].startswith("BTC/USD · 1m · every venue")
                summary = page.locator(".widget-html-content pre", has_text="3 venues").first.inner_text()
                assert summary.startswith("BTC/USD 1m: 3 venues (binance, coinbase, kraken), 60 bars | spread last "
                                          "3.00 bp (coinbase over binance at 00:19 UTC)"), summary

                # the candle chart shows one venue: the first that has the symbol, then the one picked
                assert " · binance · 20 bars" in chart_candles(page)["title"]
                picker = page.locator(".widget-dropdown", has_text="exchange").locator("select").first
                assert picker.locator("option").all_inner_texts() == ["binance", "coinbase", "kraken"]
                picker.select_option("kraken")
                got = wait_until(lambda: (c := chart_candles(page)) and " · kraken · " in c["title"] and c, 60,
                                 "the candle chart on kraken")
                kraken = gold[gold.exchange == "kraken"]
                assert sorted(v[3] for v in got["bars"].values()) == pytest.approx(sorted(kraken["close"]))

                # the view follows Gold: five more bars on every venue appear in the page
                write_gold_bars(table, venue_bars(25).loc[lambda d: d.bar_start.dt.minute >= 18])
                wait_until(lambda: (v := venues_plot(page)) and len(v["spread bp"]) == 25 and v, 60,
                           "the venues view following Gold")
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.locator(".js-plotly-plot").nth(1).scroll_into_view_if_needed()  # Voila scrolls inside its page
                page.screenshot(path=str(ARTIFACTS / "dashboard-venues.png"))
            except BaseException:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard-venues-failed.png"), full_page=True)
                raise
            finally:
                console.parent.mkdir(parents=True, exist_ok=True)
                console.write_text("\n".join(page.console))
    finally:
        server.stop()
        keep_artifacts(server.log, console)
