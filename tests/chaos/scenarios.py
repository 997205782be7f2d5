"""Every chaos scenario by name, in the order ``make chaos`` runs them and the table lists them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any, Final

from tests.chaos.harness import ChaosLab, Scale, ScenarioReport
from tests.chaos.scenarios_input import bad_input
from tests.chaos.scenarios_network import black_hole, latency_spike
from tests.chaos.scenarios_pool import cancellation_storm, pool_exhaustion
from tests.chaos.scenarios_process import sigterm_demo
from tests.chaos.scenarios_server import replica_restart, terminated_backends, writer_restart

Scenario = Callable[[ChaosLab, Scale], Coroutine[Any, Any, ScenarioReport]]

SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType(
    {
        "writer-restart-fast": functools.partial(writer_restart, mode="fast"),
        "writer-restart-immediate": functools.partial(writer_restart, mode="immediate"),
        "terminate-backends": terminated_backends,
        "black-hole": black_hole,
        "latency-spike": latency_spike,
        "pool-exhaustion": pool_exhaustion,
        # The same with the circuit breaker switched off: what the admission gate alone does.
        "pool-exhaustion-no-breaker": functools.partial(pool_exhaustion, breaker="always_closed"),
        "cancellation-storm": cancellation_storm,
        "sigterm-demo": sigterm_demo,
        "replica-restart": replica_restart,
        "bad-input": bad_input,
    }
)
