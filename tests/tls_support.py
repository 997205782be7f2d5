"""Test PKI made afresh for each run with ``cryptography``, and a PostgreSQL server that speaks TLS.

The PKI holds a CA, a server certificate for ``localhost`` and 127.0.0.1 signed by it, a server
certificate for another host name signed by it, a second CA that signed nothing the server uses,
and a client certificate whose CN is a role name, with a key encrypted by a passphrase.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters.postgres.cluster import PostgresCluster, find_binaries

WRONG_HOST: Final = "db.wrong-host.invalid"
_VALID_FOR: Final = datetime.timedelta(days=2)
_TLS_SETTINGS: Final = {
    "ssl": "on",
    "ssl_cert_file": "server.crt",
    "ssl_key_file": "server.key",
    "ssl_ca_file": "root.crt",
}


@dataclass(frozen=True, slots=True)
class Pki:
    """Files for clients, PEM bytes for the server."""

    ca_file: Path
    wrong_ca_file: Path
    client_cert_file: Path
    client_key_file: Path
    key_password: str
    ca_pem: bytes
    server_pem: tuple[bytes, bytes]
    wrong_host_pem: tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class _Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: str | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.NoEncryption()
            if password is None
            else serialization.BestAvailableEncryption(password.encode())
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _ca(name: str) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    certificate = (
        _builder(name, subject, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return _Issued(certificate, key)


def _leaf(ca: _Issued, name: str, *, hosts: Sequence[str] = (), client: bool = False) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    builder = (
        _builder(name, ca.certificate.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(authority, critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
    return _Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_pki(directory: Path, *, client_role: str, key_password: str) -> Pki:
    """A fresh PKI; the client's files (CA files, certificate, encrypted key) are written to ``directory``."""
    ca, wrong_ca = _ca("alchemy-hex test CA"), _ca("some other CA")
    server = _leaf(ca, "localhost", hosts=["localhost", "127.0.0.1"])
    wrong_host = _leaf(ca, WRONG_HOST, hosts=[WRONG_HOST])
    client = _leaf(ca, client_role, client=True)
    files = {
        "root.crt": ca.cert_pem(),
        "wrong-root.crt": wrong_ca.cert_pem(),
        "client.crt": client.cert_pem(),
        "client.key": client.key_pem(key_password),
    }
    for name, content in files.items():
        _write_private(directory / name, content)
    return Pki(
        ca_file=directory / "root.crt",
        wrong_ca_file=directory / "wrong-root.crt",
        client_cert_file=directory / "client.crt",
        client_key_file=directory / "client.key",
        key_password=key_password,
        ca_pem=ca.cert_pem(),
        server_pem=(server.cert_pem(), server.key_pem()),
        wrong_host_pem=(wrong_host.cert_pem(), wrong_host.key_pem()),
    )


@contextmanager
def tls_cluster(pki: Pki, *, password: str, hba_rules: Sequence[str] = ()) -> Iterator[PostgresCluster]:
    """A started server with ``ssl=on`` serving ``pki``'s server certificate; ``hba_rules`` come first."""
    cluster = PostgresCluster(binaries=find_binaries(), password=password, settings=_TLS_SETTINGS)
    try:
        cluster.init()
        _install(cluster, "root.crt", pki.ca_pem)
        _install(cluster, "server.crt", pki.server_pem[0])
        _install(cluster, "server.key", pki.server_pem[1])
        _install(cluster, "wrong-host.crt", pki.wrong_host_pem[0])
        _install(cluster, "wrong-host.key", pki.wrong_host_pem[1])
        hba = cluster.data_dir / "pg_hba.conf"
        _install(
            cluster, "pg_hba.conf", "".join(f"{rule}\n" for rule in hba_rules).encode() + hba.read_bytes()
        )
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@contextmanager
def serving_wrong_host_certificate(cluster: PostgresCluster, timeout_s: float = 10.0) -> Iterator[None]:
    """The server presents the certificate for ``WRONG_HOST`` inside the block, its own after it."""
    _serve(cluster, "wrong-host", timeout_s)
    try:
        yield
    finally:
        _serve(cluster, "server", timeout_s)


def _serve(cluster: PostgresCluster, name: str, timeout_s: float) -> None:
    cluster.query(f"ALTER SYSTEM SET ssl_cert_file = '{name}.crt'")
    cluster.query(f"ALTER SYSTEM SET ssl_key_file = '{name}.key'")
    cluster.query("SELECT pg_reload_conf()")
    # The postmaster reloads its TLS context with the settings, before it forks another backend;
    # so once a new session shows the new file, new connections get the new certificate.
    deadline = time.monotonic() + timeout_s
    while cluster.query("SHOW ssl_cert_file") != f"{name}.crt":
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not switch to {name}.crt")
        time.sleep(0.02)


def _install(cluster: PostgresCluster, name: str, content: bytes) -> None:
    """A file in the data directory, owned by the server's user (as root) and readable only by it."""
    owner = cluster.data_dir.stat()
    _write_private(cluster.data_dir / name, content, uid=owner.st_uid, gid=owner.st_gid)


def _write_private(path: Path, content: bytes, *, uid: int | None = None, gid: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        if uid is not None and gid is not None and (uid, gid) != (os.getuid(), os.getgid()):
            os.fchown(fd, uid, gid)
        file.write(content)
