"""Structured logs: JSON lines with correlation IDs, and secrets scrubbed from every value."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from adapters.structlog.logging import SecretScrubber, configure_logging
from app.correlation import correlation_scope

SECRET = "Tr0ub4dor-and-3"


def test_json_lines_carry_the_bound_correlation_id() -> None:
    stream = io.StringIO()
    configure_logging(output_format="json", level="info", stream=stream)
    try:
        with correlation_scope("abc123"):
            structlog.get_logger().warning("pool.exhausted", target="writer")
    finally:
        structlog.reset_defaults()
    line = json.loads(stream.getvalue())
    assert line["event"] == "pool.exhausted"
    assert line["correlation_id"] == "abc123"
    assert line["target"] == "writer"


def test_known_secrets_and_dsn_passwords_are_scrubbed_everywhere() -> None:
    stream = io.StringIO()
    configure_logging(output_format="json", secrets=[SECRET], stream=stream)
    try:
        log = structlog.get_logger()
        log.error("connection.failed", dsn=f"postgresql://app:{SECRET}@db/x", note=f"pw={SECRET}")
        log.error("driver.echo", error=ValueError("postgresql://other:hunter22@db/x refused"))
        try:
            raise RuntimeError(f"boom {SECRET}")
        except RuntimeError:
            log.exception("crash")
    finally:
        structlog.reset_defaults()
    output = stream.getvalue()
    assert SECRET not in output
    assert "hunter22" not in output
    assert "app:***@db" in output


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("postgresql://app@db/x?password=hunter22", "postgresql://app@db/x?password=***"),
        (
            "postgresql+asyncpg://app@db/x?sslmode=require&password=hunter%2B22&x=1 refused",
            "postgresql+asyncpg://app@db/x?sslmode=require&password=***&x=1 refused",
        ),
        ("postgresql://app:hunter22@db/x?sslpassword=hunter33", "postgresql://app:***@db/x?sslpassword=***"),
        ("host=db password=hunter22 user=app", "host=db password=*** user=app"),
        ("host=db password='hunter 22' user=app", "host=db password=*** user=app"),
    ],
)
def test_a_password_parameter_is_scrubbed_like_a_user_info_password(text: str, scrubbed: str) -> None:
    assert SecretScrubber().scrub(text) == scrubbed


def test_the_scrubber_masks_the_longest_secret_first() -> None:
    scrubber = SecretScrubber(["abc", "abcdef"])
    assert scrubber.scrub("xabcdefx") == "x***x"


def test_secrets_learnt_after_start_up_are_scrubbed_from_then_on() -> None:
    served: list[str] = []
    scrubber = SecretScrubber(["static-secret"])
    scrubber.watch(lambda: served)
    assert scrubber.scrub("rotated-secret") == "rotated-secret"

    served.append("rotated-secret")

    assert scrubber.scrub("pw=rotated-secret and static-secret") == "pw=*** and ***"
