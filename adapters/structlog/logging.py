"""structlog configuration: JSON or console lines, correlation IDs from contextvars, secrets scrubbed."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Final, Literal, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import Processor

_MASK: Final = "***"
# user:password@ in any URL-looking text, the shape a driver error echoing a DSN takes.
_DSN_PASSWORD: Final = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):(?P<password>[^@\s]+)@", re.I)
# password=... in a query string or a libpq keyword/value DSN (quoted there if it has spaces); also
# catches sslpassword=, key_password= and the like.
_PARAMETER_PASSWORD: Final = re.compile(
    r"(?P<key>password=)(?P<password>'(?:[^'\\]|\\.)*'|[^&\s#'\"]+)", re.I
)


class SecretScrubber:
    """A last line of defence: replace every known secret, and any DSN password, in every value.

    A DSN password is ``user:password@`` in a URL, or a ``password=`` parameter (query string or
    libpq's keyword/value form).

    Secrets known at start-up are given to the constructor; secrets only known later (a password
    re-read from a rotated file, a fresh token) come from sources added with :meth:`watch`, asked
    on every scrub.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = frozenset(s for s in secrets if s)
        self._sources: list[Callable[[], Iterable[str]]] = []

    def watch(self, source: Callable[[], Iterable[str]]) -> None:
        """Also mask whatever ``source()`` returns at the time of each scrub (cheap; called often)."""
        self._sources.append(source)

    def scrub(self, text: str) -> str:
        return self._mask(text, self._known())

    def _known(self) -> list[str]:
        known = self._secrets.union(*(source() for source in self._sources))
        # Longest first, so a secret that contains another is masked whole.
        return sorted((s for s in known if s), key=len, reverse=True)

    @staticmethod
    def _mask(text: str, secrets: list[str]) -> str:
        for secret in secrets:
            text = text.replace(secret, _MASK)
        text = _DSN_PASSWORD.sub(rf"\g<scheme>:{_MASK}@", text)
        return _PARAMETER_PASSWORD.sub(rf"\g<key>{_MASK}", text)

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        secrets = self._known()
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = self._mask(value, secrets)
            elif isinstance(value, BaseException):
                event[key] = self._mask(f"{type(value).__name__}: {value}", secrets)
        return event


def add_trace_context(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add ``trace_id`` and ``span_id`` (W3C hex) of the current span, when there is a real one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


def configure_logging(
    *,
    output_format: Literal["json", "console"],
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> SecretScrubber:
    """Configure structlog for the process; returns the scrubber so callers can mask their own output."""
    scrubber = SecretScrubber(secrets)
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if output_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrubber,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    return scrubber
