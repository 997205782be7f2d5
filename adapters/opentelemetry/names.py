"""Instrument and attribute names: the semantic conventions' where there is one, ``alchemy_hex.*`` else.

Every attribute has a bounded set of values (targets, states, priorities, operation and error
type names): never SQL text, an id, a key or anything a caller chooses.
"""

from __future__ import annotations

from typing import Final

METER_NAME: Final = "alchemy_hex"

# Semantic conventions for database client metrics.
POOL_NAME: Final = "db.client.connection.pool.name"
CONNECTION_STATE: Final = "db.client.connection.state"
DB_SYSTEM: Final = "db.system.name"
DB_OPERATION: Final = "db.operation.name"
DB_STATUS_CODE: Final = "db.response.status_code"
ERROR_TYPE: Final = "error.type"
#: ``db.client.operation.duration``'s advised bucket boundaries, in seconds.
OPERATION_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
#: Waits, uses and connects: finer at the low end, where a healthy pool lives.
POOL_BUCKETS_S: Final = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)

# This project's own.
TARGET: Final = "alchemy_hex.target"
PRIORITY: Final = "alchemy_hex.priority"
BREAKER_STATE: Final = "alchemy_hex.circuit_breaker.state"
TRANSITION: Final = "alchemy_hex.circuit_breaker.transition"
DECISION: Final = "alchemy_hex.rate_limiter.decision"
READ_ROUTE: Final = "alchemy_hex.read_route"
OPERATION: Final = "alchemy_hex.operation"
