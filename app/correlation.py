"""Correlation IDs: one per use-case call, on every log line of that call, through contextvars."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog


def current_correlation_id() -> str | None:
    """The correlation ID bound in this context, if any (for example by a web middleware)."""
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return value if isinstance(value, str) else None


@contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Bind ``correlation_id`` (or the one already bound, or a new one) for the block."""
    chosen = correlation_id or current_correlation_id() or uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(correlation_id=chosen):
        yield chosen
