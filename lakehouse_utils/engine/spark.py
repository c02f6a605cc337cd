"""The one SparkSession of the process, with the Kafka source and Delta Lake enabled."""

from __future__ import annotations

import os
import socket
import sys
import threading

from pyspark.sql import SparkSession

from .. import jars
from ..config import Settings
from . import cds

_lock = threading.Lock()
_session: SparkSession | None = None


def _free_port(start: int = 4040, tries: int = 50) -> int:
    for port in range(start, start + tries):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return 0


# The local driver's JVM options besides the class-data archive's (LAKEHOUSE_DRIVER_JAVA_OPTIONS replaces them).
# Serial GC: the driver's live heap is small (~100-250 MB); G1 grew its heap by ~460 MB at a burst under CPU
# contention and kept it, the serial collector grows it only when a full collection leaves too little free
# (README: Soak). No slower in make bench's e2e and catch-up.
DRIVER_JAVA_OPTIONS = "-XX:+UseSerialGC"
# ... and the first INITIAL_HEAP_MB of the heap touched at start (capped by spark.driver.memory): the serial heap
# then starts at the size a long run settles at instead of growing into it over the first 15 minutes (30-minute
# soak: RSS growth after warm-up +113 -> +32 MB; README: Soak).
INITIAL_HEAP_MB = 768


def _mb(size: str) -> int:
    """A JVM size (``2g``, ``1536m``, ``524288k``, bytes) in MB."""
    size = size.strip().lower().removesuffix("b")
    scale = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    return int(float(size[:-1]) * scale[size[-1]]) if size and size[-1] in scale else int(size) // (1 << 20)


def driver_java_options(driver_memory: str) -> str:
    """The local driver's extra JVM options: LAKEHOUSE_DRIVER_JAVA_OPTIONS if set, else the serial collector with
    its first ``min(INITIAL_HEAP_MB, driver memory)`` MB of heap touched at start."""
    given = os.environ.get("LAKEHOUSE_DRIVER_JAVA_OPTIONS")
    if given is not None:
        return given.strip()
    initial = min(INITIAL_HEAP_MB, _mb(driver_memory))
    return f"{DRIVER_JAVA_OPTIONS} -Xms{initial}m -XX:+AlwaysPreTouch"


def get_spark(settings: Settings | None = None, app_name: str = "lakehouse",
              connect: tuple[int, str] | None = None) -> SparkSession:
    """Return the process's SparkSession, creating it on first call (later calls ignore settings).

    Kafka and Delta jars come from the local cache (``lakehouse_utils.jars``) as ``spark.jars``,
    so nothing is downloaded at run time.  Under ``spark-submit`` the submitted session is used.
    ``connect=(port, token)`` also serves Spark Connect from this driver (the shared engine): on 127.0.0.1
    (``settings.bind_host``), every client must send the token.
    """
    global _session
    settings = settings or Settings.from_env()
    with _lock:
        # Not getActiveSession(): that one is per thread, and on a foreachBatch thread it is the
        # streaming query's cloned session (with that query's confs), not the process's session.
        if _session is not None and _session.sparkContext._jsc is not None:
            return _session
        submitted = _under_spark_submit()
        if not submitted:
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.appName(app_name)
        if not submitted:  # spark-submit's --master / --conf win on a cluster
            # the layers bring each micro-batch to the driver as Arrow: a catch-up batch needs more than 1g
            memory = os.environ.get("LAKEHOUSE_DRIVER_MEMORY", "2g")
            builder = builder.config("spark.driver.memory", memory)
            # every socket of the driver on settings.bind_host (loopback by default): the RPC and block manager
            # follow bindAddress; the UI binds to SPARK_LOCAL_IP (else 0.0.0.0), read by the JVM started below
            os.environ.setdefault("SPARK_LOCAL_IP", settings.bind_host)
            builder = builder.master(settings.spark_master).config("spark.driver.bindAddress", settings.bind_host) \
                .config("spark.driver.host", "127.0.0.1" if settings.bind_host in ("0.0.0.0", "::") else
                        settings.bind_host)
        builder = (
            builder
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
            .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
            .config("spark.databricks.delta.snapshotPartitions", "2")
            .config("spark.sql.adaptive.enabled", "false")
            .config("spark.scheduler.mode", "FAIR")  # a pool per query (streaming.scheduler_pool)
            .config("spark.databricks.delta.replaceWhere.constraintCheck.enabled", "false")  # Gold's commit
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.ui.enabled", str(settings.spark_ui).lower())
        )
        driver: dict[str, str] = {}
        if not submitted and not os.environ.get("LAKEHOUSE_SKIP_JARS"):
            builder = builder.config("spark.jars", ",".join(str(p) for p in jars.jars("spark")))
            driver = cds.driver_conf()  # the class-data archive made at setup, if this JVM and jars match it
        if not submitted and (gc := driver_java_options(memory)):
            key = "spark.driver.extraJavaOptions"
            driver[key] = f"{driver.get(key, '')} {gc}".strip()
        if settings.spark_ui and not submitted:
            builder = builder.config("spark.ui.port", str(_free_port()))
        if connect is not None:
            port, token = connect
            builder = (builder.config("spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin")
                       .config("spark.connect.grpc.binding.address", settings.bind_host)
                       .config("spark.connect.grpc.binding.port", str(port))
                       .config("spark.connect.authenticate.token", token)
                       # a kernel's session left idle (a notebook open over lunch) stays usable
                       .config("spark.connect.session.manager.defaultSessionTimeout", "7d"))
        for key, value in settings.extra.items():
            if key in driver:  # the user's driver options and classpath go after the archive's
                value = f"{driver.pop(key)}{' ' if key.endswith('Options') else os.pathsep}{value}"
            builder = builder.config(key, value)
        for key, value in driver.items():
            builder = builder.config(key, value)
        if not submitted:
            _cluster_secret(settings)
        spark = _session = builder.getOrCreate()  # under spark-submit: the submitted session
        spark.sparkContext.setLogLevel(os.environ.get("LAKEHOUSE_SPARK_LOG", "ERROR"))
        url = spark.sparkContext.uiWebUrl
        if url:
            print(f"[spark] {spark.version} UI: {url}", file=sys.stderr)
        return spark


def _cluster_secret(settings: Settings) -> None:
    """A driver of a cluster that authenticates reads the cluster's secret from its properties file
    (``--properties-file``, via PYSPARK_SUBMIT_ARGS): not a ``--conf`` that ``ps`` would show. The file is
    ``LAKEHOUSE_SPARK_PROPERTIES`` if set, else the data dir's own cluster's (``lakehouse cluster start``)."""
    from .cluster import cluster_properties

    props = cluster_properties(settings, settings.spark_master)
    args = os.environ.get("PYSPARK_SUBMIT_ARGS", "pyspark-shell")
    if props and "--properties-file" not in args:
        os.environ["PYSPARK_SUBMIT_ARGS"] = f"--properties-file {props} {args}"


def _under_spark_submit() -> bool:
    """True when this Python process was launched by spark-submit (or the pyspark shell)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ
