"""``make soak [HOURS=0.5]``: ``lakehouse demo`` on a synthetic feed for hours, watched from outside.

The feed: 3 symbols at ~200 trades/s with a quiet minute and a 15-second burst (x5) in every five
minutes (``--rate-profile soak``: ``sources/synthetic.soak_rate``), into a topic stamped with the broker's append time.
Table maintenance runs from the pipeline every ~5 minutes (keeping 10 minutes of time travel), as a long-running
workbench would run it. Every ``sample_s`` seconds a sample: the RSS of every process (broker, the demo's Python and
JVM, the Gold reader), each Delta table's live files, files on disk and log entries, the checkpoint's size, and the
pipeline's batch durations since the last sample (from the demo's progress log). After the run: each trade's
latency from Kafka's append time to the first Gold read counting it (:mod:`.latency`), per sample window, and
``lakehouse check`` on the result.

Goals (:data:`GOALS`): RSS growth after the first 5 minutes (median RSS of the last window minus that of the window
after warm-up) <= 50 MB; p95 latency of the last 5 minutes within 20 % of the first 5 after warm-up; Gold exact
(``check`` exit 0). Writes ``soak.json`` and ``soak.png`` (each series over time, drawn by Plotly in Chromium).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..kafka.broker import LocalKafka
from ..procs import free_port_pair, rss_mb
from .latency import GoldPoller, kafka_arrivals, latencies, stamped_topic
from .runs import _interrupt, _label, _lakehouse, tree_pids

PAIRS = ("BTC/USD", "ETH/USD", "SOL/USD")
SPEED = "4"  # x 50 trades/s: ~200 trades/s
GOALS = {"rss_growth_mb": 50.0, "p95_ratio": 1.2}
TABLES = ("bronze", "silver", "gold_1m", "gold_5m", "gold_1h")  # Settings.tables' names
_FAILED = re.compile(r"terminated with error|query failed|Traceback \(most recent call last\)")
_BATCH = re.compile(r"\| pipeline b(\d+) (\d+)r (\d+)ms")  # the demo's progress line, every 5 s in a log


def table_stats(path: Path) -> dict[str, int]:
    """Live files (in the table's current version), data files on disk, log entries and log checkpoints of one
    Delta table."""
    from deltalake import DeltaTable

    log = path / "_delta_log"
    if not log.is_dir():
        return {"files": 0, "files_on_disk": 0, "log_entries": 0, "log_checkpoints": 0}
    try:
        live = len(DeltaTable(str(path)).file_uris())
    except Exception:  # a commit between list and read: counted at the next sample
        live = -1
    return {"files": live, "files_on_disk": sum(1 for _ in path.rglob("*.parquet") if log not in _.parents),
            "log_entries": sum(1 for _ in log.glob("*.json")),
            "log_checkpoints": sum(1 for _ in log.glob("*.checkpoint*.parquet"))}


def dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 2) if path.exists() else 0.0


def batches(log: Path, seen: int) -> tuple[list[int], int]:
    """Batch durations (ms) the demo's progress log added since byte ``seen``, and the new position."""
    if not log.exists():
        return [], seen
    with log.open("rb") as fh:
        fh.seek(seen)
        text = fh.read().decode(errors="replace")
    durations = {int(m[1]): int(m[3]) for m in _BATCH.finditer(text)}  # a batch may be logged twice
    return list(durations.values()), seen + len(text.encode())


def rss_by_label(roots: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid in tree_pids(roots):
        mb = rss_mb([pid])
        if mb:
            label = _label(pid)
            out[label] = round(out.get(label, 0.0) + mb, 1)
    return out


def _window(samples: list[dict[str, Any]], start: float, end: float, key: str) -> list[float]:
    return [s[key] for s in samples if start <= s["t"] < end and s.get(key) is not None]


def summarize(samples: list[dict[str, Any]], fed: tuple[float, float], warm_s: float,
              window_s: float) -> dict[str, Any]:
    """The goals' figures from the samples (``t``: seconds since the demo started; the feed ran over ``fed``)."""
    first = (fed[0] + warm_s, fed[0] + warm_s + window_s)
    last = (fed[1] - window_s, fed[1] + 0.5)
    rss_first, rss_last = _window(samples, *first, "rss_mb"), _window(samples, *last, "rss_mb")
    p95_first, p95_last = _window(samples, *first, "p95_s"), _window(samples, *last, "p95_s")
    growth = float(np.median(rss_last) - np.median(rss_first)) if rss_first and rss_last else None
    ratio = float(np.median(p95_last) / np.median(p95_first)) if p95_first and p95_last else None
    after = _window(samples, first[0], last[1], "rss_mb")
    return {"rss_growth_mb": None if growth is None else round(growth, 1),
            "rss_after_warmup_max_minus_first_mb": round(max(after) - after[0], 1) if after else None,
            "p95_first_s": float(np.median(p95_first)) if p95_first else None,
            "p95_last_s": float(np.median(p95_last)) if p95_last else None,
            "p95_ratio": None if ratio is None else round(ratio, 3)}


def run_soak(root: Path, hours: float = 0.5, sample_s: float = 30.0, warm_s: float = 300.0,
             window_s: float = 300.0, say: Callable[[str], None] = print, plot: bool = True,
             maintain_every: int = 300) -> dict[str, Any]:
    """Run the soak under ``root`` (its own broker and data dir); returns (and writes) ``soak.json``.
    ``maintain_every``: batches between the pipeline's table maintenance runs (~1 s each)."""
    seconds = hours * 3600
    data, logs = root / "soak", root / "logs"
    shutil.rmtree(data, ignore_errors=True)
    broker = LocalKafka(root / "kafka-soak", free_port_pair()).start()
    try:
        topic = stamped_topic(broker.bootstrap, "soak.trades")
        poller = GoldPoller(data / "gold", logs / "soak.polls.jsonl", max_seconds=seconds + 1200)
        log = logs / "soak.demo.log"
        env = {"LAKEHOUSE_MAINTAIN_EVERY": str(maintain_every), "LAKEHOUSE_MAINTAIN_RETAIN": "10m",
               "LAKEHOUSE_ALERTS_TOPIC": f"{topic}.alerts"}
        demo = _lakehouse("demo", "--data-dir", str(data), "--bootstrap", broker.bootstrap, "--topic", topic,
                          "--source", "synthetic", *sum((["--pair", p] for p in PAIRS), []), "--speed", SPEED,
                          "--rate-profile", "soak", "--duration", str(seconds), log=log, env=env)
        paths = Settings(data_dir=data).tables
        t0 = time.time()
        samples: list[dict[str, Any]] = []
        seen = 0
        while demo.poll() is None and time.time() - t0 < seconds + 600:
            time.sleep(max(0.0, sample_s - (time.time() - t0) % sample_s))
            rss = rss_by_label([demo.pid, broker.pid() or 0, poller.proc.pid])
            durations, seen = batches(log, seen)
            sample = {"t": round(time.time() - t0, 1), "rss_mb": round(sum(rss.values()), 1), "rss": rss,
                      "tables": {name: table_stats(paths[name]) for name in TABLES},
                      "checkpoint_mb": dir_mb(data / "checkpoints"), "batches": len(durations),
                      "batch_ms_max": max(durations, default=None),
                      "batch_ms_median": float(np.median(durations)) if durations else None}
            samples.append(sample)
            say(f"soak {sample['t'] / 60:5.1f} min: RSS {sample['rss_mb']:,.0f} MB, {len(durations)} batches "
                f"(max {sample['batch_ms_max']} ms), silver files {sample['tables']['silver']}")
        code = _interrupt(demo)
        polls = poller.stop()
        arrivals = kafka_arrivals(broker.bootstrap, topic)
        fed = ((float(arrivals["append_s"].min()) - t0, float(arrivals["append_s"].max()) - t0) if len(arrivals)
               else (0.0, seconds))
        errors = [line for line in log.read_text(errors="replace").splitlines() if _FAILED.search(line)]
        for s in samples:  # the latency of the trades appended in each sample's window
            end = t0 + s["t"]
            lat = latencies(arrivals, polls, since=end - sample_s, until=end).summary() if len(arrivals) else {}
            s.update(trades=lat.get("trades", 0), p50_s=lat.get("p50_s"), p95_s=lat.get("p95_s"),
                     unseen=lat.get("unseen"))
        say("soak: lakehouse check ...")
        check = subprocess.run([sys.executable, "-m", "lakehouse_utils.ops.cli", "check", "--data-dir", str(data),
                                "--bootstrap", broker.bootstrap, "--topic", topic, "--json"],
                               capture_output=True, text=True, timeout=1800)
    finally:
        broker.stop()
    summary = summarize(samples, fed, warm_s, window_s)
    result: dict[str, Any] = {
        "hours": hours, "sample_s": sample_s, "warm_s": warm_s, "window_s": window_s, "demo_exit": code,
        "fed_s": [round(fed[0], 1), round(fed[1], 1)], "trades": len(arrivals), **summary,
        "query_errors": len(errors), "first_errors": errors[:5],
        "check_exit": check.returncode, "check": _json_or_text(check.stdout), "goals": GOALS, "samples": samples}
    result["verdicts"] = {
        "rss_growth_mb": _met(summary["rss_growth_mb"], GOALS["rss_growth_mb"]),
        "p95_ratio": _met(summary["p95_ratio"], GOALS["p95_ratio"]),
        "gold_exact": "met" if check.returncode == 0 else "MISS",
        "no_query_error": "met" if not errors else "MISS"}
    out = root / "soak.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    if plot:
        from .soak_plot import write_plot

        result["plot"] = str(write_plot(result, root / "soak.png"))
        out.write_text(json.dumps(result, indent=1, default=str))
    return result


def _met(value: float | None, limit: float) -> str:
    return "n/a" if value is None else ("met" if value <= limit else "MISS")


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text[-2000:]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="make soak: lakehouse demo for hours, watched from outside")
    p.add_argument("--hours", type=float, default=0.5)
    p.add_argument("--data-dir", default="data/bench", help="where soak.json, soak.png and the run's data go")
    p.add_argument("--sample-s", type=float, default=30.0)
    p.add_argument("--warm-s", type=float, default=300.0)
    p.add_argument("--window-s", type=float, default=300.0)
    args = p.parse_args(argv)
    root = Path(args.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    result = run_soak(root, args.hours, args.sample_s, args.warm_s, args.window_s)
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "check")}, indent=1, default=str))
    return 0 if all(v == "met" for v in result["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
