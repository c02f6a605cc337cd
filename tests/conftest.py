"""Shared fixtures: one real embedded Kafka broker and one real SparkSession per test session.

Every test also runs in a working directory and a default data dir of its own (``LAKEHOUSE_DATA_DIR``), and
fails if it touched the repository's ``data/`` (what ``make demo`` and a user's work leave there): a test
that passes only on a clean clone, or only after the demo, is not hermetic.
"""

from __future__ import annotations

import os
import stat
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.procs import free_port_pair

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
# what the browser tests leave for people to look at (screenshots, server logs): written there, never read back
ARTIFACTS = REPO_DATA / "executed"
_PATH_EVENTS = {"open", "os.listdir", "os.scandir", "os.mkdir", "os.remove", "os.rmdir", "os.rename",
                "os.truncate", "shutil.rmtree", "shutil.copytree", "shutil.move"}
_touched: list[str] | None = None  # while a test runs: paths under data/ that it opened, listed or changed


def _in_repo_data(path: object) -> bool:
    if isinstance(path, int) or path is None:
        return False
    try:
        full = Path(os.fsdecode(path)).absolute()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return (full == REPO_DATA or REPO_DATA in full.parents) and not (full == ARTIFACTS or ARTIFACTS in full.parents)


def _audit(event: str, args: tuple) -> None:
    if _touched is not None and event in _PATH_EVENTS and args and _in_repo_data(args[0]):
        if event == "os.mkdir" and Path(os.fsdecode(args[0])).absolute() == REPO_DATA:
            return  # data/ itself made as the artifacts' parent (a fresh clone has none): empty, nothing read
        _touched.append(f"{event} {args[0]}")


sys.addaudithook(_audit)  # this process's file access; other processes are caught by the fingerprint below


def _fingerprint() -> dict[str, tuple[int, int]]:
    """Every file under the repository's data/ (but the test artifacts): (size, mtime). A whole session's check."""
    out: dict[str, tuple[int, int]] = {}
    for root, dirs, files in os.walk(REPO_DATA):
        if Path(root) == REPO_DATA and "executed" in dirs:
            dirs.remove("executed")
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            out[os.path.join(root, name)] = (st.st_size, st.st_mtime_ns)
    return out


def _dir_times() -> dict[str, object]:
    """Every directory under data/ (but the artifacts) and its mtime: a file made, removed or renamed in it by
    any process changes it. A test's check: ~40 ms on 21,000 files after ``make bench`` (every file's stat, 0.3 s
    before and after each test, was 4-5 minutes of a ``make test``)."""
    out: dict[str, object] = {}
    try:  # data/ itself by its names: its mtime changes when the artifacts' folder is first made in it
        names = sorted(n for n in os.listdir(REPO_DATA) if n != ARTIFACTS.name)
    except OSError:
        return out
    if names:  # an empty data/ (made as the artifacts' parent) is no change
        out[str(REPO_DATA)] = names
    stack = [str(REPO_DATA / n) for n in names]
    while stack:
        path = stack.pop()
        try:
            st = os.stat(path)
            out[path] = st.st_mtime_ns
            if not stat.S_ISDIR(st.st_mode):
                continue
            with os.scandir(path) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return out


def _changed(before: dict, after: dict) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def _fail_if_touched(touched: list[str], changed: list[str], when: str) -> None:
    if touched or changed:
        pytest.fail(f"{when} touched the repository's data dir {REPO_DATA} (tests run in their own data dir):\n"
                    + "\n".join((touched + [f"changed {p}" for p in changed])[:20]))


@pytest.fixture(scope="session", autouse=True)
def repo_data_unchanged() -> Iterator[None]:
    """Every file's size and mtime at the start and the end of the session: a file another process rewrote in
    place (which no directory's mtime shows) fails the session's last test."""
    before = _fingerprint()
    yield
    _fail_if_touched([], _changed(before, _fingerprint()), "the session")


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test's own working directory and default data dir; it fails if it touched the repository's data/."""
    global _touched
    data = tmp_path / "default-data"
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    before = _dir_times()
    _touched = []
    try:
        yield data
    finally:
        touched, _touched = _touched, None
    _fail_if_touched(touched, _changed(before, _dir_times()), "the test")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    # retention looked at every 500 ms (not 5 min): a test deletes offsets by its topic's retention.ms
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), free_port_pair(),
                        config={"log.retention.check.interval.ms": "500"})
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def spark():
    from lakehouse_utils.engine.spark import get_spark

    return get_spark(Settings(spark_ui=False))


@pytest.fixture
def topic() -> str:
    return f"t.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(tmp_path: Path, kafka: LocalKafka, topic: str) -> Settings:
    # the alerts topic of the test's own too: Gold publishes alerts, and the session's broker is shared
    return Settings(data_dir=tmp_path / "data", bootstrap=kafka.bootstrap, topic=topic, spark_ui=False,
                    alerts_topic=f"{topic}.alerts")


@pytest.fixture(scope="session")
def hour(tmp_path_factory: pytest.TempPathFactory, kafka: LocalKafka, spark):
    """The bundled real hour through ``run_demo --until-drained`` once per session: (settings, result).

    Tests may read its tables; only test_pipeline's second-run test writes again (it leaves Silver and
    Gold unchanged by design).
    """
    from lakehouse_utils.ops.demo import run_demo

    topic = f"hour.{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path_factory.mktemp("hour") / "data", bootstrap=kafka.bootstrap, topic=topic,
                        spark_ui=False, alerts_topic=f"{topic}.alerts")  # not crypto.alerts: other tests' Gold too
    return settings, run_demo(settings, start_broker=False, until_drained=True)
