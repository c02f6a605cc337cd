"""``lakehouse backfill`` (issue 21, part 2): six hours of Kraken trades fetched from its REST replay server, paged,
into the trades topic; killed -9 midway (a real subprocess) and restarted, it resumes from its saved cursor; the
pipeline then makes Gold equal to the bars computed independently from the recording, with every trade once in Silver.

The six hours are the bundled real hour (2019-07-01 00:00-01:00 UTC) and five copies of it an hour apart each, with
trade ids going on (a recording in Kraken's WebSocket format, served by ``--replay --file``).
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
from lakehouse_utils.sources.recording import read_recording, write_recording
from lakehouse_utils.sources.replay import SAMPLE_RECORDING
from tests.test_faults import stop_all
from tests.test_pipeline import assert_gold_matches

pytestmark = pytest.mark.slow
HOUR_IDS = 2671
HOURS = 6
IDS = HOURS * HOUR_IDS
PAGE = 1000


def six_hours(path: Path) -> Path:
    """The bundled hour, then its trade frames again an hour later each time (times + k h, ids + k x 2,671)."""
    hour = list(read_recording(SAMPLE_RECORDING))
    out = list(hour)
    for k in range(1, HOURS):
        for entry in hour:
            frame = entry.get("frame") or {}
            if frame.get("channel") != "trade":
                continue
            data = []
            for item in frame["data"]:
                at = item["timestamp"]
                data.append({**item, "trade_id": item["trade_id"] + k * HOUR_IDS,
                             "timestamp": f"{at[:11]}{int(at[11:13]) + k:02d}{at[13:]}"})
            out.append({"recv_ms": entry["recv_ms"] + k * 3_600_000, "frame": {**frame, "data": data}})
    return write_recording(path, out)


def backfill(data: Path, settings: Settings, recording: Path) -> list[str]:
    return [sys.executable, "-m", "lakehouse_utils.ops.cli", "backfill", "--data-dir", str(data),
            "--bootstrap", settings.bootstrap, "--topic", settings.topic, "--venue", "kraken", "--pair", "BTC/USD",
            "--since", "2019-07-01T00:00:00Z", "--until", "2019-07-01T06:00:00Z", "--replay", "--file",
            str(recording), "--page-size", str(PAGE), "--min-interval", "0.3"]


def state_of(settings: Settings) -> dict | None:
    files = list(settings.backfills.glob("*.json"))
    return json.loads(files[0].read_text()) if files else None


def test_backfill_killed_9_midway_resumes_and_gold_equals_the_independent_bars(settings: Settings, spark) -> None:
    from lakehouse_utils.layers.pipeline import start_pipeline

    recording = six_hours(settings.data_dir.parent / "six_hours.jsonl.gz")
    cmd = backfill(settings.data_dir, settings, recording)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while (state := state_of(settings)) is None or state["delivered"] < 8 * PAGE:  # 8 of the 17 pages delivered
            assert proc.poll() is None, "the backfill ended before it was killed"
            assert time.monotonic() < deadline, "no eight pages delivered in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9, midway (a page each 0.3 s at most: 17 pages in all)
        proc.wait(30)
    state = state_of(settings)
    assert state is not None and not state["cursor"]["done"] and 8 * PAGE <= state["delivered"] < IDS
    before = sum(end_offsets(settings, settings.topic).values())
    assert state["delivered"] <= before < IDS

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "finished (resumed)" in again.stdout and f"{IDS:,} in all" in again.stdout, again.stdout
    total = sum(end_offsets(settings, settings.topic).values())
    # the resumed run started after the last page saved: at most the page being sent at the kill went twice
    assert IDS <= total <= IDS + PAGE
    messages = last_messages(settings, settings.topic, 2 * IDS)
    assert {m.headers["source"] for m in messages} == {"rest"}
    assert {int(m.json()["trade_id"]) for m in messages} == set(range(1, IDS + 1))
    assert max(m.json()["event_time"] for m in messages) > "2019-07-01T05:59"

    third = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and f"already finished ({IDS:,} trades): nothing sent" in third.stdout, third.stdout
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
    assert (counts.bronze, counts.silver, counts.late) == (total, IDS, 0)  # nothing twice in Silver
    assert_gold_matches(settings, recording)
    verdict = check(settings)
    assert verdict.ok, verdict.summary()
    assert verdict.facts["trade_id_gaps"]["kraken BTC/USD"]["missing"] == 0 and verdict.facts["unfilled_gaps"] == []
