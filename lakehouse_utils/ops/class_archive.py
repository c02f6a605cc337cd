"""``python -m lakehouse_utils.ops.class_archive``: build the class-data archive of Spark's driver JVM (setup).

One child process runs what a cold start runs (see :mod:`lakehouse_utils.engine.cds`): a Spark session serving
Spark Connect, as the shared engine does, its warm-up batch, and the demo on the packaged hour (embedded broker,
Kafka -> Bronze -> Silver -> Gold) in a throwaway data dir; its JVM writes the classes it loaded at exit.  About a
minute, once; an archive already made for this JVM and these jars is kept.  A failure is reported and setup goes
on: the archive only makes starts faster.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..engine import cds
from ..procs import free_port_pair


def _workload(data_dir: Path) -> None:
    """In the child: the engine's start and warm-up, then the demo until Gold has the hour; then the JVM exits."""
    from pyspark import SparkContext

    from ..config import Settings
    from ..engine.host import warm_up
    from ..engine.spark import get_spark
    from .demo import run_demo

    broker_port = free_port_pair()
    settings = Settings.from_env(data_dir=str(data_dir), bootstrap=f"127.0.0.1:{broker_port}")
    spark = get_spark(settings, connect=(free_port_pair(), secrets.token_hex(16)))
    warm_up(spark)
    run_demo(settings, source="replay", speed="max", until_drained=True, broker_port=broker_port, write_report=False)
    gateway = SparkContext._gateway
    spark.stop()
    if gateway is not None and getattr(gateway, "proc", None) is not None:
        gateway.shutdown()
        gateway.proc.stdin.close()  # the driver JVM exits when its stdin closes, writing the archive first
        gateway.proc.wait(300)


def build(force: bool = False) -> Path | None:
    """Make the archive for this JVM and jars (unless it exists); returns its path, or None when it cannot."""
    path = cds.archive_path()
    if path is None:
        print("[cds] no archive: java, pyspark or the connector jars are missing", file=sys.stderr)
        return None
    if path.is_file() and not force:
        print(f"[cds] class-data archive present: {path.name} ({path.stat().st_size / 1e6:.0f} MB)")
        return path
    part = path.with_suffix(".part")
    part.unlink(missing_ok=True)
    data = Path(tempfile.mkdtemp(prefix="lakehouse-cds-"))
    t0 = time.monotonic()
    print("[cds] building the class-data archive of Spark's JVM (the demo, once; about a minute) ...", flush=True)
    try:
        result = subprocess.run([sys.executable, "-m", "lakehouse_utils.ops.class_archive", "--dump", str(data)],
                                env={**os.environ, cds.DUMP_ENV: str(part)}, capture_output=True, text=True,
                                timeout=900)
        if result.returncode != 0 or not part.is_file() or part.stat().st_size == 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            print(f"[cds] not built (exit {result.returncode}); Spark starts without it (try again: python -m "
                  f"lakehouse_utils.ops.class_archive). Its output:\n{tail}", file=sys.stderr)
            part.unlink(missing_ok=True)
            return None
    except subprocess.TimeoutExpired:
        print("[cds] not built: the run took over 15 minutes; Spark starts without it", file=sys.stderr)
        part.unlink(missing_ok=True)
        return None
    finally:
        shutil.rmtree(data, ignore_errors=True)
    part.rename(path)
    for old in path.parent.glob("spark-classes-*.jsa"):  # archives of another JVM or jar set: never used again
        if old != path:
            old.unlink(missing_ok=True)
    print(f"[cds] class-data archive built in {time.monotonic() - t0:.0f}s: {path} "
          f"({path.stat().st_size / 1e6:.0f} MB)")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lakehouse_utils.ops.class_archive", description=__doc__)
    ap.add_argument("--force", action="store_true", help="build again even if the archive exists")
    ap.add_argument("--dump", metavar="DATA_DIR", help=argparse.SUPPRESS)  # the child's side
    args = ap.parse_args(argv)
    if args.dump:
        _workload(Path(args.dump))
        return 0
    build(force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
