"""The bench: every figure of the Performance table, measured in one run, written to ``<dir>/latest.json``.

Each measurement is a function ``(ctx) -> {field: value}``; targets live here, not in timed tests (the
machine is shared and noisy: compare figures of the same run).  ``--only`` runs some of them, ``--quick``
shortens the feeds (the smoke test in ``make test`` uses it); a quick run checks that every field is
produced, not that targets are met.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..broker import LocalKafka

# field -> (target, higher is better, unit)
TARGETS: dict[str, tuple[float | None, bool, str]] = {
    "e2e_latency_p50_s": (3.0, False, "s"),
    "e2e_latency_p95_s": (6.0, False, "s"),
    "e2e_latency_p95_s_500tps": (6.0, False, "s"),
    "notebook_flow_latency_p50_s": (3.0, False, "s"),
    "notebook_flow_latency_p95_s": (6.0, False, "s"),
    "notebook_flow_peak_rss_mb": (3000.0, False, "MB"),
    "first_bar_s": (20.0, False, "s"),
    "catchup_trades_per_s": (50_000.0, True, "trades/s"),
    "producer_trades_per_s": (20_000.0, True, "trades/s"),
    "producer_synthetic_trades_per_s": (100_000.0, True, "trades/s"),
    "peak_rss_mb": (3000.0, False, "MB"),
    "chart_refresh_ms_500_bars": (200.0, False, "ms"),
    "seed_style_e2e_latency_p50_s": (None, False, "s"),
    "e2e_latency_p50_s_realtime": (3.0, False, "s"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Context:
    root: Path
    kafka: LocalKafka
    quick: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap


def m_e2e(ctx: Context) -> dict[str, Any]:
    from .runs import live_run

    run = live_run(ctx.root, ctx.bootstrap, ctx.kafka.pid(), flow="demo", speed="20",
                   feed_seconds=40 if ctx.quick else 190)
    ctx.details["e2e"] = asdict(run)
    return {"e2e_latency_p50_s": run.latency["p50_s"], "e2e_latency_p95_s": run.latency["p95_s"],
            "peak_rss_mb": run.peak_rss_mb}


def m_e2e_500(ctx: Context) -> dict[str, Any]:
    from .runs import live_run

    run = live_run(ctx.root, ctx.bootstrap, ctx.kafka.pid(), flow="demo", source="synthetic", speed="10",
                   pairs=["BTC/USD", "ETH/USD", "SOL/USD"], feed_seconds=30 if ctx.quick else 90, warmup_s=15)
    ctx.details["e2e_500tps"] = asdict(run)
    return {"e2e_latency_p95_s_500tps": run.latency["p95_s"]}


def m_notebook_flow(ctx: Context) -> dict[str, Any]:
    from .runs import live_run

    run = live_run(ctx.root, ctx.bootstrap, ctx.kafka.pid(), flow="notebooks", speed="20",
                   feed_seconds=40 if ctx.quick else 190)
    ctx.details["notebook_flow"] = asdict(run)
    return {"notebook_flow_latency_p50_s": run.latency["p50_s"], "notebook_flow_latency_p95_s": run.latency["p95_s"],
            "notebook_flow_peak_rss_mb": run.peak_rss_mb}


def m_first_bar(ctx: Context) -> dict[str, Any]:
    from .runs import first_bar_run

    return {"first_bar_s": first_bar_run(ctx.root, _free_port())}


MEASUREMENTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "e2e": m_e2e,
    "e2e_500": m_e2e_500,
    "notebook_flow": m_notebook_flow,
    "first_bar": m_first_bar,
}


def verdict(name: str, value: Any) -> str:
    target, higher, _ = TARGETS.get(name, (None, False, ""))
    if value is None:
        return "n/a"
    if target is None:
        return ""
    return "ok" if (value >= target if higher else value <= target) else "MISS"


def table(results: dict[str, Any]) -> str:
    lines = [f"{'field':<34} {'value':>12}  {'unit':<9} {'target':>12}  verdict"]
    for name, value in results.items():
        target, higher, unit = TARGETS.get(name, (None, False, ""))
        goal = "" if target is None else f"{'>=' if higher else '<='} {target:g}"
        shown = "-" if value is None else f"{value:,.2f}"
        lines.append(f"{name:<34} {shown:>12}  {unit:<9} {goal:>12}  {verdict(name, value)}")
    return "\n".join(lines)


def run(root: Path, only: list[str] | None = None, quick: bool = False) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("runs", "logs"):
        shutil.rmtree(root / sub, ignore_errors=True)
    kafka = LocalKafka(root / "runs" / "kafka", _free_port())
    kafka.start()
    ctx = Context(root / "runs", kafka, quick)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    try:
        for name, fn in MEASUREMENTS.items():
            if only and name not in only:
                continue
            print(f"[bench] {name} ...", flush=True)
            t0 = time.monotonic()
            out = fn(ctx)
            timings[name] = round(time.monotonic() - t0, 1)
            for k, v in out.items():
                print(f"[bench]   {k} = {v}", flush=True)
            results.update(out)
    finally:
        kafka.stop()
    report = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick,
              "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
              "results": results, "verdicts": {k: verdict(k, v) for k, v in results.items()},
              "seconds": timings, "details": ctx.details}
    (root / "latest.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="data/bench")
    ap.add_argument("--only", action="append", choices=list(MEASUREMENTS), help="run only these (repeatable)")
    ap.add_argument("--quick", action="store_true", help="short feeds: checks the fields, not the targets")
    args = ap.parse_args(argv)
    report = run(Path(args.data_dir), args.only, args.quick)
    print(table(report["results"]))
    print(f"written: {Path(args.data_dir) / 'latest.json'}")
    return 0
