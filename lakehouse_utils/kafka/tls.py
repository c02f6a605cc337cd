"""A throwaway certificate authority and a broker certificate for 127.0.0.1 (tests, trying TLS locally).

``make_test_ca(folder)`` runs the ``openssl`` command line: a CA (``ca.pem``, the file clients trust) and a
broker key + certificate signed by it for ``IP:127.0.0.1`` / ``DNS:localhost``, joined in ``broker.pem`` (an
unencrypted PKCS#8 key then the certificate chain: what a Kafka broker reads with ``ssl.keystore.type=PEM``),
and a client key + certificate (``client.key``, ``client.crt``) for a broker that requires mutual TLS.
Never use these for anything but a local broker: the CA key sits next to them, unencrypted.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # not a pytest class

    folder: Path

    @property
    def ca(self) -> Path:
        """The CA certificate (PEM): ``LAKEHOUSE_KAFKA_SSL_CA_LOCATION`` for clients."""
        return self.folder / "ca.pem"

    @property
    def broker_keystore(self) -> Path:
        """The broker's private key and certificate chain (PEM), for ``BrokerSecurity(keystore=...)``."""
        return self.folder / "broker.pem"

    @property
    def client_cert(self) -> Path:
        """A client certificate signed by the CA (mutual TLS): ``LAKEHOUSE_KAFKA_SSL_CERTIFICATE_LOCATION``."""
        return self.folder / "client.crt"

    @property
    def client_key(self) -> Path:
        """Its private key (PEM, PKCS#8, unencrypted): ``LAKEHOUSE_KAFKA_SSL_KEY_LOCATION``."""
        return self.folder / "client.key"


def make_test_ca(folder: str | Path, days: int = 7, host: str = "127.0.0.1") -> TestCA:
    """Create (or reuse) a CA and a broker certificate for ``host`` under ``folder``."""
    out = TestCA(Path(folder).resolve())
    if out.ca.exists() and out.broker_keystore.exists() and out.client_cert.exists():
        return out
    if shutil.which("openssl") is None:
        raise RuntimeError("making a test CA needs the openssl command (apt install openssl)")
    d = out.folder
    d.mkdir(parents=True, exist_ok=True)
    (d / "broker.ext").write_text(f"subjectAltName=IP:{host},DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                  "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "ca.key", "-out", d / "ca.pem",
             "-days", str(days), "-subj", "/CN=lakehouse throwaway test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "broker.key", "-out", d / "broker.csr",
             "-subj", f"/CN={host}")
    _openssl("x509", "-req", "-in", d / "broker.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
             "-CAcreateserial", "-out", d / "broker.crt", "-days", str(days), "-extfile", d / "broker.ext")
    out.broker_keystore.write_text((d / "broker.key").read_text() + (d / "broker.crt").read_text()
                                   + out.ca.read_text())
    (d / "client.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                                  "extendedKeyUsage=clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", out.client_key, "-out", d / "client.csr",
             "-subj", "/CN=lakehouse-client")
    _openssl("x509", "-req", "-in", d / "client.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
             "-CAcreateserial", "-out", out.client_cert, "-days", str(days), "-extfile", d / "client.ext")
    for name in ("ca.key", "broker.key", "broker.pem", "client.key"):
        (d / name).chmod(0o600)
    return out


def _openssl(*args: object) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


__all__ = ["TestCA", "make_test_ca"]
