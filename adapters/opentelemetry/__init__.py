"""Metrics through the OpenTelemetry API: the semantic-convention pool metrics and this project's own.

Observable instruments read ``provider.stats()`` and the policies' counters when a reader collects
(the hot path pays nothing for them); histograms get each duration from the provider's
:class:`~adapters.sqlalchemy.pool_observer.PoolObserver`. With no SDK installed every instrument is
the API's no-op. ``telemetry.py`` (an entry point's module) installs the SDK and the exporter.
"""

from adapters.opentelemetry.names import METER_NAME
from adapters.opentelemetry.pool_metrics import OtelPoolObservers, observe_pools
from adapters.opentelemetry.service_metrics import PolicySources, observe_policies

__all__ = ["METER_NAME", "OtelPoolObservers", "PolicySources", "observe_policies", "observe_pools"]
