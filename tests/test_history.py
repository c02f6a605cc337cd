"""Notebook 01's history option (issue 21): the producer panel backfills the hours before the live feed over each
venue's REST API (``kafka/history.py``), then starts the feed. A replay's "now" is where it starts: with a history of
30m, the replay starts 30 minutes of recording time in, and the topic ends holding every trade of the recording
(the history's with header source=rest, before the live ones). A real broker, real replay servers over sockets.
Gold from such a run is checked in the browser test (test_browser_lab)."""

from __future__ import annotations

import html
from collections import defaultdict

import pytest

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.history import plan_history
from lakehouse_utils.kafka.topics import last_messages
from lakehouse_utils.sources.rest_server import recorded_trades
from lakehouse_utils.views.widgets import ProducerPanel

VENUES = ("kraken", "coinbase", "binance")


def test_a_replay_with_history_fills_the_topic_with_the_whole_recording_history_first(settings: Settings) -> None:
    fast = settings.with_(rest_min_interval_s=0.02, rest_page_size=500)
    panel = ProducerPanel(fast, "replay", venues=",".join(VENUES), pairs=[], speed="max", history="30m")
    panel.start()
    assert panel.join(180), panel.status_text()
    text = panel.status_text()
    assert panel.history is not None and panel.history.ok and panel.thread is not None, text
    assert panel.thread.status().ok and panel.thread.status().state == "finished", text
    steps, start_s = plan_history("replay", ",".join(VENUES), [], "30m")
    assert start_s == 1800 and [(s.venue, s.since, s.until) for s in steps] == [
        (v, "2019-07-01T00:00:03.172000Z", "2019-07-01T00:30:06.514001Z") for v in VENUES]
    for venue, result in zip(VENUES, panel.history.results, strict=True):
        assert f"history: {venue} {result.symbol} 2019-07-01T00:00:03.172000Z" in text
        assert result.done and result.unfilled == [], result.line()

    by_source: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for m in last_messages(fast, fast.topic, 100_000):
        by_source[m.json()["exchange"], m.headers["source"]].append(m.json())
    totals = {r.venue: r.total for r in panel.history.results}
    for venue in VENUES:
        recording = {t.trade_id: t for t in recorded_trades(venue)}
        rest = by_source[venue, "rest"]
        live = next(v for (ex, src), v in by_source.items() if ex == venue and src != "rest")
        until = steps[0].until.replace("Z", "+00:00")
        # the history is every trade before the replay's start, each once, and the live feed all the others
        assert sorted(t["trade_id"] for t in rest) == sorted(i for i, t in recording.items()
                                                              if t.event_time.isoformat() < until)
        assert {t["trade_id"] for t in rest} | {t["trade_id"] for t in live} == set(recording)
        assert len(rest) == totals[venue] > 1000
        # a live trade older than the replay's start is a repeat the venue sends on subscribe (Kraken's snapshot,
        # Coinbase's last match), already in the history: Silver keeps it once
        assert {t["trade_id"] for t in live if t["event_time"] < steps[0].until} <= {t["trade_id"] for t in rest}

    # the same history again: the cursors say it is done, nothing is fetched twice; the replay plays again
    again = ProducerPanel(fast, "replay", venues="kraken", pairs=[], speed="max", history="30m")
    again.start()
    assert again.join(120)
    assert "already finished" in again.status_text() and again.history is not None and again.history.ok


@pytest.mark.parametrize(("source", "venues", "history", "error"), [
    ("synthetic", None, "1h", "synthetic has no REST history here"),
    ("replay", "kraken", "2019-07-01T00:00:00Z", "a replay's history is a duration back from where it starts"),
    ("replay", "kraken", "2h", "the kraken replay has nothing left 7200 s in"),
    ("kraken", None, "yesterday", "expected a duration back from now"),
])
def test_a_history_that_cannot_be_fetched_says_why_before_anything_starts(settings: Settings, source: str,
                                                                         venues: str | None, history: str,
                                                                         error: str) -> None:
    panel = ProducerPanel(settings, source, venues=venues or "kraken", pairs=[], history=history)
    panel._safely(panel.start)  # what the Start button does
    assert error in html.unescape(panel.status_w.value) and panel.thread is None and panel.history is None
    with pytest.raises(ValueError, match=error):
        plan_history(source, venues if source == "replay" else None, [], history)


def test_ingest_history_from_the_terminal(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    from lakehouse_utils.ops.cli import main

    common = ["--bootstrap", settings.bootstrap, "--topic", settings.topic, "--data-dir", str(settings.data_dir)]
    assert main(["ingest", "--source", "replay", "--history", "45m", *common]) == 0
    out = capsys.readouterr().out
    assert "history: kraken BTC/USD 2019-07-01T00:00:03.172000Z..2019-07-01T00:45:" in out, out
    assert "finished;" in out and "ingest finished (source ended)" in out
    ids = {m.headers["source"]: set() for m in last_messages(settings, settings.topic, 10_000)}
    for m in last_messages(settings, settings.topic, 10_000):
        ids[m.headers["source"]].add(m.json()["trade_id"])
    assert set(ids) == {"rest", "replay"}
    assert ids["rest"] | ids["replay"] == {t.trade_id for t in recorded_trades("kraken")}
    assert len(ids["rest"]) > 2 * len(ids["replay"] - ids["rest"]) > 0  # 45 of the hour's 60 minutes came first
