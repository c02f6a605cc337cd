"""Class-data sharing for Spark's driver JVM: the classes a run loads, archived once, mapped at every start.

A cold Spark JVM spends seconds loading and verifying classes (Spark's, Delta's, Kafka's, Spark Connect's) before
its first batch.  ``make setup`` runs the demo once in a JVM started with ``-XX:ArchiveClassesAtExit``
(``python -m lakehouse_utils.ops.class_archive``); every later driver started by
:func:`~lakehouse_utils.engine.spark.get_spark` maps that archive (``-XX:SharedArchiveFile``) and skips that work.

The archive is only valid for the JVM and the classpath it was made with, so its file name carries a key of both
(the ``java`` binary, pyspark's jars, the connector jars): a new JDK or jar set finds no archive and starts as it
did before, and the JVM itself ignores an archive it cannot use, without a word (``-Xlog:cds=off``).
``LAKEHOUSE_CDS=0`` turns it off.  The Kafka and Delta jars go on the driver's classpath too
(``spark.driver.extraClassPath``, as well as ``spark.jars``), since only classes of the JVM's own class loaders
can be archived.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from .. import jars

DUMP_ENV = "LAKEHOUSE_CDS_DUMP"  # set by the archive's build: the JVM writes the archive there at exit
_QUIET = "-Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off"


def _java() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    java = Path(home, "bin", "java") if home else (Path(found) if (found := shutil.which("java")) else None)
    return java.resolve() if java is not None and java.exists() else None


def _pyspark_jars() -> Path | None:
    try:
        import pyspark
    except ImportError:
        return None
    return Path(pyspark.__file__).parent / "jars"


def key() -> str | None:
    """What the archive depends on, hashed: the JVM, and each jar of the driver's classpath (name, size)."""
    java, spark_jars = _java(), _pyspark_jars()
    if java is None or spark_jars is None or not jars.is_resolved("spark"):
        return None
    h = hashlib.sha256(f"{java}:{java.stat().st_size}:{java.stat().st_mtime_ns}".encode())
    for jar in [*sorted(spark_jars.glob("*.jar")), *classpath()]:
        h.update(f"{jar.name}:{jar.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def classpath() -> list[Path]:
    """The connector jars, in the order they go on the driver's classpath."""
    return sorted(jars.jar_dir("spark").glob("*.jar"))


def archive_path() -> Path | None:
    k = key()
    return jars.jar_root() / f"spark-classes-{k}.jsa" if k else None


def enabled() -> bool:
    return os.environ.get("LAKEHOUSE_CDS", "1").strip().lower() not in ("0", "false", "no", "off")


def java_options() -> str:
    """The driver's JVM options for the archive: map it when it exists, write it when building it, else none."""
    dump = os.environ.get(DUMP_ENV)
    if dump:
        return f"-XX:ArchiveClassesAtExit={dump} -Xlog:cds=off -Xlog:cds+dynamic=off"
    path = archive_path() if enabled() else None
    return f"-XX:SharedArchiveFile={path} {_QUIET}" if path is not None and path.is_file() else ""


def driver_conf() -> dict[str, str]:
    """Spark confs for a local driver: the archive's JVM options and the classpath it was made with."""
    options = java_options()
    if not options:
        return {}
    return {"spark.driver.extraJavaOptions": options,
            "spark.driver.extraClassPath": os.pathsep.join(str(p) for p in classpath())}


__all__ = ["DUMP_ENV", "archive_path", "classpath", "driver_conf", "enabled", "java_options", "key"]
