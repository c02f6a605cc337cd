"""The notebook flow as a user runs it, in real Jupyter kernels: 01-04 as stored (Run All), then Start.

:func:`notebook_flow_run` starts one kernel per notebook (``jupyter_client``, the kernel JupyterLab gives each
notebook), runs every code cell of 01-04 as stored, presses Start in 02, 03 and 04 (``panel.start()``, what the
button calls), then Start in 01 with the replay at ``speed``.  Trade -> Gold latency comes from the broker's append
times and a Gold reader in its own process (:mod:`.latency`); the peak RSS sums every process involved: the
broker, the shared engine (its Python and its JVM) or the kernels' own JVMs, the kernels, the reader.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from ..ops.notebooks import numbered
from .latency import GoldPoller, kafka_arrivals, latencies, stamped_topic
from .runs import RssSampler


def notebook_env(data: Path, bootstrap: str, topic: str, engine: str = "shared") -> dict[str, str]:
    """What the notebooks' kernels get: a data dir, broker and topic of the run's own, panels left to the user
    (``run_seconds = 0``), no Spark UI, the engine to use."""
    return {"LAKEHOUSE_DATA_DIR": str(data), "LAKEHOUSE_BOOTSTRAP": bootstrap, "LAKEHOUSE_TOPIC": topic,
            "LAKEHOUSE_RUN_SECONDS": "0", "LAKEHOUSE_SPARK_UI": "false", "LAKEHOUSE_ENGINE": engine}


@dataclass
class Kernel:
    """One notebook's kernel and the code it runs (outputs kept for the log)."""

    name: str
    km: Any
    kc: Any
    log: list[str] = field(default_factory=list)

    def run(self, code: str, timeout: float = 600) -> str:
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        text = "".join(out)
        self.log.append(f"In: {code[:200]}\nOut: {text[-2000:]}")
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"{self.name}: a cell failed:\n{code[:300]}\n{text[-3000:]}")
        return text

    def run_all(self, notebook: Path) -> None:
        for cell in nbformat.read(notebook, as_version=4).cells:
            if cell.cell_type == "code":
                self.run(cell.source)

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.pid)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def start_kernel(name: str, env: dict[str, str], cwd: Path) -> Kernel:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, **env}, cwd=str(cwd), startup_timeout=180)
    return Kernel(name, km, kc)


@dataclass
class NotebookFlowRun:
    engine: str
    feed: str
    peak_rss_mb: float
    rss_at_peak_mb: dict[str, float]  # each process's share of the peak (label -> MB)
    rss_highest_mb: dict[str, float]  # each label's own highest RSS over the run
    latency: dict[str, Any]
    latency_with_cold_start: dict[str, Any]
    started_s: float  # kernels launched -> every query started (Run All and Start in 02-04)
    first_bar_s: float | None  # Start in 01 -> the first bar seen by the reader
    logs: list[str]


def notebook_flow_run(root: Path, bootstrap: str, broker_pid: int | None, *, engine: str = "shared",
                      speed: str = "20", feed_seconds: float = 190.0, tail_seconds: float = 20.0,
                      warmup_s: float = 15.0) -> NotebookFlowRun:
    """01-04 in four kernels on a new data dir and topic, fed at ``speed`` for ``feed_seconds`` (see the module)."""
    from ..engine.server import EngineServer

    data = root / f"notebooks-{engine}"
    topic = f"bench.notebooks.{engine}.{int(time.time())}"
    stamped_topic(bootstrap, topic)
    env = notebook_env(data, bootstrap, topic, engine)
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    poller = GoldPoller(data / "gold", logs / f"notebooks-{engine}.polls.jsonl")
    sampler = RssSampler([poller.proc.pid] + ([broker_pid] if broker_pid else []),
                         names={poller.proc.pid: "gold reader", **({broker_pid: "broker"} if broker_pid else {})})
    notebooks = {p.name[:2]: p for p in numbered()}
    kernels: list[Kernel] = []
    server = EngineServer(data / "engine", data)
    t0 = time.time()
    try:
        for nb in ("01", "02", "03", "04"):  # a user opens each and runs it whole, in its own kernel
            kernel = start_kernel(nb, env, notebooks[nb].parent)
            kernels.append(kernel)
            sampler.names[kernel.pid] = f"kernel {nb}"
            sampler.roots.append(kernel.pid)
            kernel.run_all(notebooks[nb])
            if server.pid() is not None and server.pid() not in sampler.roots:
                sampler.names[server.pid()] = "engine"
                sampler.roots.append(server.pid())  # the shared engine, once a notebook started it
        for kernel in kernels[1:]:  # Start in 02, 03, 04
            kernel.run("panel.start()")
        started = time.time() - t0
        feed_at = time.time()
        kernels[0].run(f"panel.speed_w.value = {speed!r}\npanel.start(duration={feed_seconds})")  # Start in 01
        time.sleep(feed_seconds + tail_seconds)
        for kernel in kernels:
            kernel.run("print(panel.stop())")
    finally:
        peak = sampler.stop()
        polls = poller.stop()
        for kernel in kernels:
            (logs / f"notebooks-{engine}.{kernel.name}.log").write_text("\n\n".join(kernel.log))
            kernel.close()
        server.stop()
    arrivals = kafka_arrivals(bootstrap, topic)
    since = (arrivals["append_s"].min() + warmup_s) if warmup_s and len(arrivals) else None
    seen = [p["t"] for p in polls if p.get("counts")]
    return NotebookFlowRun(engine, f"replay x{speed}", peak, sampler.breakdown, sampler.highest,
                           latencies(arrivals, polls, since=since).summary(),
                           latencies(arrivals, polls).summary(), started,
                           (min(seen) - feed_at) if seen else None,
                           [str(p) for p in sorted(logs.glob(f"notebooks-{engine}*"))])
