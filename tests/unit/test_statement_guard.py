"""The statement guard's verdicts: what a unit of work refuses, and what costs it its connection."""

from __future__ import annotations

import pytest

from adapters.sqlalchemy.statement_guard import Verdict, classify

REFUSED = [
    "COMMIT",
    "commit;",
    "  /* a comment */ COMMIT",
    "-- a comment\nEND",
    "COMMIT AND CHAIN",
    "COMMIT PREPARED 'tx'",
    "ROLLBACK",
    "rollback work",
    "ROLLBACK AND CHAIN",
    "ROLLBACK PREPARED 'tx'",
    "ABORT",
    "BEGIN",
    "begin isolation level serializable",
    "START TRANSACTION READ WRITE",
    "PREPARE TRANSACTION 'tx'",
    "SET TRANSACTION READ WRITE",
    "SET transaction_read_only = off",
    'SET "transaction_read_only" TO off',
    "SET LOCAL transaction_read_only TO off",
    "SET SESSION transaction_isolation = 'serializable'",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET default_transaction_read_only = off",
    "RESET transaction_read_only",
    "RESET default_transaction_read_only",
]

SESSION_CHANGING = [
    "SET statement_timeout = 0",
    "set statement_timeout to 0",
    "SET SESSION statement_timeout = 0",
    "SET search_path = pg_catalog",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION DEFAULT",
    "SET TIME ZONE 'UTC'",
    "RESET ALL",
    "RESET statement_timeout",
    "DISCARD ALL",
    "LISTEN channel",
    "UNLISTEN *",
    "LOAD 'auto_explain'",
    "PREPARE named AS SELECT 1",
    "DEALLOCATE named",
    "DO $$ BEGIN SET statement_timeout = 0; END $$",
    "CREATE TEMP TABLE scratch (x int)",
    "CREATE GLOBAL TEMPORARY TABLE scratch (x int)",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "SELECT set_config('statement_timeout', '0', false)",
    "SELECT SET_CONFIG ('work_mem', '1GB', false)",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_try_advisory_lock_shared(1, 2)",
]

ALLOWED = [
    "SELECT 1",
    "  select * from accounts where id = $1",
    "INSERT INTO entries (account_id, amount) VALUES ($1, $2)",
    "WITH moved AS (UPDATE accounts SET balance = 0 RETURNING id) SELECT count(*) FROM moved",
    "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
    "DELETE FROM t",
    "SAVEPOINT sa_savepoint_1",
    "RELEASE SAVEPOINT sa_savepoint_1",
    "ROLLBACK TO SAVEPOINT sa_savepoint_1",
    "rollback transaction to sa_savepoint_1",
    "SET LOCAL statement_timeout = 200",
    "SET LOCAL ROLE hex_reader",
    "SET CONSTRAINTS ALL DEFERRED",
    "SELECT pg_advisory_xact_lock(42)",
    "DECLARE c CURSOR FOR SELECT 1",
    "CREATE TABLE kept (x int)",
    "CALL refresh_totals()",
    "SELECT 'COMMIT'",
    "",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_statements_that_end_or_change_the_transaction_are_refused(statement: str) -> None:
    assert classify(statement) is Verdict.REFUSE


@pytest.mark.parametrize("statement", SESSION_CHANGING)
def test_statements_that_change_the_session_cost_the_unit_its_connection(statement: str) -> None:
    assert classify(statement) is Verdict.DISCARD_SESSION


@pytest.mark.parametrize("statement", ALLOWED)
def test_ordinary_statements_and_savepoints_pass(statement: str) -> None:
    assert classify(statement) is Verdict.ALLOW


def test_a_long_run_of_whitespace_and_comments_before_no_keyword_is_read_at_once() -> None:
    # A pattern with nested quantifiers over whitespace backtracks exponentially here: with one,
    # this test would not finish.
    statement = " " * 5000 + "/* x */ " * 500 + "("

    assert classify(statement) is Verdict.ALLOW
