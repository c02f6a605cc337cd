"""Kafka client settings (issue 10, part 4), without a broker: Settings -> librdkafka config and Spark options,
properties files, precedence, validation, and the password never shown."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from lakehouse_utils.config import Secret, Settings
from lakehouse_utils.kafka.kafka_conf import KafkaConnection, client_config, connection, read_properties, spark_options

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "s3cr3t-Pa55word-xyz"
SECURE_ENV = {
    "LAKEHOUSE_BOOTSTRAP": "kafka.example.com:9093",
    "LAKEHOUSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "LAKEHOUSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "LAKEHOUSE_KAFKA_SASL_USERNAME": "alice",
    "LAKEHOUSE_KAFKA_SASL_PASSWORD": PASSWORD,
    "LAKEHOUSE_KAFKA_SSL_CA_LOCATION": "/etc/kafka/ca.pem",
}


def test_env_vars_become_librdkafka_and_spark_settings() -> None:
    settings = Settings.from_env(SECURE_ENV)
    assert client_config(settings) == {
        "bootstrap.servers": "kafka.example.com:9093", "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": PASSWORD,
        "ssl.ca.location": "/etc/kafka/ca.pem", "ssl.endpoint.identification.algorithm": "https"}
    assert spark_options(settings) == {
        "kafka.bootstrap.servers": "kafka.example.com:9093", "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                                  f'username="alice" password="{PASSWORD}";',
        "kafka.ssl.truststore.type": "PEM", "kafka.ssl.truststore.location": "/etc/kafka/ca.pem",
        "kafka.ssl.endpoint.identification.algorithm": "https"}


def test_plain_over_plaintext_and_the_unsecured_default() -> None:
    settings = Settings.from_env({"LAKEHOUSE_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
                                  "LAKEHOUSE_KAFKA_SASL_USERNAME": 'we"ird', "LAKEHOUSE_KAFKA_SASL_PASSWORD": 'p"w\\x'})
    options = spark_options(settings)
    assert options["kafka.sasl.mechanism"] == "PLAIN"  # the default mechanism
    assert options["kafka.sasl.jaas.config"] == ('org.apache.kafka.common.security.plain.PlainLoginModule required '
                                                 'username="we\\"ird" password="p\\"w\\\\x";')
    assert not any(k.startswith("kafka.ssl") for k in options)
    assert client_config(Settings()) == {"bootstrap.servers": "127.0.0.1:19092"}
    assert spark_options("h:1") == {"kafka.bootstrap.servers": "h:1"}
    assert client_config("h:1", **{"group.id": "g"}) == {"bootstrap.servers": "h:1", "group.id": "g"}


def test_password_is_masked_everywhere_settings_are_shown() -> None:
    settings = Settings.from_env({**SECURE_ENV, "LAKEHOUSE_KAFKA_SSL_KEY_PASSWORD": "keypass-987"})
    assert isinstance(settings.kafka_sasl_password, Secret)
    shown = [repr(settings), str(settings), f"{settings}", f"{settings.kafka_sasl_password}",
             json.dumps(asdict(settings), default=str), repr(connection(settings)), connection(settings).describe()]
    for text in shown:
        assert PASSWORD not in text and "keypass-987" not in text
    assert "kafka_sasl_password=Secret('***')" in repr(settings)
    assert connection(settings).describe() == ("kafka.example.com:9093 (SASL_SSL, SCRAM-SHA-512 as alice, "
                                               "CA /etc/kafka/ca.pem)")
    assert connection(settings).redact(f"boom {PASSWORD} keypass-987") == "boom *** ***"
    assert Settings(kafka_sasl_password=PASSWORD).kafka_sasl_password.reveal() == PASSWORD  # str accepted
    # the client configurations built from them: the values go to the clients, a repr shows ***
    from lakehouse_utils.kafka.trade_producer import TradeProducer

    plain = {k: v for k, v in SECURE_ENV.items() if "SSL_CA" not in k}  # the CA above is not a file here
    producer = TradeProducer(Settings.from_env({**plain, "LAKEHOUSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}), "t",
                             ensure_topics=False)
    try:
        configs = [client_config(settings), spark_options(settings), producer.config, client_config(settings).copy(),
                   client_config(settings) | {"group.id": "g"}]
        assert producer.config["sasl.password"] == PASSWORD and "***" in repr(producer.config)
        for conf in configs:
            for text in (repr(conf), str(conf), f"{conf}", f"{conf!r}", repr([conf])):
                assert PASSWORD not in text and "keypass-987" not in text, text
        assert "'kafka.sasl.jaas.config': '***'" in repr(spark_options(settings))
    finally:
        producer.close(timeout=1)


def test_properties_file_java_spelling_with_env_on_top(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("# a Java client file\nsecurity.protocol = SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\n"
                     "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
                     f'    username="bob" password="{PASSWORD}";\n'
                     "ssl.truststore.type=PEM\nssl.truststore.location=/x/ca.pem\n"
                     "ssl.endpoint.identification.algorithm=\n")
    c = connection(Settings.from_env({"LAKEHOUSE_KAFKA_PROPERTIES": str(props)}))
    assert (c.security_protocol, c.sasl_mechanism, c.sasl_username) == ("SASL_SSL", "SCRAM-SHA-256", "bob")
    assert c.sasl_password.reveal() == PASSWORD and c.ssl_ca_location == Path("/x/ca.pem")
    assert client_config(c)["ssl.endpoint.identification.algorithm"] == "none"
    assert spark_options(c)["kafka.ssl.endpoint.identification.algorithm"] == ""
    # LAKEHOUSE_KAFKA_* variables (and flags) win over the file
    c2 = connection(Settings.from_env({"LAKEHOUSE_KAFKA_PROPERTIES": str(props),
                                       "LAKEHOUSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                                       "LAKEHOUSE_KAFKA_SASL_PASSWORD": "other"}))
    assert c2.sasl_mechanism == "SCRAM-SHA-512" and c2.sasl_password.reveal() == "other" and c2.sasl_username == "bob"


def test_properties_file_librdkafka_spelling(tmp_path: Path) -> None:
    props = tmp_path / "rdkafka.properties"
    props.write_text(f"security.protocol=SASL_PLAINTEXT\nsasl.mechanisms=PLAIN\nsasl.username=carol\n"
                     f"sasl.password={PASSWORD}\n! comment\n\nbootstrap.servers=127.0.0.1:19092\n")
    assert read_properties(props)["sasl.password"] == PASSWORD
    conf = client_config(Settings(kafka_properties=props))
    assert conf["sasl.username"] == "carol" and conf["sasl.password"] == PASSWORD and conf["sasl.mechanism"] == "PLAIN"


@pytest.mark.parametrize(("lines", "message"), [
    (f"security.protocol=SASL_SSL\nsasl.password={PASSWORD}\nfetch.max.bytes=1\n", "unsupported Kafka settings"),
    ("security.protocol=SSL\nssl.truststore.location=/x/truststore.jks\n", "must be a PEM file"),
    ("security.protocol=SASL_SSL\nsasl.username=alice\n", "needs a password: set LAKEHOUSE_KAFKA_SASL_PASSWORD"),
    (f"sasl.username=alice\nsasl.password={PASSWORD}\n", "security protocol is PLAINTEXT"),
    (f"security.protocol=SASL_SSL\nsasl.mechanism=GSSAPI\nsasl.username=a\nsasl.password={PASSWORD}\n",
     "SASL mechanism 'GSSAPI'"),
    ("security.protocol=TLS\n", "security protocol 'TLS'"),
])
def test_bad_settings_are_clear_errors_without_the_password(tmp_path: Path, lines: str, message: str) -> None:
    props = tmp_path / "bad.properties"
    props.write_text(lines)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        connection(Settings(kafka_properties=props))
    assert PASSWORD not in str(err.value)


def test_mutual_tls_client_certificate() -> None:
    c = KafkaConnection("h:1", "SSL", ssl_ca_location=Path("/ca.pem"), ssl_certificate_location=Path("/c.pem"),
                        ssl_key_location=Path("/k.pem"), ssl_key_password=Secret("kp"))
    conf = client_config(c)
    assert (conf["ssl.certificate.location"], conf["ssl.key.location"], conf["ssl.key.password"]) == \
           ("/c.pem", "/k.pem", "kp")
    with pytest.raises(ValueError, match="needs its key"):
        KafkaConnection("h:1", "SSL", ssl_certificate_location=Path("/c.pem"))


BARE_HELPER_CALL = (r"(ensure_topic|delete_topics|end_offsets|last_messages|TradeProducer)"
                    r"\(\s*(self\.)?settings\.bootstrap\b")


def test_no_client_is_configured_outside_kafka_conf() -> None:
    """Every Kafka client of the package and the notebooks gets its settings from kafka_conf."""
    offenders = []
    for path in [*ROOT.glob("lakehouse_utils/**/*.py"), *ROOT.glob("notebooks/*.ipynb")]:
        if path.name == "kafka_conf.py":
            continue
        text = path.read_text()
        if re.search(r"""["'](kafka\.)?bootstrap\.servers["']""", text) or re.search(BARE_HELPER_CALL, text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
