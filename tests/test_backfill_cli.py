"""``lakehouse backfill`` (issue 21, part 2): the bundled hour fetched from Kraken's REST replay server, paged, into
the trades topic; killed -9 midway (a real subprocess) and restarted, it resumes from its saved cursor; the pipeline
then makes Gold equal to the bars computed independently from the recording, with every trade once in Silver.

The bundled recording holds one hour (2019-07-01 00:00-01:00 UTC), so the range backfilled is that hour, not 6 h.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.topics import end_offsets, last_messages
from lakehouse_utils.layers.jobs import Supervisor
from lakehouse_utils.ops.check import check
from lakehouse_utils.ops.demo import _wait_caught_up, table_counts
from lakehouse_utils.progress import ProgressLine
from tests.test_faults import stop_all
from tests.test_pipeline import assert_gold_matches

pytestmark = pytest.mark.slow
HOUR_IDS = 2671
PAGE = 200


def backfill(data: Path, settings: Settings) -> list[str]:
    return [sys.executable, "-m", "lakehouse_utils.ops.cli", "backfill", "--data-dir", str(data),
            "--bootstrap", settings.bootstrap, "--topic", settings.topic, "--venue", "kraken", "--pair", "BTC/USD",
            "--since", "2019-07-01T00:00:00Z", "--until", "2019-07-01T01:00:00Z", "--replay",
            "--page-size", str(PAGE), "--min-interval", "0.3"]


def state_of(settings: Settings) -> dict | None:
    files = list(settings.backfills.glob("*.json"))
    return json.loads(files[0].read_text()) if files else None


def test_backfill_killed_9_midway_resumes_and_gold_equals_the_independent_bars(settings: Settings, spark) -> None:
    from lakehouse_utils.layers.pipeline import start_pipeline

    cmd = backfill(settings.data_dir, settings)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while (state := state_of(settings)) is None or state["delivered"] < 3 * PAGE:  # three pages in the topic
            assert proc.poll() is None, "the backfill ended before it was killed"
            assert time.monotonic() < deadline, "no three pages delivered in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9, midway (a page each 0.3 s: 14 pages in all)
        proc.wait(30)
    state = state_of(settings)
    assert state is not None and not state["cursor"]["done"] and 3 * PAGE <= state["delivered"] < HOUR_IDS
    before = sum(end_offsets(settings, settings.topic).values())
    assert state["delivered"] <= before < HOUR_IDS

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "finished (resumed)" in again.stdout and f"{HOUR_IDS:,} in all" in again.stdout, again.stdout
    total = sum(end_offsets(settings, settings.topic).values())
    # the resumed run started after the last page saved: at most the page being sent at the kill went twice
    assert HOUR_IDS <= total <= HOUR_IDS + PAGE
    messages = last_messages(settings, settings.topic, 2 * HOUR_IDS)
    assert {m.headers["source"] for m in messages} == {"rest"}
    assert {int(m.json()["trade_id"]) for m in messages} == set(range(1, HOUR_IDS + 1))

    third = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "already finished (2,671 trades): nothing sent" in third.stdout, third.stdout
    assert sum(end_offsets(settings, settings.topic).values()) == total

    supervisor = Supervisor({"pipeline": lambda: start_pipeline(spark, settings, trigger="500 milliseconds")},
                            lambda _line: None)
    queries = supervisor.start()
    try:
        _wait_caught_up(spark, settings, queries, None, ProgressLine(log_every=5.0), 0.5, timeout=300,
                        check=supervisor.check)
    finally:
        stop_all(queries)
    counts = table_counts(spark, settings)
    assert (counts.bronze, counts.silver, counts.late) == (total, HOUR_IDS, 0)  # nothing twice in Silver
    assert_gold_matches(settings)
    verdict = check(settings)
    assert verdict.ok, verdict.summary()
    assert verdict.facts["trade_id_gaps"]["kraken BTC/USD"]["missing"] == 0 and verdict.facts["unfilled_gaps"] == []
