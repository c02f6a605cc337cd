"""Connector jars: the one pinned list of Maven coordinates, resolved once into a local cache.

Spark gets the Kafka source and Delta as local files (``spark.jars``), the embedded broker gets
Apache Kafka's jars as its classpath, so nothing is fetched at run time.  ``resolve()`` uses the
machine's Maven (``mvn dependency:copy-dependencies``); without Maven, see README ("Jars").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SPARK_VERSION = "4.2.0"
# delta-spark 4.4.1 is on PyPI but its jars are not on Maven Central (newest there: 4.4.0), so
# Python and JVM sides are both pinned to 4.4.0 (pyproject.toml), the newest matching pair.
DELTA_VERSION = "4.4.0"
KAFKA_VERSION = "4.1.1"
SCALA = "2.13"

# group:artifact:version, per classpath.  Transitive runtime dependencies come along.
SPARK_PACKAGES: list[str] = [
    f"org.apache.spark:spark-sql-kafka-0-10_{SCALA}:{SPARK_VERSION}",
    f"io.delta:delta-spark_4.2_{SCALA}:{DELTA_VERSION}",
    f"io.delta:delta-storage:{DELTA_VERSION}",
]
KAFKA_PACKAGES: list[str] = [
    f"org.apache.kafka:kafka_{SCALA}:{KAFKA_VERSION}",
    "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",  # route the broker's slf4j logs to log4j2
]
GROUPS = {"spark": SPARK_PACKAGES, "kafka": KAFKA_PACKAGES}

REPO_ROOT = Path(__file__).resolve().parent.parent


def jar_root() -> Path:
    """The jar cache: ``$LAKEHOUSE_JARS`` or ``<repo>/.jars``."""
    return Path(os.environ.get("LAKEHOUSE_JARS", REPO_ROOT / ".jars")).resolve()


def _stamp(group: str) -> str:
    return "\n".join(GROUPS[group]) + "\n"


def jar_dir(group: str) -> Path:
    return jar_root() / group


def is_resolved(group: str) -> bool:
    stamp = jar_dir(group) / ".resolved"
    return stamp.is_file() and stamp.read_text() == _stamp(group)


def _pyspark_artifacts() -> set[str]:
    """Artifact ids already on pyspark's own classpath (never shadowed by a second copy)."""
    try:
        import pyspark
    except ImportError:  # resolving before pyspark is installed: keep everything
        return set()
    jars = Path(pyspark.__file__).parent / "jars"
    return {_artifact_of(p.name) for p in jars.glob("*.jar")}


def _artifact_of(jar_name: str) -> str:
    """``kafka-clients-3.9.1.jar`` -> ``kafka-clients`` (strip the version part)."""
    parts = jar_name[: -len(".jar")].split("-")
    for i, part in enumerate(parts):
        if part[:1].isdigit() and i > 0:
            return "-".join(parts[:i])
    return "-".join(parts)


def _pom(packages: list[str]) -> str:
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in (p.split(":") for p in packages)
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>lakehouse</groupId><artifactId>jars</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>"
    )


def resolve(group: str, *, force: bool = False, quiet: bool = False) -> Path:
    """Copy the group's jars (with runtime dependencies) into ``jar_dir(group)``; a no-op when done."""
    out = jar_dir(group)
    if is_resolved(group) and not force:
        return out
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            "Maven (mvn) is needed once to fetch the connector jars: install it (conda env from "
            "environment.yml, or your OS package), or see README 'Jars' for spark.jars.packages."
        )
    tmp = Path(tempfile.mkdtemp(prefix=f"jars-{group}-"))
    try:
        (tmp / "pom.xml").write_text(_pom(GROUPS[group]))
        staged = tmp / "out"
        cmd = [mvn, "-B", "-q", "-f", str(tmp / "pom.xml"), "dependency:copy-dependencies",
               f"-DoutputDirectory={staged}", "-DincludeScope=runtime"]
        if not quiet:
            print(f"[jars] resolving {group}: {', '.join(GROUPS[group])}", file=sys.stderr)
        # Maven's own output (with -q: its colour codes only) is shown when it fails, with what it said
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"Maven could not resolve the {group} jars (exit {done.returncode}):\n"
                               f"{(done.stdout + done.stderr)[-4000:]}")
        skip = _pyspark_artifacts() if group == "spark" else set()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for jar in sorted(staged.glob("*.jar")):
            if _artifact_of(jar.name) not in skip:
                shutil.copy2(jar, out / jar.name)
        (out / ".resolved").write_text(_stamp(group))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def jars(group: str) -> list[Path]:
    """The group's jar files, resolving them first if the cache is empty."""
    return sorted(resolve(group, quiet=True).glob("*.jar"))


def main() -> None:
    for group in GROUPS:
        out = resolve(group)
        size = sum(p.stat().st_size for p in out.glob("*.jar"))
        print(f"[jars] {group}: {len(list(out.glob('*.jar')))} jars, {size / 1e6:.1f} MB in {out}")


if __name__ == "__main__":
    main()
