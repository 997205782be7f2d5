"""``SqlAlchemyRepository``: the base of Core repositories of any domain, with contract errors at the edge."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Executable
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy.errors import translate

__all__ = ["SqlAlchemyRepository"]

T = TypeVar("T")


class SqlAlchemyRepository:
    """Runs statements on one unit of work's connection; driver errors leave as contract errors.

    Subclass it for each repository port, build it in the unit of work's repository factory from
    the :class:`~adapters.sqlalchemy.unit_of_work.Transaction` (``transaction.connection``,
    ``transaction.target``), and run every statement through :meth:`_run` or :meth:`_guarded`, so
    a constraint violation surfaces as ``DataIntegrityError``, a write in a read unit as
    ``ReadOnlyViolationError``, a lost connection as ``DatabaseUnavailableError``, each naming the target.

    A statement built once (at import, with ``bindparam()`` for what varies) and run with
    ``parameters`` costs neither its construction nor its cache key on every call: SQLAlchemy
    memoizes both on the statement object.
    """

    def __init__(self, connection: AsyncConnection, *, target: str) -> None:
        self._connection = connection
        self._target = target

    async def _run(
        self, statement: Executable, parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    ) -> Result[Any]:
        return await self._guarded(self._connection.execute(statement, parameters))

    async def _guarded(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (sa_exc.DBAPIError, OSError) as exc:
            raise translate(exc, target=self._target) from exc
