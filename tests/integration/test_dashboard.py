"""The Grafana dashboard shipped with the OpenTelemetry adapter: its queries name exported metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.load import wait_until
from tests.support import make_settings
from tests.telemetry_support import EXERCISED, exercise, observed_container

DASHBOARD: Final = (
    Path(__file__).resolve().parents[2] / "adapters" / "opentelemetry" / "dashboards" / "alchemy-hex.json"
)
# A metric selector: a name followed by its label matchers; ``by (...)`` / ``label_values(m, l)``.
_SELECTOR: Final = re.compile(r"\b([a-z_][a-z0-9_]*)\s*\{")
_GROUPING: Final = re.compile(r"\bby\s*\(([^)]*)\)")
_LABEL_VALUES: Final = re.compile(r"label_values\(\s*([a-z_][a-z0-9_]*)\s*,\s*([a-z_][a-z0-9_]*)\s*\)")
#: Labels Prometheus itself adds to every scraped series, and the histogram's bucket label.
_SCRAPE_LABELS: Final = frozenset({"job", "instance", "le"})


def queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["query"]


def test_the_dashboard_is_grafana_json_with_a_query_on_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())

    assert dashboard["uid"] == "alchemy-hex" and dashboard["schemaVersion"] >= 36  # noqa: PT018
    assert all(
        panel["targets"] and panel["datasource"]["type"] == "prometheus" for panel in dashboard["panels"]
    )
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("connections", "wait", "breaker", "rate limiter", "replicas", "use cases"):
        assert topic in titles


async def test_every_query_names_a_metric_and_labels_the_service_exports(replicated: tuple[str, str]) -> None:
    primary, replica = replicated
    async with observed_container(make_settings(primary, [replica], **EXERCISED)) as observed:
        await exercise(observed)
        # Replica lag shows once a probe has measured it.
        assert await wait_until(lambda: "alchemy_hex_replica_lag" in observed.scrape(), timeout_s=10.0)
        exposition = observed.scrape()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)

    for query in queries(json.loads(DASHBOARD.read_text())):
        named = _SELECTOR.findall(query) + [m for m, _ in _LABEL_VALUES.findall(query)]
        assert named, f"no metric in {query!r}"
        unknown = [name for name in named if name not in labels]
        assert not unknown, f"{query!r} names {unknown}, which the service does not export"
        known = set().union(*(labels[name] for name in named)) | _SCRAPE_LABELS
        grouped = {label.strip() for group in _GROUPING.findall(query) for label in group.split(",")}
        grouped |= {label for _, label in _LABEL_VALUES.findall(query)}
        assert grouped <= known, f"{query!r} groups by {sorted(grouped - known)}, which no series carries"
