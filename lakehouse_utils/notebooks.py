"""Execute the numbered notebooks in order with papermill (``make notebooks``, CI).

Each notebook gets the same ``data_dir`` and ``bootstrap`` and a bounded ``run_seconds``, so the whole
flow (ingest the bundled hour, Bronze, Silver, Gold, charts) runs unattended; executed copies with their
outputs land in ``<out_dir>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--out", default=None, help="executed copies (default <data-dir>/executed)")
    ap.add_argument("--bootstrap", default=None, help="default: the embedded broker under --data-dir")
    ap.add_argument("--run-seconds", type=int, default=300)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--stop-broker", action="store_true", help="stop the embedded broker afterwards")
    args = ap.parse_args(argv)
    try:
        run_notebooks(args.data_dir, args.out or Path(args.data_dir) / "executed", args.bootstrap,
                      args.run_seconds, args.only)
    finally:
        if args.stop_broker and args.bootstrap is None:
            from .broker import LocalKafka

            LocalKafka(Path(args.data_dir) / "kafka").stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
