"""asyncpg's connect arguments: what each TLS mode checks, and how a bad file or key is reported."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from adapters.credentials.static import StaticCredentialProvider
from adapters.sqlalchemy.connect_args import TlsOptions, client_context, connect_args, tls_connect_args
from ports.errors import ConfigurationError
from tests.tls_support import Pki, make_pki

KEY_PASSWORD = "Unit-Key-Passphrase-31"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), client_role="app", key_password=KEY_PASSWORD)


@pytest.mark.parametrize("mode", ["disable", "prefer"])
def test_modes_that_may_go_without_tls_are_left_to_asyncpg(mode: str) -> None:
    assert tls_connect_args(TlsOptions(mode=mode)) == {"ssl": mode}  # type: ignore[arg-type]  # a Literal from a parameter


def test_require_encrypts_but_checks_nothing() -> None:
    context = client_context(TlsOptions(mode="require"))
    assert context.verify_mode is ssl.CERT_NONE
    assert not context.check_hostname


def test_verify_ca_checks_the_chain_but_not_the_host_name(pki: Pki) -> None:
    context = client_context(TlsOptions(mode="verify-ca", ca_file=pki.ca_file))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert not context.check_hostname
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "alchemy-hex test CA"),),)


def test_verify_full_checks_the_chain_and_the_host_name(pki: Pki) -> None:
    context = client_context(TlsOptions(mode="verify-full", ca_file=pki.ca_file))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_a_missing_ca_file_names_the_setting_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(ConfigurationError, match=r"replica_tls\.ca_file: .*nope\.crt.* cannot be read"):
        tls_connect_args(TlsOptions(mode="verify-full", ca_file=missing), setting="replica_tls")


def test_an_encrypted_client_key_loads_with_its_passphrase(pki: Pki) -> None:
    options = TlsOptions(
        mode="require",
        cert_file=pki.client_cert_file,
        key_file=pki.client_key_file,
        key_password=KEY_PASSWORD,
    )
    assert isinstance(client_context(options), ssl.SSLContext)
    assert KEY_PASSWORD not in repr(options)


@pytest.mark.parametrize("key_password", [None, "wrong-passphrase"])
def test_a_key_that_cannot_be_decrypted_names_the_setting_never_prompts_and_never_echoes(
    pki: Pki, key_password: str | None
) -> None:
    options = TlsOptions(
        mode="require",
        cert_file=pki.client_cert_file,
        key_file=pki.client_key_file,
        key_password=key_password,
    )
    with pytest.raises(ConfigurationError, match=r"tls\.key_password") as caught:
        client_context(options)
    assert "wrong-passphrase" not in str(caught.value)


async def test_a_credential_provider_becomes_the_password_asyncpg_calls_per_connection() -> None:
    credentials = StaticCredentialProvider(password="from-the-provider")

    args = connect_args(TlsOptions(mode="disable"), credentials=credentials)

    assert args["ssl"] == "disable"
    assert await args["password"]() == "from-the-provider"


def test_without_a_credential_provider_the_dsn_password_is_left_alone() -> None:
    assert "password" not in connect_args(TlsOptions())
