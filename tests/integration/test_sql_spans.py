"""Optional SQL spans (``telemetry.sql_spans``) on a real primary and streaming replica, in-memory exporter.

Also the check that ``opentelemetry-instrumentation-sqlalchemy``'s ``EngineTracer`` works on the
SQLAlchemy 2.1 pinned here, although its ``instruments`` extra says ``sqlalchemy < 2.1``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import text

from ports.connection_provider import Intent
from ports.errors import ConfigurationError, HexError
from tests.support import make_settings
from tests.telemetry_support import observed_container, tree

pytestmark = pytest.mark.replication


def sql_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is SpanKind.CLIENT]


async def test_with_sql_spans_a_write_and_a_read_show_their_statements_under_the_unit_on_its_engine(
    replicated: tuple[str, str],
) -> None:
    primary, replica = replicated
    settings = make_settings(primary, [replica], telemetry={"sql_spans": True})
    async with observed_container(settings) as observed:
        container = observed.container
        assert container.sql_spans() == 2  # the writer's engine and the replica's
        written = await container.open_account()("sql-writer")
        await container.connection_provider().wait_for_replay()
        wrote = observed.spans.get_finished_spans()
        observed.spans.clear()
        assert await container.get_balance()(written) == 0
        read = observed.spans.get_finished_spans()

    for spans, operation, target, server in (
        (wrote, "open_account", "writer", primary),
        (read, "get_balance", "replica-1", replica),
    ):
        children = tree(spans)
        [unit] = [span for span in children[operation] if span.name == "uow"]
        assert (unit.attributes or {})["db.client.connection.pool.name"] == target
        statements = children["uow"]
        assert statements, f"no SQL span under {operation}'s unit"
        assert statements == sql_spans(
            [s for s in spans if s.parent and s.parent.span_id == unit.context.span_id]
        )
        port = urlsplit(server).port
        for span in statements:
            attributes = dict(span.attributes or {})
            assert attributes["db.system"] == "postgresql"
            assert attributes["net.peer.port"] == port, f"{operation}: a statement on the wrong engine"
            assert span.context.trace_id == unit.context.trace_id
        keywords = {str((s.attributes or {})["db.statement"]).split()[0].upper() for s in statements}
        assert ("INSERT" in keywords) if operation == "open_account" else ("SELECT" in keywords)
        assert "sql-writer" not in str([s.attributes for s in statements])  # placeholders, no parameters


async def test_a_failed_statement_is_a_failed_sql_span(replicated: tuple[str, str]) -> None:
    primary, replica = replicated
    async with observed_container(
        make_settings(primary, [replica], telemetry={"sql_spans": True})
    ) as observed:
        with pytest.raises(HexError, match="22012"):
            async with observed.container.connection_provider().connection(Intent.WRITE) as connection:
                await connection.execute(text("SELECT 1 / 0"))
        [failed] = [
            s for s in sql_spans(list(observed.spans.get_finished_spans())) if "1 / 0" in str(s.attributes)
        ]

    assert failed.status.status_code is StatusCode.ERROR


async def test_without_the_setting_there_is_no_sql_span(replicated: tuple[str, str]) -> None:
    primary, replica = replicated
    async with observed_container(make_settings(primary, [replica])) as observed:
        account = await observed.container.open_account()("sql-off")
        await observed.container.connection_provider().wait_for_replay()
        await observed.container.get_balance()(account)
        spans = list(observed.spans.get_finished_spans())
        traced_engines = observed.container.sql_spans()

    assert [span.name for span in spans if span.name == "uow"] == ["uow", "uow"]
    assert sql_spans(spans) == []
    assert traced_engines == 0


def test_the_setting_is_a_boolean_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEX_TELEMETRY__SQL_SPANS", "true")
    assert make_settings("postgresql://u@localhost/db").telemetry.sql_spans is True
    monkeypatch.setenv("HEX_TELEMETRY__SQL_SPANS", "sometimes")
    with pytest.raises(ConfigurationError, match=r"telemetry\.sql_spans"):
        make_settings("postgresql://u@localhost/db")
