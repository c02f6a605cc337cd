"""The embedded broker's optional secured client listener: SASL (PLAIN, SCRAM) and/or TLS, on 127.0.0.1.

``LocalKafka(..., security=BrokerSecurity("SASL_SSL", users={"alice": "..."}, keystore=ca.broker_keystore,
ca=ca.ca))`` serves clients on that one listener only (the KRaft controller listener stays PLAINTEXT on
127.0.0.1, as it is the broker's own). Users authenticate with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512: PLAIN
users are listed in the listener's JAAS config, SCRAM credentials are written into the metadata log when
the storage is formatted (``StorageTool format --add-scram``), so users are fixed when the broker's data
dir is first made. The first user is the one the broker itself (and ``LocalKafka``'s readiness probe) uses.
The broker's config holds the passwords: it lives in the broker's data dir (mode 0600), never in the repo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import Secret
from .kafka_conf import LOGIN_MODULES, KafkaConnection

SECURED = ("SSL", "SASL_PLAINTEXT", "SASL_SSL")
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class BrokerSecurity:
    protocol: str = "SASL_PLAINTEXT"
    users: dict[str, Secret] = field(default_factory=dict)  # name -> password (str accepted)
    keystore: Path | None = None  # PEM: the broker's key + certificate chain (tls.make_test_ca)
    ca: Path | None = None  # PEM: the CA that signed it (what the broker's own client trusts)
    # mutual TLS: every client must show a certificate the CA signed (ssl.client.auth=required); the broker's own
    # connections show its keystore's; ``client_cert``/``client_key`` are what its readiness probe shows
    client_auth: bool = False
    client_cert: Path | None = None
    client_key: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", self.protocol.upper())
        object.__setattr__(self, "users", {k: v if isinstance(v, Secret) else Secret(v)
                                           for k, v in self.users.items()})
        if self.protocol not in SECURED:
            raise ValueError(f"secured listener {self.protocol!r}: expected one of {', '.join(SECURED)}")
        if self.sasl and not self.users:
            raise ValueError(f"{self.protocol} needs at least one user")
        for name, password in self.users.items():
            if not name.replace("-", "").replace("_", "").isalnum() or any(c in password.reveal() for c in '",=[]\\'):
                raise ValueError(f"user {name!r}: names are [A-Za-z0-9_-], passwords without \" , = [ ] \\")
        if self.tls and (self.keystore is None or self.ca is None):
            raise ValueError(f"{self.protocol} needs a keystore and its CA (lakehouse_utils.kafka.tls.make_test_ca)")
        if self.client_auth and (not self.tls or self.client_cert is None or self.client_key is None):
            raise ValueError("mutual TLS (client_auth) needs SSL or SASL_SSL, and a client certificate and key")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def client(self, bootstrap: str, user: str | None = None, mechanism: str = "PLAIN") -> KafkaConnection:
        """A client connection as ``user`` (default: the first user) with ``mechanism``."""
        name = user or next(iter(self.users), None)
        return KafkaConnection(
            bootstrap, self.protocol,
            sasl_mechanism=mechanism if self.sasl else None,
            sasl_username=name if self.sasl else None,
            sasl_password=self.users[name] if self.sasl and name else None,
            ssl_ca_location=self.ca if self.tls else None,
            ssl_certificate_location=self.client_cert if self.client_auth else None,
            ssl_key_location=self.client_key if self.client_auth else None,
        )

    def server_properties(self, port: int) -> dict[str, str]:
        """The listener part of ``server.properties`` (client listener ``<PROTOCOL>://127.0.0.1:port``)."""
        name = self.protocol
        props = {
            "listeners": f"{name}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
            "advertised.listeners": f"{name}://127.0.0.1:{port}",
            "inter.broker.listener.name": name,
            "listener.security.protocol.map": f"{name}:{name},CONTROLLER:PLAINTEXT",
        }
        prefix = f"listener.name.{name.lower()}"
        if self.sasl:
            first, password = next(iter(self.users.items()))
            users = " ".join(f'user_{u}="{p.reveal()}"' for u, p in self.users.items())
            props.update({
                "sasl.enabled.mechanisms": ",".join(["PLAIN", *SCRAM]),
                "sasl.mechanism.inter.broker.protocol": "PLAIN",
                f"{prefix}.plain.sasl.jaas.config": f'{LOGIN_MODULES["PLAIN"]} required username="{first}" '
                                                    f'password="{password.reveal()}" {users};',
                **{f"{prefix}.{m.lower()}.sasl.jaas.config": f"{LOGIN_MODULES[m]} required;" for m in SCRAM},
            })
        if self.tls:
            props.update({
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.keystore),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.ca),
                "ssl.client.auth": "required" if self.client_auth else "none",
            })
        return props

    def format_args(self) -> list[str]:
        """``StorageTool format`` arguments creating every user's SCRAM credentials."""
        if not self.sasl:
            return []
        return [arg for m in SCRAM for u, p in self.users.items()
                for arg in ("--add-scram", f"{m}=[name={u},password={p.reveal()}]")]


__all__ = ["BrokerSecurity"]
