"""``make soak``'s short version (issue 22): the same run, 30 seconds instead of 30 minutes, sampled every 6 s,
with table maintenance every ~10 batches. Real broker, real Spark (``lakehouse demo`` in a child process), a real
Chromium for the plot. It asserts that what the long one measures is there and sane, and that Gold is exact at the
end; the goals themselves (RSS growth, p95 drift) are for the 30-minute run (README: Soak)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lakehouse_utils.bench.soak import GOALS, TABLES, run_soak

pytestmark = pytest.mark.slow


def test_a_short_soak_samples_every_series_and_ends_exact(tmp_path: Path) -> None:
    said: list[str] = []
    result = run_soak(tmp_path, hours=30 / 3600, sample_s=6.0, warm_s=6.0, window_s=12.0, say=said.append,
                      maintain_every=10)
    assert result == json.loads((tmp_path / "soak.json").read_text()) | {"plot": result["plot"]}
    samples = result["samples"]
    assert 5 <= len(samples) <= 20 and len(said) == len(samples) + 1  # + "lakehouse check ..."
    assert result["check_exit"] == 0 and result["verdicts"]["gold_exact"] == "met", result["check"]
    assert result["query_errors"] == 0, result["first_errors"]  # maintenance beside the batches (a99b5d0)
    assert result["check"]["ok"] and result["trades"] > 4_000  # ~200 trades/s
    labels = {label for s in samples for label in s["rss"]}
    assert any(label.startswith("java") for label in labels) and any("ops.cli" in label for label in labels)
    assert all(s["rss_mb"] > 300 for s in samples[1:])
    # after the first batches, before the last seconds (the demo stops at its --duration: what came in its last
    # second is in the topic, not yet in Gold)
    fed = [s for s in samples if result["fed_s"][0] + 10 < s["t"] < result["fed_s"][1] - 3]
    assert fed and all(0 < s["p50_s"] <= s["p95_s"] < 30 for s in fed) and sum(s["unseen"] for s in fed) == 0
    # the demo logs its latest batch every 10 s
    assert sum(s["batches"] for s in samples) >= 2 and max(s["batch_ms_max"] or 0 for s in samples) > 0
    last = samples[-1]["tables"]
    assert set(last) == set(TABLES) and all(last[t]["log_entries"] > 0 for t in TABLES)
    # compaction keeps Silver's live files few; maintenance ran (every ~10 batches): it checkpoints the log, which
    # delta-rs alone does every 100 commits only
    assert last["silver"]["files"] < last["silver"]["log_entries"]
    assert last["gold_1h"]["log_entries"] < 100 and last["gold_1h"]["log_checkpoints"] >= 1
    assert samples[-1]["checkpoint_mb"] > 0
    assert set(result["verdicts"]) == {"rss_growth_mb", "p95_ratio", "gold_exact", "no_query_error"}
    assert result["goals"] == GOALS
    assert isinstance(result["rss_growth_mb"], float) and isinstance(result["p95_ratio"], float)
    png = Path(result["plot"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # seven panels of lines
