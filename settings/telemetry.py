"""What the service traces beyond its use cases: the optional SQL spans."""

from __future__ import annotations

import importlib.util
from typing import Final, Self

from pydantic import model_validator

from settings.group import SettingsGroup

#: The distribution the SQL spans need, and the module it is found by.
SQL_INSTRUMENTATION: Final = "opentelemetry-instrumentation-sqlalchemy"
_SQL_INSTRUMENTATION_MODULE: Final = "opentelemetry.instrumentation.sqlalchemy"


class TelemetrySettings(SettingsGroup):
    """Spans beyond the use case's and the unit of work's.

    ``sql_spans``: a ``CLIENT`` span per statement on every engine of the connection provider
    (the writer and each replica), from ``opentelemetry-instrumentation-sqlalchemy`` (the
    ``telemetry`` extra), under the unit of work's span. Off by default: every statement pays for
    the listeners even when no span is exported, and the use case's spans already say which
    target served a unit and how long it took.
    """

    sql_spans: bool = False

    @model_validator(mode="after")
    def _check_instrumentation(self) -> Self:
        if self.sql_spans and importlib.util.find_spec(_SQL_INSTRUMENTATION_MODULE) is None:
            raise ValueError(
                f"telemetry.sql_spans: needs {SQL_INSTRUMENTATION} (pip install 'alchemy-hex[telemetry]')"
            )
        return self
