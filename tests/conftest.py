"""Shared fixtures: one real embedded Kafka broker and one real SparkSession per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.procs import free_port_pair


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), free_port_pair())
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
    return Settings(data_dir=tmp_path / "data", bootstrap=kafka.bootstrap, topic=topic, spark_ui=False)


@pytest.fixture(scope="session")
def hour(tmp_path_factory: pytest.TempPathFactory, kafka: LocalKafka, spark):
    """The bundled real hour through ``run_demo --until-drained`` once per session: (settings, result).

    Tests may read its tables; only test_pipeline's second-run test writes again (it leaves Silver and
    Gold unchanged by design).
    """
    from lakehouse_utils.ops.demo import run_demo

    settings = Settings(data_dir=tmp_path_factory.mktemp("hour") / "data", bootstrap=kafka.bootstrap,
                        topic=f"hour.{uuid.uuid4().hex[:8]}", spark_ui=False)
    return settings, run_demo(settings, start_broker=False, until_drained=True)
