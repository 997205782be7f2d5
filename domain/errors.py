"""The domain's rule-violation root, distinct from infrastructure failures; each domain adds its own."""

from __future__ import annotations


class DomainError(Exception):
    """Root of business rule violations; the request itself is wrong, retrying will not help."""


class InvalidArgumentError(DomainError):
    """An argument (a name, an idempotency key, an id) is malformed."""
