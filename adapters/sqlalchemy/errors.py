"""Translation of driver exceptions into the ports' contract errors, by SQLSTATE class."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from typing import Final

from sqlalchemy import exc as sa_exc

from ports.deadline import DeadlineStage, remaining_s
from ports.errors import (
    DatabaseUnavailableError,
    DataIntegrityError,
    DeadlineExceededError,
    HexError,
    InfrastructureError,
    PermissionDeniedError,
    QueryTimeoutError,
    ReadOnlyViolationError,
    TlsError,
    TransactionConflictError,
)

# SQLSTATE classes and codes that mean the server or the way to it failed, not the request.
_UNAVAILABLE_CLASSES: Final = ("08", "53", "57P", "58")
_CONFLICT_CODES: Final = frozenset({"40001", "40P01"})
_TIMEOUT_CODES: Final = frozenset({"57014", "55P03", "25P03"})  # canceled, lock timeout, idle-in-tx
_CANCELED_CODE: Final = "57014"
# A statement the server cancelled at the caller's deadline (its ``statement_timeout`` was set to
# the time left) ends a few milliseconds either side of it, as the two clocks started apart.
_DEADLINE_SLACK_S: Final = 0.02
_READ_ONLY_CODE: Final = "25006"
_INTEGRITY_CLASS: Final = "23"
_LOGIN_CLASSES: Final = ("28", "3D")  # bad credentials, unknown database: not retryable
_PRIVILEGE_CODE: Final = "42501"
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH_CODES: Final = frozenset({62, 64})
# asyncpg's plain ConnectionError when the server answers "N" to the TLS request.
_TLS_REFUSED: Final = "rejected SSL upgrade"


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE carried anywhere in ``error``'s cause chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str):
            return code
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return None


def _is_connection_failure(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    chain: list[BaseException] = [error]
    if isinstance(error, sa_exc.DBAPIError) and isinstance(error.orig, BaseException):
        chain.append(error.orig)
    chain.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    names = {type(e).__name__ for e in chain}
    return any(isinstance(e, OSError | socket.gaierror | ConnectionError | EOFError) for e in chain) or bool(
        names & {"ConnectionDoesNotExistError", "InterfaceError", "InternalClientError"}
    )


def translate(error: BaseException, *, target: str) -> HexError:
    """The contract error for a driver error raised while talking to ``target``.

    Messages name the target and the SQLSTATE, never the DSN. Unknown errors become a plain
    ``HexError`` so that the application layer still never sees a driver exception.
    """
    if isinstance(error, HexError):
        return error
    if (tls := _tls_failure(error, target)) is not None:
        return tls
    code = sqlstate_of(error)
    if (late := _past_deadline(error, code, target)) is not None:
        return late
    detail = f"{target}: {type(error).__name__}" + (f" (SQLSTATE {code})" if code else "")
    if code in _CONFLICT_CODES:
        return TransactionConflictError(f"transaction rolled back by the server on {detail}")
    if code in _TIMEOUT_CODES:
        return QueryTimeoutError(f"statement timed out and was cancelled on {detail}")
    if code == _READ_ONLY_CODE:
        return ReadOnlyViolationError(f"write attempted in a read-only unit of work on {detail}")
    if code is not None and code.startswith(_INTEGRITY_CLASS):
        return DataIntegrityError(f"constraint violated on {detail}: {_first_line(error)}")
    # Before the connection check: TimeoutError is an OSError, but a client-side timeout is a
    # request that took too long, not a connection that failed.
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return QueryTimeoutError(f"timed out talking to {detail}")
    if (code is not None and code.startswith(_UNAVAILABLE_CLASSES)) or _is_connection_failure(error):
        return DatabaseUnavailableError(f"database unavailable: {detail}")
    if code is not None and code.startswith(_LOGIN_CLASSES):
        # The server's reason (no client certificate, pg_hba rejects, failed password) names the
        # role and database at most, never a secret.
        return InfrastructureError(f"cannot log in or open the database on {detail}: {_first_line(error)}")
    if code == _PRIVILEGE_CODE:
        return PermissionDeniedError(f"permission denied on {detail}: {_first_line(error)}")
    if code is not None:
        return HexError(f"database error on {detail}: {_first_line(error)}")
    return InfrastructureError(f"unexpected driver error on {detail}")


def _past_deadline(error: BaseException, code: str | None, target: str) -> DeadlineExceededError | None:
    """``DeadlineExceededError`` for a statement that ended because the caller's deadline passed.

    Cancelled by the server (its ``statement_timeout`` was the time left), timed out on the client,
    or cut by the unit of work's backstop (no answer by the deadline plus a grace): the last is
    marked ``server_unresponsive``, so the circuit breaker counts it as a failure.
    """
    left = remaining_s()
    if left is None or left > _DEADLINE_SLACK_S:
        return None
    if code == _CANCELED_CODE or isinstance(error, TimeoutError | asyncio.TimeoutError):
        return DeadlineExceededError(DeadlineStage.STATEMENT, target=target)
    lost = code.startswith("08") if code is not None else _is_connection_failure(error)
    if lost:  # connection exception: the backstop (or the network) ended the request
        return DeadlineExceededError(DeadlineStage.STATEMENT, target=target, server_unresponsive=True)
    return None


def _first_line(error: BaseException) -> str:
    # The server's own message (constraint name, column) without SQLAlchemy's appended SQL and
    # parameters, which could carry user data into logs.
    orig = getattr(error, "orig", None) or error
    return str(orig).splitlines()[0][:300] if str(orig) else type(orig).__name__


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then its driver original and causes, each once."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        links = (orig, current.__cause__, current.__context__)
        pending.extend(link for link in links if isinstance(link, BaseException))


def _tls_failure(error: BaseException, target: str) -> TlsError | None:
    """A ``TlsError`` that says which check failed, when ``error`` comes from the TLS handshake."""
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = (cause.verify_message or getattr(cause, "reason", None) or "verification failed").rstrip(
                "."
            )
            if cause.verify_code in _NAME_MISMATCH_CODES:
                return TlsError(
                    f"TLS host name mismatch on {target}: {reason} "
                    "(the certificate names another host; verify-full checks the name)"
                )
            return TlsError(
                f"TLS certificate of {target} is not trusted: {reason} "
                "(it is not signed by a CA in the configured ca_file)"
            )
        if isinstance(cause, ssl.SSLError) and "ALERT" in str(getattr(cause, "reason", "")):
            # The server refused our side of the handshake (for example an unknown client
            # certificate). Other TLS errors (EOF, bad record) are a broken connection, not a setting.
            return TlsError(f"TLS handshake with {target} failed: the server sent {cause.reason}")
        if isinstance(cause, ConnectionError) and _TLS_REFUSED in str(cause):
            return TlsError(
                f"{target} refused TLS: the server does not offer it and the TLS mode requires it"
            )
    return None
