"""What a unit of work lets through: no statement may end its transaction or leak into the next one.

A unit of work owns its transaction. A ``COMMIT`` sent as SQL would end it behind the unit's back
(a read unit's next statement would then run outside ``READ ONLY``, a write unit would stop being
atomic), and ``SET TRANSACTION READ WRITE`` would lift a read unit's protection: both are refused
before they reach the server. Statements that change the *session* (``SET`` without ``LOCAL``,
``RESET``, ``set_config(..., false)``, session advisory locks, ``PREPARE``, ``LISTEN``, temporary
tables...) are let through, but the unit's connection is then closed instead of going back to the
pool, so the next unit never inherits them.

The verdict reads the statement's leading keywords only, after comments: through SQLAlchemy's
asyncpg dialect every statement is prepared, and the server refuses a prepared statement that
holds more than one command, so the first command is the only one.
"""

from __future__ import annotations

import enum
import functools
import re
import time
from typing import Final

from sqlalchemy.dialects.postgresql.asyncpg import PGExecutionContext_asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from ports.deadline import DeadlineStage
from ports.errors import DeadlineExceededError, TransactionControlError

#: The execution option under which a unit of work hands its :class:`UnitSession` to the guard.
UNIT_OPTION: Final = "hex_unit"

_CACHE_SIZE: Final = 2048
# Leading keywords: words or double-quoted identifiers, with whitespace and comments between them.
# Atomic and possessive, so a statement that starts with no keyword fails at once, never backtracking.
_LEADING_WORD: Final = re.compile(r'(?>\s+|--[^\n]*|/\*.*?\*/)*+("[^"]*"|[A-Za-z_][A-Za-z0-9_$]*)', re.S)
# Calls that change the session wherever they sit in a statement (a false positive costs one reconnect).
_SESSION_CALLS: Final = re.compile(r"\b(?:set_config|pg_(?:try_)?advisory_lock(?:_shared)?)\s*\(", re.I)
_HOLD_CURSOR: Final = re.compile(r"\bwith\s+hold\b", re.I)
_ENDS_TRANSACTION: Final = frozenset({"begin", "start", "commit", "end", "abort"})
_TRANSACTION_SETTINGS: Final = frozenset(
    {
        "transaction",
        "transaction_read_only",
        "transaction_isolation",
        "transaction_deferrable",
        "default_transaction_read_only",
        "default_transaction_isolation",
        "default_transaction_deferrable",
    }
)
# ``DO`` runs a code block sent with the unit, which may ``SET``; see the module docstring for functions.
_SESSION_STATEMENTS: Final = frozenset({"discard", "listen", "unlisten", "load", "deallocate", "do"})


class Verdict(enum.Enum):
    """What a unit of work does with a statement."""

    ALLOW = "allow"
    #: Runs, but the connection is closed after the unit instead of going back to the pool.
    DISCARD_SESSION = "discard-session"
    #: Refused with :class:`TransactionControlError` before it is sent.
    REFUSE = "refuse"


class UnitSession:
    """What the guard learned about one unit's connection while the unit ran."""

    __slots__ = ("dirty", "expires_at", "failed", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        #: The caller's deadline (``time.monotonic()``), if any: a statement past it is not sent.
        self.expires_at: float | None = None
        #: A statement changed the session: the connection must not serve another unit.
        self.dirty = False
        #: A statement failed on the server and no savepoint was rolled back to since: the
        #: transaction is aborted, and PostgreSQL would answer COMMIT with a silent ROLLBACK.
        self.failed = False


def _leading_words(statement: str, count: int = 3) -> list[str]:
    words: list[str] = []
    position = 0
    while len(words) < count:
        match = _LEADING_WORD.match(statement, position)
        if match is None:
            break
        words.append(match.group(1).strip('"').lower())
        position = match.end()
    return words


@functools.lru_cache(maxsize=_CACHE_SIZE)
def classify(statement: str) -> Verdict:
    """The verdict on ``statement`` inside a unit of work (cached: a service runs few distinct ones)."""
    words = _leading_words(statement)
    head = words[0] if words else ""
    if head in _ENDS_TRANSACTION:
        return Verdict.REFUSE
    if head == "rollback":
        rest = [w for w in words[1:] if w not in ("work", "transaction")]
        return Verdict.ALLOW if rest[:1] == ["to"] else Verdict.REFUSE  # ROLLBACK TO SAVEPOINT stays inside
    if head == "prepare":
        return Verdict.REFUSE if words[1:2] == ["transaction"] else Verdict.DISCARD_SESSION
    if head in ("set", "reset"):
        return _classify_setting(head, words[1:])
    if head in _SESSION_STATEMENTS:
        return Verdict.DISCARD_SESSION
    if head == "create" and {"temp", "temporary"} & set(_leading_words(statement, 4)[1:]):
        return Verdict.DISCARD_SESSION
    if head == "declare" and _HOLD_CURSOR.search(statement):
        return Verdict.DISCARD_SESSION
    if _SESSION_CALLS.search(statement):
        return Verdict.DISCARD_SESSION
    return Verdict.ALLOW


def _classify_setting(head: str, rest: list[str]) -> Verdict:
    scope = rest[0] if rest else ""
    if scope in ("local", "session"):
        name = rest[1] if len(rest) > 1 else ""
    else:
        name, scope = scope, ""
    if name in _TRANSACTION_SETTINGS or (scope == "session" and name == "characteristics"):
        return Verdict.REFUSE
    if head == "set" and (scope == "local" or name == "constraints"):
        return Verdict.ALLOW  # undone when the transaction ends
    return Verdict.DISCARD_SESSION


def install(engine: AsyncEngine) -> None:
    """Check every statement sent by a unit of work on ``engine``'s connections.

    Through the dialect's execution context rather than engine events: one listener of any kind
    puts every statement of the engine on SQLAlchemy's slower event path (about 120,000 more
    instructions per checkout, measured with callgrind), while ``pre_exec`` is called anyway.
    """
    engine.dialect.execution_ctx_cls = UnitGuardedContext


def _check(unit: UnitSession, statement: str) -> None:
    if unit.expires_at is not None and time.monotonic() >= unit.expires_at:
        raise DeadlineExceededError(DeadlineStage.STATEMENT)
    verdict = classify(statement)
    if verdict is Verdict.REFUSE:
        raise TransactionControlError(
            f"{unit.kind} unit of work refused a statement that would end or change its "
            f"transaction: {' '.join(_leading_words(statement)).upper()}; use the unit's commit()"
        )
    if verdict is Verdict.DISCARD_SESSION:
        unit.dirty = True


class UnitGuardedContext(PGExecutionContext_asyncpg):
    """The asyncpg dialect's execution context, with the guard on the statements of units of work.

    Statements outside a unit (migrations, probes, the provider's own) pass untouched.
    """

    def pre_exec(self) -> None:
        super().pre_exec()  # type: ignore[no-untyped-call]  # SQLAlchemy's dialects are untyped
        unit = self.execution_options.get(UNIT_OPTION)
        if unit is not None:
            _check(unit, self.statement)

    def post_exec(self) -> None:
        super().post_exec()  # type: ignore[no-untyped-call]  # SQLAlchemy's dialects are untyped
        unit = self.execution_options.get(UNIT_OPTION)
        # Rolling back to a savepoint revives an aborted transaction (if it fails, the failure
        # marks the unit again below).
        if unit is not None and unit.failed and _leading_words(self.statement, 2) == ["rollback", "to"]:
            unit.failed = False

    def handle_dbapi_exception(self, e: BaseException) -> None:
        super().handle_dbapi_exception(e)  # type: ignore[no-untyped-call]  # untyped dialect
        # Only errors from the server or the driver come here: a refused statement was never sent.
        unit = self.execution_options.get(UNIT_OPTION)
        if unit is not None:
            unit.failed = True
