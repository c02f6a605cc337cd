"""Spark's class-data archive (engine/cds.py), made by `make setup`: the driver JVM maps it; a JVM or jar set it
was not made for starts without it, silently; LAKEHOUSE_CDS=0 turns it off."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lakehouse_utils.engine import cds
from lakehouse_utils.engine.spark import INITIAL_HEAP_MB, driver_java_options
from lakehouse_utils.procs import rss_mb


def test_the_driver_jvm_maps_the_archive_made_at_setup(spark) -> None:
    path = cds.archive_path()
    assert path is not None and path.is_file(), "make setup builds it: python -m lakehouse_utils.ops.class_archive"
    jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    maps = Path(f"/proc/{jvm_pid}/maps").read_text()
    assert str(path) in maps  # the JVM mapped the archive, so it was valid for this JVM and classpath
    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert f"-XX:SharedArchiveFile={path}" in args
    # the connector jars are on the driver's own classpath (archivable), in the order the archive holds them
    classpath = spark.sparkContext._jvm.java.lang.System.getProperty("java.class.path").split(":")
    jars = [str(p) for p in cds.classpath()]
    assert classpath[: len(jars)] == jars
    # ... with the serial collector besides (spark.DRIVER_JAVA_OPTIONS): its heap grows only when it must, and
    # starts at INITIAL_HEAP_MB touched (the driver's 2g allows it): the JVM's RSS holds that much from the start
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    assert sorted(b.getName() for b in beans) == ["Copy", "MarkSweepCompact"] and "-XX:+UseSerialGC" in args
    assert f"-Xms{INITIAL_HEAP_MB}m" in args and "-XX:+AlwaysPreTouch" in args
    committed = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().totalMemory()  # less one survivor space
    assert committed >= 0.9 * (INITIAL_HEAP_MB << 20)
    assert rss_mb([jvm_pid]) > INITIAL_HEAP_MB


def test_the_drivers_initial_heap_never_passes_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAKEHOUSE_DRIVER_JAVA_OPTIONS", raising=False)
    assert driver_java_options("2g") == f"-XX:+UseSerialGC -Xms{INITIAL_HEAP_MB}m -XX:+AlwaysPreTouch"
    assert driver_java_options("512m") == "-XX:+UseSerialGC -Xms512m -XX:+AlwaysPreTouch"
    assert driver_java_options("1048576k").startswith("-XX:+UseSerialGC -Xms768m ")
    assert driver_java_options(str(600 << 20)).startswith("-XX:+UseSerialGC -Xms600m ")
    monkeypatch.setenv("LAKEHOUSE_DRIVER_JAVA_OPTIONS", " -XX:+UseG1GC ")  # replaces them, as documented
    assert driver_java_options("2g") == "-XX:+UseG1GC"


def test_an_archive_the_jvm_cannot_use_is_ignored_without_a_word(tmp_path: Path) -> None:
    path = cds.archive_path()
    assert path is not None and path.is_file()
    # another classpath than the archive's: the JVM starts, says nothing, shares only its own base classes
    result = subprocess.run(["java", *cds.java_options().split(), "-cp", str(tmp_path), "-version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "warning" not in result.stdout + result.stderr and "archive" not in result.stdout + result.stderr


def test_off_missing_or_dumping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert "-XX:SharedArchiveFile=" in cds.java_options()
    monkeypatch.setenv("LAKEHOUSE_CDS", "0")
    assert cds.java_options() == "" and cds.driver_conf() == {}
    monkeypatch.delenv("LAKEHOUSE_CDS")
    other = tmp_path / "jars"
    (other / "spark").mkdir(parents=True)
    monkeypatch.setenv("LAKEHOUSE_JARS", str(other))  # a jar cache not resolved: no key, no archive
    assert cds.archive_path() is None and cds.java_options() == ""
    monkeypatch.setenv(cds.DUMP_ENV, str(tmp_path / "x.jsa"))  # the build's child writes it at exit
    assert cds.java_options().startswith(f"-XX:ArchiveClassesAtExit={tmp_path / 'x.jsa'} ")
