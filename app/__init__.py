"""The kernel's application layer: the ``UseCase`` base, retries, the retry budget, metrics, correlation.

The example ledger's use cases live in ``app.ledger``, outside it.
"""

from app.use_case import UseCase

__all__ = ["UseCase"]
