"""The client's own ledger of what the service told it, checked against the database afterwards.

Every transfer the service acknowledged must be in the database exactly once with its entries;
one it reported failed may be absent or (its outcome being unknown to the client) fully applied,
never half; and money only moves, so the sum of all balances is what it was.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from domain.errors import DomainError
from ports.errors import CommitOutcomeUnknownError, HexError


class Outcome(enum.Enum):
    """What the service told the client about one request."""

    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    #: Cancelled by the client, or the commit's fate unknown: either way is fine, half is not.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Request:
    """One transfer as sent; ``source`` is ``None`` for a deposit, ``amount`` ``None`` when not known."""

    key: str
    source: str | None = None
    destination: str | None = None
    amount: int | None = None

    @property
    def entries(self) -> int:
        return 1 if self.source is None and self.destination is not None else 2


@dataclass(frozen=True, slots=True)
class LedgerVerdict:
    """The checks' counts; ``problems`` lists every broken invariant in words."""

    acknowledged: int
    lost: int
    duplicated: int
    half_applied: int
    mismatched: int
    unbalanced_accounts: int
    total_before: int
    total_after: int
    failed_but_applied: int
    problems: tuple[str, ...]


@dataclass(slots=True)
class AckLedger:
    """Records every request with the outcome the service reported. One event loop (no locking)."""

    outcomes: dict[str, tuple[Request, Outcome]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)

    def acknowledged(self, request: Request) -> None:
        self.outcomes[request.key] = (request, Outcome.ACKNOWLEDGED)

    def failed(self, request: Request, error: BaseException) -> None:
        self.errors[type(error).__name__] += 1
        unknown = isinstance(error, CommitOutcomeUnknownError)
        self.outcomes[request.key] = (request, Outcome.UNKNOWN if unknown else Outcome.FAILED)

    def cancelled(self, request: Request) -> None:
        self.errors["CancelledError"] += 1
        self.outcomes[request.key] = (request, Outcome.UNKNOWN)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for _, seen in self.outcomes.values() if seen is outcome)

    async def verify(self, dsn: str, *, total_before: int) -> LedgerVerdict:
        """Check the database at ``dsn`` (directly, not through any fault) against this ledger."""
        connection = await asyncpg.connect(dsn)
        try:
            return await self._verify(connection, total_before)
        finally:
            await connection.close()

    async def _verify(self, connection: asyncpg.Connection, total_before: int) -> LedgerVerdict:
        rows = await connection.fetch(
            """
            SELECT t.idempotency_key AS key, t.source_id::text AS source,
                   t.destination_id::text AS destination, t.amount, count(e.id) AS entries
            FROM transfers t LEFT JOIN entries e ON e.transfer_id = t.id
            WHERE t.idempotency_key = ANY($1::text[])
            GROUP BY t.id
            """,
            list(self.outcomes),
        )
        stored = {row["key"]: row for row in rows}
        lost = duplicated = mismatched = failed_but_applied = 0
        problems: list[str] = []
        for key, (request, outcome) in self.outcomes.items():
            row = stored.get(key)
            if row is None:
                if outcome is Outcome.ACKNOWLEDGED:
                    lost += 1
                    problems.append(f"acknowledged transfer {key} is not in the database")
                continue
            if row["entries"] > request.entries:
                duplicated += 1
                problems.append(f"transfer {key} has {row['entries']} entries, {request.entries} expected")
            elif row["entries"] < request.entries and outcome is Outcome.ACKNOWLEDGED:
                lost += 1
                problems.append(f"acknowledged transfer {key} has only {row['entries']} entries")
            if not _same(request, row):
                mismatched += 1
                problems.append(f"transfer {key} is stored with other accounts or amount than requested")
            failed_but_applied += outcome is Outcome.FAILED
        half_applied, unbalanced, total_after = await _global_checks(connection)
        if half_applied:
            problems.append(f"{half_applied} transfers are half-applied (entries missing or extra)")
        if unbalanced:
            problems.append(f"{unbalanced} accounts hold a balance other than the sum of their entries")
        if total_after != total_before:
            problems.append(f"the sum of balances moved from {total_before} to {total_after}")
        return LedgerVerdict(
            acknowledged=self.count(Outcome.ACKNOWLEDGED),
            lost=lost,
            duplicated=duplicated,
            half_applied=half_applied,
            mismatched=mismatched,
            unbalanced_accounts=unbalanced,
            total_before=total_before,
            total_after=total_after,
            failed_but_applied=failed_but_applied,
            problems=tuple(problems),
        )


def _same(request: Request, row: asyncpg.Record) -> bool:
    """Whether the stored transfer is the request (fields the client did not record are not compared)."""
    return (
        (request.destination is None or row["destination"] == request.destination)
        and (request.destination is None or row["source"] == request.source)
        and (request.amount is None or row["amount"] == request.amount)
    )


async def _global_checks(connection: asyncpg.Connection) -> tuple[int, int, int]:
    """Half-applied transfers, accounts whose balance is not their entries' sum, and the balance sum."""
    half_applied = await connection.fetchval(
        """
        SELECT count(*) FROM transfers t
        WHERE (SELECT count(*) FROM entries e WHERE e.transfer_id = t.id)
              <> CASE WHEN t.source_id IS NULL THEN 1 ELSE 2 END
        """
    )
    unbalanced = await connection.fetchval(
        """
        SELECT count(*) FROM accounts a
        WHERE a.balance <> (SELECT coalesce(sum(e.amount), 0) FROM entries e WHERE e.account_id = a.id)
        """
    )
    total = await connection.fetchval("SELECT coalesce(sum(balance), 0) FROM accounts")
    return int(half_applied), int(unbalanced), int(total)


def is_clean(error: BaseException) -> bool:
    """Whether ``error`` is one the service promises: a contract error or a domain refusal."""
    return isinstance(error, HexError | DomainError)
