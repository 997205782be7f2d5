"""Driver errors become contract errors whose message names the cause: TLS checks, privileges, logins."""

from __future__ import annotations

import ssl

import pytest
from sqlalchemy import exc as sa_exc

from adapters.sqlalchemy.errors import translate
from ports.errors import DatabaseUnavailableError, InfrastructureError, PermissionDeniedError, TlsError


class _ServerError(Exception):
    """Stands in for an asyncpg error: a SQLSTATE and the server's message."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _verification_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_code, error.verify_message = code, message
    return error


def _wrapped(orig: Exception) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError("SELECT 1", None, orig)


@pytest.mark.parametrize(
    ("code", "message"),
    [(62, "Hostname mismatch, certificate is not valid for 'db'."), (64, "IP address mismatch")],
)
def test_a_certificate_for_another_host_is_reported_as_a_host_name_mismatch(code: int, message: str) -> None:
    error = translate(_verification_error(code, message), target="replica-1")

    assert isinstance(error, TlsError)
    assert str(error).startswith("TLS host name mismatch on replica-1: ")
    assert not error.retryable


def test_a_certificate_from_an_unknown_ca_is_reported_as_not_trusted() -> None:
    cause = _verification_error(20, "unable to get local issuer certificate")
    error = translate(_wrapped(cause), target="writer")

    assert isinstance(error, TlsError)
    assert "TLS certificate of writer is not trusted: unable to get local issuer certificate" in str(error)


def test_a_server_without_tls_is_reported_as_refusing_it() -> None:
    refused = ConnectionError('PostgreSQL server at "10.0.0.5:5432" rejected SSL upgrade')

    error = translate(refused, target="writer")

    assert isinstance(error, TlsError)
    assert "writer refused TLS" in str(error)


def test_a_tls_connection_that_breaks_later_is_an_ordinary_lost_connection() -> None:
    error = translate(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), target="writer")

    assert type(error) is DatabaseUnavailableError
    assert error.retryable


def test_a_missing_privilege_is_permission_denied_with_the_servers_reason() -> None:
    error = translate(_wrapped(_ServerError("42501", "must be owner of table accounts")), target="writer")

    assert isinstance(error, PermissionDeniedError)
    assert "must be owner of table accounts" in str(error)


def test_a_refused_login_carries_the_servers_reason() -> None:
    orig = _ServerError("28000", "connection requires a valid client certificate")

    error = translate(_wrapped(orig), target="writer")

    assert isinstance(error, InfrastructureError)
    assert "requires a valid client certificate" in str(error)
