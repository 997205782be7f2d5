"""In-process counters of use-case outcomes and retries, for the demo summary and logs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Metrics:
    """Counts per operation: succeeded, failed and retried (by error type), refused a retry by the budget."""

    succeeded: Counter[str] = field(default_factory=Counter)
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    retried_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    retry_budget_exhausted: Counter[str] = field(default_factory=Counter)

    def count_success(self, operation: str) -> None:
        self.succeeded[operation] += 1

    def count_failure(self, operation: str, error: BaseException) -> None:
        self.failed[(operation, type(error).__name__)] += 1

    def count_retry(self, operation: str, error: BaseException | None = None) -> None:
        self.retries[operation] += 1
        if error is not None:
            self.retried_errors[(operation, type(error).__name__)] += 1

    def count_retry_budget_exhausted(self, operation: str) -> None:
        self.retry_budget_exhausted[operation] += 1

    def snapshot(self) -> dict[str, object]:
        """Plain data: ``{"succeeded": {...}, "failed": {"op": {"Error": n}}, "retries": {...}, ...}``."""
        failed: dict[str, dict[str, int]] = {}
        for (operation, error), count in sorted(self.failed.items()):
            failed.setdefault(operation, {})[error] = count
        retried: dict[str, dict[str, int]] = {}
        for (operation, error), count in sorted(self.retried_errors.items()):
            retried.setdefault(operation, {})[error] = count
        return {
            "succeeded": dict(self.succeeded),
            "failed": failed,
            "retries": dict(self.retries),
            "retried_errors": retried,
            "retry_budget_exhausted": dict(self.retry_budget_exhausted),
        }
