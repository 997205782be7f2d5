"""TLS against a server the test configures: what each mode checks, and errors that say which check failed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from adapters.postgres.cluster import PostgresCluster, find_binaries
from container import create_container, start_resources, stop_resources
from ports.connection_provider import Intent
from ports.errors import ConfigurationError, DatabaseUnavailableError, TlsError
from tests.support import make_settings
from tests.tls_support import Pki, make_pki, serving_wrong_host_certificate, tls_cluster

PASSWORD = "Tls-Test-Password-4410"
KEY_PASSWORD = "Key-Passphrase-9923"
CERT_ROLE = "cert_client"
SESSION_SSL = "SELECT ssl, version, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), client_role=CERT_ROLE, key_password=KEY_PASSWORD)


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[PostgresCluster]:
    """TLS only: the certificate role logs in with its certificate, plain-text connections are refused."""
    rules = [f"hostssl all {CERT_ROLE} 127.0.0.1/32 cert", "hostnossl all all 127.0.0.1/32 reject"]
    with tls_cluster(pki, password=PASSWORD, hba_rules=rules) as cluster:
        cluster.query(f"CREATE ROLE {CERT_ROLE} LOGIN")
        yield cluster


async def _ssl_of_session(dsn: str, **tls: object) -> Any:
    """What the server's pg_stat_ssl says of a writer connection made through the container with ``tls``."""
    container = create_container(make_settings(dsn, tls={k: str(v) for k, v in tls.items()}))
    try:
        await start_resources(container)
        async with container.connection_provider().connection(Intent.WRITE) as connection:
            return (await connection.execute(text(SESSION_SSL))).one()
    finally:
        await stop_resources(container)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_verify_full_connects_with_the_right_ca_and_host_name_and_the_session_is_encrypted(
    server: PostgresCluster, pki: Pki, host: str
) -> None:
    dsn = server.dsn(password=PASSWORD).replace("127.0.0.1", host)

    row = await _ssl_of_session(dsn, mode="verify-full", ca_file=pki.ca_file)

    assert row.ssl is True
    assert row.version.startswith("TLSv1.")


async def test_a_certificate_from_another_ca_is_refused_as_not_trusted(
    server: PostgresCluster, pki: Pki
) -> None:
    with pytest.raises(TlsError, match="TLS certificate of writer is not trusted") as caught:
        await _ssl_of_session(server.dsn(password=PASSWORD), mode="verify-full", ca_file=pki.wrong_ca_file)
    assert "host name" not in str(caught.value)


async def test_a_certificate_for_another_host_fails_verify_full_on_the_name_but_passes_verify_ca(
    server: PostgresCluster, pki: Pki
) -> None:
    dsn = server.dsn(password=PASSWORD)
    with serving_wrong_host_certificate(server):
        with pytest.raises(TlsError, match="TLS host name mismatch on writer") as caught:
            await _ssl_of_session(dsn, mode="verify-full", ca_file=pki.ca_file)
        chain_only = await _ssl_of_session(dsn, mode="verify-ca", ca_file=pki.ca_file)
    assert "not trusted" not in str(caught.value)
    assert chain_only.ssl is True


async def test_require_encrypts_without_checking_the_certificate(server: PostgresCluster) -> None:
    row = await _ssl_of_session(server.dsn(password=PASSWORD), mode="require")

    assert row.ssl is True


async def test_a_server_that_demands_tls_refuses_disable_with_the_reason(server: PostgresCluster) -> None:
    with pytest.raises(DatabaseUnavailableError, match="no encryption"):
        await _ssl_of_session(server.dsn(password=PASSWORD), mode="disable")


async def test_require_against_a_server_without_tls_fails_saying_so() -> None:
    with (
        PostgresCluster(binaries=find_binaries(), password=PASSWORD) as plain,
        pytest.raises(TlsError, match="writer refused TLS"),
    ):
        await _ssl_of_session(plain.dsn(password=PASSWORD), mode="require")


async def test_a_client_certificate_logs_in_the_role_it_names_without_a_password(
    server: PostgresCluster, pki: Pki
) -> None:
    row = await _ssl_of_session(
        server.dsn(user=CERT_ROLE),
        mode="verify-full",
        ca_file=pki.ca_file,
        cert_file=pki.client_cert_file,
        key_file=pki.client_key_file,
        key_password=pki.key_password,
    )

    assert row.ssl is True
    assert row.client_dn == f"/CN={CERT_ROLE}"


async def test_without_its_certificate_the_role_is_refused_with_the_servers_reason(
    server: PostgresCluster, pki: Pki
) -> None:
    with pytest.raises(DatabaseUnavailableError, match="requires a valid client certificate"):
        await _ssl_of_session(server.dsn(user=CERT_ROLE), mode="verify-full", ca_file=pki.ca_file)


async def test_a_wrong_key_passphrase_stops_start_up_naming_the_setting_and_not_the_value(
    server: PostgresCluster, pki: Pki
) -> None:
    wrong = "Not-The-Key-Passphrase-1"
    with pytest.raises(ConfigurationError, match=r"tls\.key_password") as caught:
        await _ssl_of_session(
            server.dsn(user=CERT_ROLE),
            mode="verify-full",
            ca_file=pki.ca_file,
            cert_file=pki.client_cert_file,
            key_file=pki.client_key_file,
            key_password=wrong,
        )
    assert wrong not in str(caught.value)
    assert KEY_PASSWORD not in str(caught.value)
