"""One throwaway cluster for the chaos scenarios of a test run; each scenario clones its own database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.harness import ChaosLab, chaos_lab


@pytest.fixture(scope="session")
def lab() -> Iterator[ChaosLab]:
    """A throwaway cluster from the launcher (never a shared server): scenarios stop and restart it."""
    with chaos_lab() as started:
        yield started
