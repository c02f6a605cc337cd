"""Kafka client configuration in one place: Settings -> librdkafka (confluent-kafka) config and Spark options.

Every Kafka client of the package is configured here: producers, consumers and admin clients through
:func:`client_config`, Spark's Kafka source through :func:`spark_options` (``kafka.``-prefixed). A
connection is a :class:`KafkaConnection`: the bootstrap servers plus security (PLAINTEXT, SSL,
SASL_PLAINTEXT, SASL_SSL; SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512; a PEM CA, optionally a client
certificate and key). It comes from ``Settings``: the ``LAKEHOUSE_KAFKA_*`` variables, over a properties
file (``--kafka-properties FILE`` / ``LAKEHOUSE_KAFKA_PROPERTIES``, Java or librdkafka spelling, kept
outside the repository). A plain ``"host:port"`` string still means an unsecured broker.

Passwords stay :class:`~lakehouse_utils.config.Secret` until a client is configured; messages built here
name the mechanism, user and broker, never the password (:meth:`KafkaConnection.redact`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from ..config import Secret, Settings

log = logging.getLogger("lakehouse_utils.kafka")
# librdkafka's log lines of the helpers' clients: errors only (a refused login is raised as KafkaSecurityError)
_rdkafka_log = logging.getLogger("lakehouse_utils.kafka.librdkafka")
if _rdkafka_log.level == logging.NOTSET:
    _rdkafka_log.setLevel(logging.ERROR)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
# properties-file key (Java or librdkafka spelling) -> KafkaConnection field
_KEYS = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.truststore.location": "ssl_ca_location",  # with ssl.truststore.type=PEM
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
}
_OTHER_KEYS = {"sasl.jaas.config", "ssl.truststore.type", "ssl.endpoint.identification.algorithm", "bootstrap.servers"}
_FIELDS = tuple(dict.fromkeys(_KEYS.values()))
_SECRETS = {"sasl_password", "ssl_key_password"}
_SECURITY_ERRORS = {KafkaError._AUTHENTICATION: "authentication", KafkaError._SSL: "TLS"}


# config keys whose values are secrets: a password, a private key, a JAAS line holding a password
SECRET_KEYS = frozenset({"sasl.password", "ssl.key.password", "sasl.jaas.config", "ssl.keystore.key",
                         "ssl.keystore.password", "ssl.truststore.password", "ssl.key.pem"})


class ClientConf(dict[str, Any]):
    """A client configuration (librdkafka's or Java's, keys bare or ``kafka.``-prefixed) that shows ``***`` for
    each secret value in its repr and str (a notebook cell, a log line, an exception's message); the values
    themselves are what the clients get."""

    def _shown(self) -> dict[str, Any]:
        return {k: ("***" if k.removeprefix("kafka.") in SECRET_KEYS and v else v) for k, v in self.items()}

    def __repr__(self) -> str:
        return repr(self._shown())

    __str__ = __repr__

    def copy(self) -> ClientConf:
        return ClientConf(self)

    def __or__(self, other: Any) -> ClientConf:
        return ClientConf({**self, **other})


class KafkaSecurityError(KafkaException):
    """The broker refused our credentials or TLS failed: retrying will not help (message has no password)."""


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: Secret | None = None
    verify_hostname: bool = True

    def __post_init__(self) -> None:
        protocol = self.security_protocol.upper()
        object.__setattr__(self, "security_protocol", protocol)
        if protocol not in PROTOCOLS:
            raise ValueError(f"Kafka security protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        if self.sasl:
            mechanism = (self.sasl_mechanism or "PLAIN").upper()
            object.__setattr__(self, "sasl_mechanism", mechanism)
            if mechanism not in LOGIN_MODULES:
                raise ValueError(f"SASL mechanism {mechanism!r}: expected one of {', '.join(LOGIN_MODULES)}")
            for name, var in (("sasl_username", "USERNAME"), ("sasl_password", "PASSWORD")):
                if not getattr(self, name):
                    raise ValueError(f"{protocol} {mechanism} needs a {var.lower()}: set LAKEHOUSE_KAFKA_SASL_{var} "
                                     f"or sasl.{var.lower()} in the --kafka-properties file")
        elif self.sasl_username or self.sasl_password:
            raise ValueError(f"a SASL username/password is set but the security protocol is {protocol}: set "
                             "LAKEHOUSE_KAFKA_SECURITY_PROTOCOL (or security.protocol) to SASL_PLAINTEXT or SASL_SSL")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("a client certificate needs its key and the other way round (ssl.certificate.location, "
                             "ssl.key.location)")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def describe(self) -> str:
        """``127.0.0.1:9093 (SASL_SSL, SCRAM-SHA-512 as alice)``: what to show a user (no password)."""
        parts = [self.security_protocol]
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username}")
        if self.tls and self.ssl_ca_location:
            parts.append(f"CA {self.ssl_ca_location}")
        return f"{self.bootstrap} ({', '.join(parts)})"

    def redact(self, text: str) -> str:
        """``text`` with every password of this connection replaced by ``***``."""
        for secret in (self.sasl_password, self.ssl_key_password):
            if secret:
                text = text.replace(secret.reveal(), "***")
        return text

    # -- librdkafka ----------------------------------------------------------------------------
    def librdkafka(self) -> ClientConf:
        conf = ClientConf({"bootstrap.servers": self.bootstrap})
        if self.security_protocol == "PLAINTEXT":
            return conf
        conf["security.protocol"] = self.security_protocol.lower()
        if self.sasl:
            assert self.sasl_password is not None  # checked in __post_init__
            conf.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                         "sasl.password": self.sasl_password.reveal()})
        if self.tls:
            conf["ssl.endpoint.identification.algorithm"] = "https" if self.verify_hostname else "none"
            if self.ssl_ca_location:
                conf["ssl.ca.location"] = str(self.ssl_ca_location)
            if self.ssl_certificate_location and self.ssl_key_location:
                conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
                conf["ssl.key.location"] = str(self.ssl_key_location)
            if self.ssl_key_password:
                conf["ssl.key.password"] = self.ssl_key_password.reveal()
        return conf

    # -- the Java client (Spark's Kafka source and sink) --------------------------------------
    def java(self) -> ClientConf:
        conf = ClientConf({"bootstrap.servers": self.bootstrap})
        if self.security_protocol == "PLAINTEXT":
            return conf
        conf["security.protocol"] = self.security_protocol
        if self.sasl:
            assert self.sasl_password is not None and self.sasl_mechanism is not None
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.jaas.config"] = (f'{LOGIN_MODULES[self.sasl_mechanism]} required '
                                        f'username="{_jaas_quote(self.sasl_username or "")}" '
                                        f'password="{_jaas_quote(self.sasl_password.reveal())}";')
        if self.tls:
            conf["ssl.endpoint.identification.algorithm"] = "https" if self.verify_hostname else ""
            if self.ssl_ca_location:
                conf["ssl.truststore.type"] = "PEM"
                conf["ssl.truststore.location"] = str(self.ssl_ca_location)
            if self.ssl_certificate_location and self.ssl_key_location:  # PEM keystore given inline
                conf["ssl.keystore.type"] = "PEM"
                conf["ssl.keystore.certificate.chain"] = Path(self.ssl_certificate_location).read_text()
                conf["ssl.keystore.key"] = Path(self.ssl_key_location).read_text()
                if self.ssl_key_password:
                    conf["ssl.key.password"] = self.ssl_key_password.reveal()
        return conf


Conn = Settings | KafkaConnection | str  # a plain string: an unsecured broker at that address


def connection(conn: Conn) -> KafkaConnection:
    if isinstance(conn, KafkaConnection):
        return conn
    if isinstance(conn, str):
        return KafkaConnection(conn)
    return from_settings(conn)


def from_settings(settings: Settings) -> KafkaConnection:
    """The properties file (if any), overridden by every ``kafka_*`` setting that is set."""
    values: dict[str, Any] = {}
    verify = True
    if settings.kafka_properties:
        values, verify = _from_properties(settings.kafka_properties, settings.bootstrap)
    for name in _FIELDS:
        value = getattr(settings, "kafka_" + name)
        if value is not None and value != "":
            values[name] = value
    return KafkaConnection(settings.bootstrap, verify_hostname=verify, **values)


def client_config(conn: Conn, **extra: Any) -> ClientConf:
    """The confluent-kafka config of a producer, consumer or admin client, plus ``extra`` settings."""
    return ClientConf({**connection(conn).librdkafka(), **extra})


def spark_options(conn: Conn) -> ClientConf:
    """Options of Spark's Kafka source/sink: every Java client setting with the ``kafka.`` prefix."""
    return ClientConf({f"kafka.{k}": v for k, v in connection(conn).java().items()})


class _Client(Protocol):
    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...

    def poll(self, timeout: float = ...) -> Any: ...


def make_client(factory: Callable[[dict[str, Any]], Any], conn: Conn, **extra: Any) -> tuple[Any, list[KafkaError]]:
    """``factory(config)`` (Producer, Consumer, AdminClient) with an error callback collecting client errors."""
    errors: list[KafkaError] = []
    extra.setdefault("logger", _rdkafka_log)
    return factory(client_config(conn, error_cb=errors.append, **extra)), errors


def metadata(client: _Client, errors: list[KafkaError], conn: Conn, timeout: float, topic: str | None = None) -> Any:
    """``client.list_topics`` that fails at once with :class:`KafkaSecurityError` when the broker refuses
    the credentials or the TLS handshake fails (librdkafka would retry until ``timeout``)."""
    c = connection(conn)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return client.list_topics(topic, timeout=max(0.1, min(1.0, left)))
        except KafkaException as exc:
            client.poll(0)  # serves the error callback
            raise_for_security(errors, c)
            if left <= 1.0:
                raise KafkaException(f"no metadata from Kafka at {c.describe()} within {timeout:.0f}s: "
                                     f"{c.redact(str(exc))}") from None


def raise_for_security(errors: list[KafkaError], conn: KafkaConnection) -> None:
    for err in errors:
        kind = _SECURITY_ERRORS.get(err.code())
        if kind is None and err.code() == KafkaError._TRANSPORT and conn.tls and "ssl/tls alert" in err.str():
            kind = "TLS"  # the broker refused our certificate (or showed none we need): a TLS alert on the wire
        if kind is None:
            continue
        how = f"SASL {conn.sasl_mechanism} as user {conn.sasl_username!r}" if kind == "authentication" and conn.sasl \
            else f"{conn.security_protocol} handshake"
        raise KafkaSecurityError(f"Kafka {kind} failed ({how}) at broker {conn.bootstrap}: "
                                 f"{conn.redact(err.str())}")


# -- properties files ---------------------------------------------------------------------------
def read_properties(path: str | Path) -> dict[str, str]:
    """``key=value`` / ``key: value`` lines (``#``/``!`` comments, ``\\`` continues a line), as Java reads them."""
    out: dict[str, str] = {}
    pending = ""
    for raw in Path(path).expanduser().read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        match = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)", line)
        if match:
            out[match.group(1)] = match.group(2).strip()
    return out


def _from_properties(path: Path, bootstrap: str) -> tuple[dict[str, Any], bool]:
    props = read_properties(path)
    unknown = sorted(set(props) - set(_KEYS) - _OTHER_KEYS)
    if unknown:
        raise ValueError(f"{path}: unsupported Kafka settings {', '.join(unknown)} (supported: "
                         f"{', '.join(sorted({*_KEYS, *_OTHER_KEYS}))})")
    values: dict[str, Any] = {}
    for key, field_name in _KEYS.items():
        if key in props:
            values[field_name] = Secret(props[key]) if field_name in _SECRETS else props[key]
    for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
        if name in values:
            values[name] = Path(values[name]).expanduser()
    if "ssl.truststore.location" in props and props.get("ssl.truststore.type", "").upper() != "PEM":
        raise ValueError(f"{path}: ssl.truststore.location must be a PEM file (ssl.truststore.type=PEM); "
                         "JKS/PKCS12 truststores cannot be shared with librdkafka")
    if "sasl.jaas.config" in props:
        values.update(_from_jaas(props["sasl.jaas.config"], path))
    if props.get("bootstrap.servers", bootstrap) != bootstrap:
        log.warning("%s: bootstrap.servers is not read from the properties file; using %s (--bootstrap / "
                    "LAKEHOUSE_BOOTSTRAP)", path, bootstrap)
    verify = props.get("ssl.endpoint.identification.algorithm", "https").lower() not in ("", "none")
    return values, verify


def _from_jaas(jaas: str, path: Path) -> dict[str, Any]:
    found = dict(re.findall(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"', jaas))
    if "username" not in found or "password" not in found:
        raise ValueError(f"{path}: sasl.jaas.config needs username=\"...\" and password=\"...\"")
    unquote = re.compile(r"\\(.)")
    return {"sasl_username": unquote.sub(r"\1", found["username"]),
            "sasl_password": Secret(unquote.sub(r"\1", found["password"]))}


def _jaas_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


__all__ = ["Conn", "KafkaConnection", "KafkaSecurityError", "client_config", "connection", "from_settings",
           "make_client", "metadata", "read_properties", "spark_options"]
