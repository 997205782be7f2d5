"""Every SQLSTATE class and code ``translate`` maps, and its fallbacks, as the asyncpg dialect raises them.

Each driver error is a real asyncpg exception of its SQLSTATE, adapted by SQLAlchemy's asyncpg
dialect and wrapped in the ``DBAPIError`` that ``Connection.execute`` raises; connection resets
and timeouts reach us unwrapped, as the dialect lets them through.
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg
import pytest
from asyncpg.exceptions._base import PostgresMessageMeta
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection, PGDialect_asyncpg

from adapters.sqlalchemy.errors import translate
from ports.errors import (
    DatabaseUnavailableError,
    DataIntegrityError,
    HexError,
    InfrastructureError,
    PermissionDeniedError,
    QueryTimeoutError,
    ReadOnlyViolationError,
    TransactionConflictError,
)

# The dialect's DB-API module over asyncpg (the adapted exception classes live on it); SQLAlchemy leaves
# this classmethod unannotated.
DBAPI: Final[Any] = PGDialect_asyncpg.import_dbapi()  # type: ignore[no-untyped-call]

#: SQLSTATE -> the contract error ``translate`` must return (exactly that class, not a subclass).
BY_SQLSTATE: Final[dict[str, type[HexError]]] = {
    "40001": TransactionConflictError,  # serialization_failure
    "40P01": TransactionConflictError,  # deadlock_detected
    "57014": QueryTimeoutError,  # query_canceled (statement_timeout)
    "55P03": QueryTimeoutError,  # lock_not_available (lock_timeout)
    "25P03": QueryTimeoutError,  # idle_in_transaction_session_timeout
    "25006": ReadOnlyViolationError,  # read_only_sql_transaction
    "23505": DataIntegrityError,  # unique_violation
    "23503": DataIntegrityError,  # foreign_key_violation
    "23514": DataIntegrityError,  # check_violation
    "23502": DataIntegrityError,  # not_null_violation
    "23P01": DataIntegrityError,  # exclusion_violation
    "23000": DataIntegrityError,  # integrity_constraint_violation
    "08000": DatabaseUnavailableError,  # connection_exception
    "08001": DatabaseUnavailableError,  # sqlclient_unable_to_establish_sqlconnection
    "08003": DatabaseUnavailableError,  # connection_does_not_exist
    "08006": DatabaseUnavailableError,  # connection_failure
    "08P01": DatabaseUnavailableError,  # protocol_violation
    "53000": DatabaseUnavailableError,  # insufficient_resources
    "53100": DatabaseUnavailableError,  # disk_full
    "53200": DatabaseUnavailableError,  # out_of_memory
    "53300": DatabaseUnavailableError,  # too_many_connections
    "57P01": DatabaseUnavailableError,  # admin_shutdown (pg_terminate_backend)
    "57P02": DatabaseUnavailableError,  # crash_shutdown
    "57P03": DatabaseUnavailableError,  # cannot_connect_now (starting up, in recovery)
    "58000": DatabaseUnavailableError,  # system_error
    "58030": DatabaseUnavailableError,  # io_error
    "28000": InfrastructureError,  # invalid_authorization_specification
    "28P01": InfrastructureError,  # invalid_password
    "3D000": InfrastructureError,  # invalid_catalog_name (no such database)
    "42501": PermissionDeniedError,  # insufficient_privilege
    # Fallback: any other SQLSTATE is a plain HexError naming it.
    "22001": HexError,  # string_data_right_truncation
    "22P02": HexError,  # invalid_text_representation
    "25P02": HexError,  # in_failed_sql_transaction
    "42P01": HexError,  # undefined_table
    "XX000": HexError,  # internal_error
}


def server_error(sqlstate: str) -> Exception:
    """The asyncpg exception for ``sqlstate``, built from the fields of an ``ErrorResponse``."""
    error_class = PostgresMessageMeta.get_message_class_for_sqlstate(sqlstate)
    # ``new`` is how asyncpg's protocol builds them: C is the SQLSTATE, M the message.
    error: Exception = error_class.new(
        {"C": sqlstate, "M": f"the server's reason for {sqlstate}", "S": "ERROR"}
    )
    return error


def as_raised_by_the_dialect(
    driver_error: Exception, *, connection_invalidated: bool = False
) -> BaseException:
    """``driver_error`` adapted by the asyncpg dialect and wrapped by SQLAlchemy, as ``execute`` raises it."""
    try:
        AsyncAdapt_asyncpg_connection._handle_exception_no_connection(DBAPI, driver_error)
    except DBAPI.Error as adapted:
        wrapped: BaseException = sa_exc.DBAPIError.instance(
            "SELECT 1", None, adapted, DBAPI.Error, connection_invalidated=connection_invalidated
        )
        return wrapped
    raise AssertionError(f"the dialect did not adapt {driver_error!r}")


@pytest.mark.parametrize(("sqlstate", "expected"), BY_SQLSTATE.items(), ids=BY_SQLSTATE.keys())
def test_each_sqlstate_becomes_its_contract_error_naming_the_target_and_the_code(
    sqlstate: str, expected: type[HexError]
) -> None:
    driver_error = server_error(sqlstate)
    assert getattr(driver_error, "sqlstate", None) == sqlstate, "asyncpg knows this SQLSTATE"

    error = translate(as_raised_by_the_dialect(driver_error), target="replica-2")

    assert type(error) is expected
    assert "replica-2" in str(error)
    assert f"SQLSTATE {sqlstate}" in str(error)
    assert error.retryable is expected.retryable


def test_the_retryable_errors_are_exactly_the_conflicts_and_the_lost_connections() -> None:
    retryable = {code for code, expected in BY_SQLSTATE.items() if expected.retryable}
    assert {code[:2] for code in retryable} == {"40", "08", "53", "57", "58"}
    assert "57014" not in retryable, "a cancelled statement is not run again by itself"


def test_the_server_reason_is_kept_for_constraints_logins_privileges_and_the_fallback() -> None:
    for sqlstate in ("23505", "28P01", "42501", "42P01"):
        error = translate(as_raised_by_the_dialect(server_error(sqlstate)), target="writer")
        assert f"the server's reason for {sqlstate}" in str(error)


UNCODED: Final[dict[str, tuple[BaseException, type[HexError]]]] = {
    # What asyncpg raises on COMMIT after the server closed the connection (see the contract suite).
    "closed connection": (
        as_raised_by_the_dialect(
            asyncpg.InterfaceError("cannot call Transaction.commit(): the underlying connection is closed")
        ),
        DatabaseUnavailableError,
    ),
    "reset by peer": (ConnectionResetError(104, "Connection reset by peer"), DatabaseUnavailableError),
    "refused": (ConnectionRefusedError(111, "Connect call failed"), DatabaseUnavailableError),
    "end of stream": (EOFError(), DatabaseUnavailableError),
    "invalidated by the dialect": (
        sa_exc.DBAPIError.instance(
            "SELECT 1", None, DBAPI.Error("connection lost"), DBAPI.Error, connection_invalidated=True
        ),
        DatabaseUnavailableError,
    ),
    # TimeoutError is an OSError, but a request that took too long, not a lost connection.
    "client timeout": (TimeoutError(), QueryTimeoutError),
    "unknown driver error": (
        sa_exc.DBAPIError.instance("SELECT 1", None, DBAPI.Error("something odd"), DBAPI.Error),
        InfrastructureError,
    ),
}


@pytest.mark.parametrize(("driver_error", "expected"), UNCODED.values(), ids=UNCODED.keys())
def test_errors_without_a_sqlstate_are_classified_by_what_failed(
    driver_error: BaseException, expected: type[HexError]
) -> None:
    error = translate(driver_error, target="writer")
    assert type(error) is expected
    assert "writer" in str(error)


def test_a_contract_error_passes_through_unchanged() -> None:
    already = ReadOnlyViolationError("write attempted in a read-only unit of work on writer")
    assert translate(already, target="replica-1") is already
