"""Execute the numbered notebooks in order: with papermill (``make notebooks``) or as stored, under nbval (CI).

papermill: each notebook gets the same ``data_dir`` and ``bootstrap`` and a bounded ``run_seconds`` injected, so
the whole flow (ingest the bundled hour, Bronze, Silver, Gold, charts) runs unattended; executed copies with
their outputs land in ``<out_dir>``.

nbval (``make nbval``, ``tests/test_notebooks.py``): the notebooks run as they are in git, in order, each in its
own kernel. Their parameters default from ``LAKEHOUSE_*`` variables (``bounded_env``: a bounded run on a new data
dir and a new topic), and each cell marked ``# NBVAL_CHECK_OUTPUT`` must print exactly the output stored in it:
what the bundled hour gives (counts, offsets, the hour bar, the last bar). Only those cells keep outputs in git;
``--store-checked`` runs the notebooks the same way and stores them again after a deliberate change.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
CHECK_MARK = "NBVAL_CHECK_OUTPUT"


def numbered(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def run_notebooks(data_dir: str | Path, out_dir: str | Path, bootstrap: str | None = None,
                  run_seconds: int = 300, only: list[str] | None = None, kernel: str = "python3",
                  parameters: dict | None = None) -> list[Path]:
    """Run each numbered notebook (or those whose name starts with one of ``only``); returns the outputs."""
    import papermill as pm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in numbered():
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        t0 = time.monotonic()
        print(f"[notebooks] {nb.name} ...", file=sys.stderr, flush=True)
        out = out_dir / nb.name
        pm.execute_notebook(
            str(nb), str(out), kernel_name=kernel, cwd=str(nb.parent), progress_bar=False,
            parameters={"data_dir": str(Path(data_dir).resolve()), "bootstrap": bootstrap,
                        "run_seconds": run_seconds, **(parameters or {})},
        )
        print(f"[notebooks] {nb.name} done in {time.monotonic() - t0:.0f}s -> {out}", file=sys.stderr)
        done.append(out)
    return done


# -- nbval: the notebooks as stored --------------------------------------------------------------
def is_checked(cell: Mapping) -> bool:
    """Is this a code cell whose output nbval compares (a ``# NBVAL_CHECK_OUTPUT`` comment line, as nbval reads it)?"""
    return cell.get("cell_type") == "code" and any(
        line.strip().startswith("#") and line.strip().lstrip("#").strip() == CHECK_MARK
        for line in cell.get("source", "").splitlines())


def bounded_env(data_dir: str | Path, bootstrap: str, topic: str, run_seconds: int = 240,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a bounded run of the notebooks as stored: each parameter from its ``LAKEHOUSE_*``.

    The caller's ``LAKEHOUSE_<Settings field>`` variables are dropped first, so nothing of another data dir or
    topic leaks in; knobs that are not Settings fields (``LAKEHOUSE_JARS``, ``LAKEHOUSE_DRIVER_MEMORY``) stay.
    """
    base = os.environ if base is None else base
    settings_vars = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    env = {k: v for k, v in base.items() if k not in settings_vars}
    env.update({
        ENV_PREFIX + "RUN_SECONDS": str(run_seconds),
        ENV_PREFIX + "DATA_DIR": str(Path(data_dir).resolve()),
        ENV_PREFIX + "BOOTSTRAP": bootstrap,  # the notebooks start no broker of their own
        ENV_PREFIX + "TOPIC": topic,
        ENV_PREFIX + "ALERTS_TOPIC": f"{topic}.alerts",
        ENV_PREFIX + "SPARK_UI": "false",
    })
    return env


@contextmanager
def bounded(data_dir: str | Path, bootstrap: str | None = None, topic: str | None = None,
            run_seconds: int = 240) -> Iterator[dict[str, str]]:
    """``bounded_env`` on a new ``data_dir`` and a new topic (default ``nbval.<random>``).

    With no ``bootstrap``, an embedded broker on a free port under ``data_dir/kafka`` serves the run and stops
    on exit (the one of ``make demo`` on port 19092 is left alone).
    """
    from ..engine.server import EngineServer
    from ..kafka.broker import LocalKafka
    from ..procs import free_port_pair

    data_dir = Path(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(f"{data_dir} is not empty: the checked outputs are those of a first run on a new data dir")
    broker = None
    if bootstrap is None:
        broker = LocalKafka(data_dir / "kafka", free_port_pair()).start()
        bootstrap = broker.bootstrap
    try:
        yield bounded_env(data_dir, bootstrap, topic or f"nbval.{uuid.uuid4().hex[:8]}", run_seconds)
    finally:
        EngineServer(data_dir / "engine", data_dir).stop()  # the shared engine the notebooks started, if any
        if broker is not None:
            broker.stop()


def nbval_command(notebooks: list[Path] | None = None, junit: str | Path | None = None) -> list[str]:
    """``pytest --nbval-lax`` on the notebooks in order, in this interpreter's kernel (``--nbval-current-env``)."""
    return [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
            *(["--junitxml", str(junit)] if junit else []),
            *(str(p) for p in (numbered() if notebooks is None else notebooks))]


def run_nbval(data_dir: str | Path, bootstrap: str | None = None, topic: str | None = None,
              run_seconds: int = 240, notebooks: list[Path] | None = None, junit: str | Path | None = None,
              capture: bool = False) -> subprocess.CompletedProcess:
    """nbval on the numbered notebooks as stored (see ``bounded``); returns the finished pytest process."""
    with bounded(data_dir, bootstrap, topic, run_seconds) as env:
        return subprocess.run(nbval_command(notebooks, junit), cwd=ROOT, env=env, capture_output=capture,
                              text=True, check=False)


def store_checked_outputs(env: Mapping[str, str], notebooks: list[Path] | None = None,
                          kernel: str = "python3", timeout: int = 600) -> dict[str, int]:
    """Run each notebook as stored with ``env`` (nbclient), then save it with outputs in its checked cells only.

    Every other cell loses its outputs and execution count. A checked cell that prints to stderr, raises or
    prints nothing is refused: nbval would compare that too. Returns the checked cells per notebook.
    """
    import nbformat
    from nbclient import NotebookClient

    stored = {}
    for path in numbered() if notebooks is None else notebooks:
        nb = nbformat.read(path, as_version=4)
        run = nbformat.from_dict(nb)
        print(f"[nbval] {path.name} ...", file=sys.stderr, flush=True)
        NotebookClient(run, kernel_name=kernel, timeout=timeout, record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute(env=dict(env))
        for i, (cell, ran) in enumerate(zip(nb.cells, run.cells, strict=True)):
            if cell.cell_type != "code":
                continue
            if not is_checked(cell):
                cell.outputs, cell.execution_count = [], None
                continue
            outputs = _coalesce(ran.outputs)
            bad = [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
            if bad or not outputs:
                raise RuntimeError(f"{path.name} cell {i}: a checked cell must print to stdout only, got {bad}")
            cell.outputs, cell.execution_count = outputs, ran.execution_count
        nbformat.write(nb, path)
        stored[path.name] = sum(map(is_checked, nb.cells))
    return stored


def _coalesce(outputs: list) -> list:
    """Consecutive stream outputs of the same stream as one (how nbval compares them)."""
    merged: list = []
    for o in outputs:
        if o.output_type == "stream" and merged and merged[-1].output_type == "stream" and \
                merged[-1].name == o.name:
            merged[-1].text += o.text
        else:
            merged.append(o)
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--out", default=None, help="executed copies (default <data-dir>/executed)")
    ap.add_argument("--bootstrap", default=None, help="default: the embedded broker under --data-dir")
    ap.add_argument("--run-seconds", type=int, default=None, help="bound of each run (default 300, nbval 240)")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--stop-broker", action="store_true",
                    help="stop the embedded broker and the shared engine afterwards")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--nbval", action="store_true",
                      help="run the notebooks as stored under nbval on a new <data-dir>/nbval and a new topic")
    mode.add_argument("--store-checked", action="store_true",
                      help="run them the same way, then store the outputs of their checked cells (and clear the rest)")
    args = ap.parse_args(argv)
    if args.nbval or args.store_checked:
        notebooks = [p for p in numbered() if not args.only or any(p.name.startswith(o) for o in args.only)]
        data_dir = Path(args.data_dir) / "nbval"
        shutil.rmtree(data_dir, ignore_errors=True)
        if args.nbval:
            return run_nbval(data_dir, args.bootstrap, run_seconds=args.run_seconds or 240,
                             notebooks=notebooks).returncode
        with bounded(data_dir, args.bootstrap, run_seconds=args.run_seconds or 240) as env:
            print(store_checked_outputs(env, notebooks))
        return 0
    try:
        run_notebooks(args.data_dir, args.out or Path(args.data_dir) / "executed", args.bootstrap,
                      args.run_seconds or 300, args.only)
    finally:
        if args.stop_broker:  # and the shared engine the notebooks started (make notebooks ends with nothing running)
            from ..engine.server import EngineServer
            from ..kafka.broker import LocalKafka

            EngineServer(Path(args.data_dir) / "engine", args.data_dir).stop()
            if args.bootstrap is None:
                LocalKafka(Path(args.data_dir) / "kafka").stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
