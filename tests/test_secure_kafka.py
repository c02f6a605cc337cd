"""Secured brokers end to end (issue 10, part 4): the embedded broker with a SASL_SSL listener (test CA made
here) and one with SASL_PLAINTEXT; trades go in through `lakehouse ingest`, Bronze reads them with Spark's
Kafka source, admin and offset helpers work through the same settings, all configured from LAKEHOUSE_KAFKA_*
variables or a properties file; a wrong password fails fast and clearly; the password is never shown."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from deltalake import DeltaTable

from lakehouse_utils.config import Settings
from lakehouse_utils.kafka.broker import LocalKafka
from lakehouse_utils.kafka.broker_security import BrokerSecurity
from lakehouse_utils.kafka.kafka_conf import KafkaSecurityError, spark_options
from lakehouse_utils.kafka.tls import make_test_ca
from lakehouse_utils.kafka.topics import end_offsets
from lakehouse_utils.ops.cli import main
from lakehouse_utils.procs import free_port_pair

pytestmark = pytest.mark.slow

ALICE = f"alice-{uuid.uuid4().hex}"  # unique strings: found in captured output only if leaked
BOB = f"bob-{uuid.uuid4().hex}"
N = 300


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, Path]]:
    root = tmp_path_factory.mktemp("tls")
    ca = make_test_ca(root / "ca")
    security = BrokerSecurity("SASL_SSL", users={"alice": ALICE}, keystore=ca.broker_keystore, ca=ca.ca)
    with LocalKafka(root / "kafka", free_port_pair(), security=security) as broker:
        yield broker, ca.ca


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    root = tmp_path_factory.mktemp("sasl")
    security = BrokerSecurity("SASL_PLAINTEXT", users={"alice": ALICE, "bob": BOB})
    with LocalKafka(root / "kafka", free_port_pair(), security=security) as broker:
        yield broker


def secured_round_trip(spark, bootstrap: str, data: Path, topic: str, capfd: pytest.CaptureFixture[str],
                       caplog: pytest.LogCaptureFixture, props: Path | None = None) -> Settings:
    """ingest N synthetic trades, list and peek at the topic, Bronze until drained: all through the CLI."""
    extra = ["--kafka-properties", str(props)] if props else []
    common = ["--bootstrap", bootstrap, "--topic", topic, "--data-dir", str(data), *extra]
    caplog.set_level(logging.INFO)
    t0 = time.monotonic()
    assert main(["ingest", "--source", "synthetic", "--pair", "BTC/USD", "--n-trades", str(N), *common]) == 0
    assert main(["topic", "list", *common]) == 0
    assert main(["topic", "consume", "-n", "2", *common]) == 0
    assert main(["bronze", *common, "--available-now"]) == 0
    out = capfd.readouterr()
    print(f"secured round trip: {time.monotonic() - t0:.1f}s")
    lines = out.out.splitlines()
    assert f"{topic}\tpartitions=1" in lines and f"{topic}.dlq\tpartitions=1" in lines  # admin via the settings
    assert sum(line.startswith(f"{topic}[0]@") for line in lines) == 2  # the consumer helper too
    assert "delivered" in out.out and "bronze: stopped" in out.err
    captured = out.out + out.err + "\n".join(r.getMessage() for r in caplog.records)
    assert ALICE not in captured and BOB not in captured
    return Settings.from_env(bootstrap=bootstrap, topic=topic, data_dir=data, kafka_properties=props)


def assert_bronze_holds_exactly_the_topic(settings: Settings) -> None:
    assert end_offsets(settings, settings.topic) == {0: N}  # the offset helper, with the credentials
    bronze = DeltaTable(str(settings.bronze)).to_pandas()
    assert len(bronze) == N
    assert sorted(bronze["offset"]) == list(range(N)) and set(bronze["topic"]) == {settings.topic}
    assert all(json.loads(v)["symbol"] == "BTC/USD" for v in bronze["value_raw"])


def assert_no_file_holds(folder: Path, *secrets: str) -> None:
    """Checkpoints, tables and reports under ``folder`` never store a password."""
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s.encode() in data for s in secrets), path


def test_sasl_plain_over_tls_from_env_vars(tls_broker, spark, topic: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capfd, caplog) -> None:
    broker, ca = tls_broker
    for key, value in {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "alice",
                       "SASL_PASSWORD": ALICE, "SSL_CA_LOCATION": str(ca)}.items():
        monkeypatch.setenv(f"LAKEHOUSE_KAFKA_{key}", value)
    settings = secured_round_trip(spark, broker.bootstrap, tmp_path / "data", topic, capfd, caplog)
    options = spark_options(settings)
    assert options["kafka.ssl.truststore.location"] == str(ca)
    assert "PlainLoginModule" in options["kafka.sasl.jaas.config"]
    assert_bronze_holds_exactly_the_topic(settings)
    assert_no_file_holds(settings.data_dir, ALICE)
    # Spark's plan of the secured source shows no password (what the UI's SQL tab and explain() print)
    from lakehouse_utils.layers.bronze import read_kafka

    plan = read_kafka(spark, settings)._jdf.queryExecution().toString()
    assert "KafkaSourceProvider" in plan or "kafka" in plan.lower()
    assert ALICE not in plan

    # the same broker without the CA: a TLS error naming the broker, at once, not a hang
    monkeypatch.delenv("LAKEHOUSE_KAFKA_SSL_CA_LOCATION")
    t0 = time.monotonic()
    with pytest.raises(KafkaSecurityError, match=rf"TLS failed \(SASL_SSL handshake\) at broker {broker.bootstrap}"):
        end_offsets(Settings.from_env(bootstrap=broker.bootstrap), topic, timeout=30)
    assert time.monotonic() - t0 < 15


def test_scram_sha_512_from_a_properties_file_and_a_wrong_password(sasl_broker, spark, topic: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, capfd,
                                                                   caplog) -> None:
    props = tmp_path / "client.properties"  # Java spelling, as a Kafka distribution's client config
    props.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
                     "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                     f'username="bob" password="{BOB}";\n')
    for key in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD", "SSL_CA_LOCATION"):
        monkeypatch.delenv(f"LAKEHOUSE_KAFKA_{key}", raising=False)
    settings = secured_round_trip(spark, sasl_broker.bootstrap, tmp_path / "data", topic, capfd, caplog, props)
    assert "ScramLoginModule" in spark_options(settings)["kafka.sasl.jaas.config"]
    assert_bronze_holds_exactly_the_topic(settings)
    assert_no_file_holds(settings.data_dir, BOB)

    # a wrong password (from the environment, over the file): clear and quick, without the password
    wrong = f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("LAKEHOUSE_KAFKA_SASL_PASSWORD", wrong)
    common = ["--bootstrap", sasl_broker.bootstrap, "--topic", topic, "--kafka-properties", str(props)]
    t0 = time.monotonic()
    assert main(["ingest", "--source", "synthetic", "--n-trades", "5", *common]) == 2
    assert main(["topic", "list", *common]) == 2
    elapsed = time.monotonic() - t0
    out = capfd.readouterr()
    expected = f"Kafka authentication failed (SASL SCRAM-SHA-512 as user 'bob') at broker {sasl_broker.bootstrap}"
    assert expected in out.out and f"error: {expected}" in out.err
    assert elapsed < 20, elapsed
    text = out.out + out.err + "\n".join(r.getMessage() for r in caplog.records)
    assert wrong not in text and BOB not in text
    assert end_offsets(settings, topic) == {0: N}  # nothing was written with the wrong password
    # Spark's Kafka source refuses too: the job ends with exit code 1 and the broker's reason, not a hang
    t0 = time.monotonic()
    assert main(["bronze", *common, "--data-dir", str(tmp_path / "data2"), "--available-now"]) == 1
    elapsed = time.monotonic() - t0
    out = capfd.readouterr()
    assert "bronze: stopped with error" in out.err and "SaslAuthenticationException" in out.err
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in out.err
    assert elapsed < 60, elapsed
    assert wrong not in out.out + out.err and BOB not in out.out + out.err
    time.sleep(2.5)  # the engine's watcher looks every second: a refused login is not restarted, the job is over
    assert [q.name for q in spark.streams.active] == []


def test_mutual_tls_end_to_end_and_a_client_without_a_certificate(tmp_path: Path, spark, topic: str,
                                                                  monkeypatch: pytest.MonkeyPatch, capfd,
                                                                  caplog) -> None:
    """A broker that requires a client certificate (ssl.client.auth=required): the producer, the admin and offset
    helpers, the consumer and Spark's Kafka source all show the CA-signed client certificate from the settings;
    a client without one is refused at once, with one line naming the broker."""
    ca = make_test_ca(tmp_path / "ca")
    security = BrokerSecurity("SSL", keystore=ca.broker_keystore, ca=ca.ca, client_auth=True,
                              client_cert=ca.client_cert, client_key=ca.client_key)
    assert security.server_properties(1)["ssl.client.auth"] == "required"
    with LocalKafka(tmp_path / "kafka", free_port_pair(), security=security) as broker:
        for key, value in {"SECURITY_PROTOCOL": "SSL", "SSL_CA_LOCATION": str(ca.ca),
                           "SSL_CERTIFICATE_LOCATION": str(ca.client_cert), "SSL_KEY_LOCATION": str(ca.client_key),
                           }.items():
            monkeypatch.setenv(f"LAKEHOUSE_KAFKA_{key}", value)
        for key in ("SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD"):
            monkeypatch.delenv(f"LAKEHOUSE_KAFKA_{key}", raising=False)
        settings = secured_round_trip(spark, broker.bootstrap, tmp_path / "data", topic, capfd, caplog)
        options = spark_options(settings)
        assert options["kafka.ssl.keystore.type"] == "PEM" and "PRIVATE KEY" in options["kafka.ssl.keystore.key"]
        assert "PRIVATE KEY" not in repr(options)  # the key is a secret: *** in a repr
        assert_bronze_holds_exactly_the_topic(settings)

        monkeypatch.delenv("LAKEHOUSE_KAFKA_SSL_CERTIFICATE_LOCATION")  # no client certificate: refused
        monkeypatch.delenv("LAKEHOUSE_KAFKA_SSL_KEY_LOCATION")
        t0 = time.monotonic()
        with pytest.raises(KafkaSecurityError, match=rf"TLS failed .* at broker {broker.bootstrap}"):
            end_offsets(Settings.from_env(bootstrap=broker.bootstrap), topic, timeout=30)
        assert time.monotonic() - t0 < 15


@pytest.mark.timeout(900)
def test_notebooks_on_a_secured_broker_never_show_the_password(sasl_broker, topic: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """01 and 02 as a user runs them against a SCRAM broker (the password in ``LAKEHOUSE_KAFKA_*``): the trades
    reach Bronze through the shared engine, and neither the executed notebooks (outputs and widget state) nor any
    file of the data dir (the engine's log, checkpoints, tables) holds the password."""
    from lakehouse_utils.engine.server import EngineServer
    from lakehouse_utils.ops.notebooks import bounded_env, run_notebooks

    data = tmp_path / "data"
    env = bounded_env(data, sasl_broker.bootstrap, topic, run_seconds=20)
    env.update({"LAKEHOUSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "LAKEHOUSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "LAKEHOUSE_KAFKA_SASL_USERNAME": "bob",
                "LAKEHOUSE_KAFKA_SASL_PASSWORD": BOB})
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_") and k not in ("LAKEHOUSE_JARS",)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        done = run_notebooks(data, tmp_path / "out", sasl_broker.bootstrap, run_seconds=20, only=["01", "02"])
    finally:
        EngineServer(data / "engine", data).stop()
    settings = Settings.from_env()
    offsets = end_offsets(settings, topic)
    assert offsets[0] > 100  # 01's replay went through the secured broker ...
    bronze = DeltaTable(str(data / "bronze" / "crypto_trades")).to_pandas()
    assert sorted(bronze["offset"]) == list(range(offsets[0]))  # ... and 02's Bronze read all of it, secured
    assert [p.name for p in done] == ["01_ingest.ipynb", "02_bronze.ipynb"]
    assert "delivered=" in done[0].read_text() and "Bronze" in done[1].read_text()  # their outputs are there
    for nb in done:
        assert BOB not in nb.read_text(), nb.name
    assert_no_file_holds(data, BOB)
