"""Every statement timed for ``db.client.operation.duration``, only on an observed provider's engines.

Through the dialect's execution context, as the statement guard is, and for the same reason: one
engine event listener puts every statement on SQLAlchemy's slower event path. ``pre_exec`` runs
just before the driver is called and ``post_exec`` just after its answer, so the time between
them is the round trip of the statement, its rows included.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy.pool_observer import PoolObserver
from adapters.sqlalchemy.statement_guard import UnitGuardedContext

_OBSERVER = "hex_pool_observer"


def install(engine: AsyncEngine, observer: PoolObserver) -> None:
    """Time every statement of ``engine``; ``observer.operation`` gets each duration."""
    dialect: Any = engine.dialect
    setattr(dialect, _OBSERVER, observer)
    dialect.execution_ctx_cls = TimedContext


class TimedContext(UnitGuardedContext):
    """The guarded execution context, timing each statement from the driver call to its answer."""

    _hex_started: float | None = None

    def pre_exec(self) -> None:
        super().pre_exec()
        self._hex_started = time.perf_counter()

    def post_exec(self) -> None:
        self._report(None)
        super().post_exec()

    def handle_dbapi_exception(self, e: BaseException) -> None:
        self._report(e)
        super().handle_dbapi_exception(e)

    def _report(self, error: BaseException | None) -> None:
        started, self._hex_started = self._hex_started, None
        if started is not None:  # a statement refused before it was sent took no time
            observer: PoolObserver = getattr(self.dialect, _OBSERVER)
            observer.operation(time.perf_counter() - started, self.statement, error)
