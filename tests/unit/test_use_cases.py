"""The ledger use cases against a fake unit of work: rules, idempotency, retries, correlation IDs."""

from __future__ import annotations

import uuid
from typing import TypeVar

import pytest
import structlog
from structlog.testing import capture_logs

from app.ledger.use_cases import AuditLedger, Deposit, GetBalance, GetStatement, OpenAccount, TransferMoney
from app.metrics import Metrics
from app.retry import RetryPolicy
from app.retry_budget import UnlimitedRetryBudget
from domain.errors import InvalidArgumentError
from domain.ledger import AccountId
from domain.ledger.errors import InsufficientFundsError, UnknownAccountError
from ports.connection_provider import Intent, Priority
from ports.errors import CommitOutcomeUnknownError, QueryTimeoutError, TransactionConflictError
from tests.fakes import FakeDatabase

NO_WAIT = RetryPolicy(max_attempts=3, wait=False)


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


U = TypeVar("U", OpenAccount, Deposit, TransferMoney, GetBalance, GetStatement, AuditLedger)


def _make(use_case: type[U], db: FakeDatabase, metrics: Metrics) -> U:
    return use_case(
        uow_factory=db, retry_policy=NO_WAIT, retry_budget=UnlimitedRetryBudget(), metrics=metrics
    )


async def _account(db: FakeDatabase, metrics: Metrics, amount: int) -> AccountId:
    account = await _make(OpenAccount, db, metrics)("owner")
    if amount:
        await _make(Deposit, db, metrics)(account, amount, idempotency_key=f"seed-{account}")
    return account


async def test_a_transfer_debits_one_account_and_credits_the_other(
    db: FakeDatabase, metrics: Metrics
) -> None:
    a, b = await _account(db, metrics, 100), await _account(db, metrics, 0)

    await _make(TransferMoney, db, metrics)(a, b, 40, idempotency_key="k")

    assert db.state.accounts[a].balance == 60
    assert db.state.accounts[b].balance == 40
    assert all(uow.committed for uow in db.opened if uow.intent is Intent.WRITE)


async def test_a_failed_rule_commits_nothing(db: FakeDatabase, metrics: Metrics) -> None:
    a, b = await _account(db, metrics, 10), await _account(db, metrics, 0)
    with pytest.raises(InsufficientFundsError):
        await _make(TransferMoney, db, metrics)(a, b, 11, idempotency_key="k")
    assert "k" not in db.state.transfers
    assert metrics.failed[("transfer", "InsufficientFundsError")] == 1


async def test_a_transaction_the_server_rolled_back_is_run_again(db: FakeDatabase, metrics: Metrics) -> None:
    a, b = await _account(db, metrics, 10), await _account(db, metrics, 0)
    db.fail_commits = [TransactionConflictError("serialization failure")]

    await _make(TransferMoney, db, metrics)(a, b, 5, idempotency_key="k")

    assert db.state.accounts[b].balance == 5
    assert metrics.retries["transfer"] == 1


async def test_an_unknown_commit_outcome_is_repeated_safely_thanks_to_the_key(
    db: FakeDatabase, metrics: Metrics
) -> None:
    a, b = await _account(db, metrics, 10), await _account(db, metrics, 0)
    db.fail_commits, db.apply_before_failing = [CommitOutcomeUnknownError("lost during COMMIT")], True

    receipt = await _make(TransferMoney, db, metrics)(a, b, 5, idempotency_key="k")

    assert receipt.replayed
    assert db.state.accounts[b].balance == 5


async def test_an_unknown_commit_outcome_of_a_non_idempotent_call_reaches_the_caller(
    db: FakeDatabase, metrics: Metrics
) -> None:
    db.fail_commits = [CommitOutcomeUnknownError("lost during COMMIT")]
    with pytest.raises(CommitOutcomeUnknownError):
        await _make(OpenAccount, db, metrics)("owner")
    assert len(db.opened) == 1


async def test_errors_that_are_not_safe_to_retry_are_not_retried(db: FakeDatabase, metrics: Metrics) -> None:
    db.fail_commits = [QueryTimeoutError("statement timeout")]
    with pytest.raises(QueryTimeoutError):
        await _make(OpenAccount, db, metrics)("owner")
    assert metrics.retries["open_account"] == 0


async def test_reads_declare_read_intent(db: FakeDatabase, metrics: Metrics) -> None:
    a = await _account(db, metrics, 7)
    assert await _make(GetBalance, db, metrics)(a) == 7
    statement = await _make(GetStatement, db, metrics)(a, limit=1)
    assert [e.amount for e in statement.entries] == [7]
    assert db.opened[-1].intent is Intent.READ


async def test_bad_arguments_are_refused_before_any_unit_of_work(db: FakeDatabase, metrics: Metrics) -> None:
    with pytest.raises(InvalidArgumentError):
        await _make(GetBalance, db, metrics)("'; DROP TABLE accounts; --")
    with pytest.raises(InvalidArgumentError):
        await _make(GetStatement, db, metrics)(uuid.UUID(int=1), limit=0)
    with pytest.raises(UnknownAccountError):
        await _make(GetBalance, db, metrics)(uuid.UUID(int=1))


async def test_every_log_line_of_a_call_carries_its_correlation_id(
    db: FakeDatabase, metrics: Metrics
) -> None:
    db.fail_commits = [TransactionConflictError("deadlock")]
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await _make(OpenAccount, db, metrics)("owner", correlation_id="req-42")
    assert logs, "the retry should have logged"
    assert {line.get("correlation_id") for line in logs} == {"req-42"}
    assert structlog.contextvars.get_contextvars().get("correlation_id") is None


async def test_the_audit_sees_balances_equal_to_entries(db: FakeDatabase, metrics: Metrics) -> None:
    a, b = await _account(db, metrics, 30), await _account(db, metrics, 20)
    await _make(TransferMoney, db, metrics)(a, b, 30, idempotency_key="all")
    report = await _make(AuditLedger, db, metrics)()
    assert report.balanced
    assert report.total_balance == 50


async def test_each_use_case_asks_for_its_own_admission_class(db: FakeDatabase, metrics: Metrics) -> None:
    await _make(AuditLedger, db, metrics)()
    await _make(OpenAccount, db, metrics)("owner")
    assert [uow.priority for uow in db.opened] == [Priority.LOW, Priority.NORMAL]
