"""``serve``: uvicorn on the app, with a drain on SIGTERM or SIGINT.

uvicorn alone closes its listener at the first signal, so requests still on their way get a
connection refused, and it re-raises the signal after shutting down (the process then dies by
it instead of exiting 0). Here the first signal starts a drain instead:

1. readiness fails at once and every new request is answered 503 with ``Retry-After`` and
   ``Connection: close`` (the lifecycle turns to ``draining``), for ``drain_delay_s``, so a load
   balancer that polls readiness stops sending;
2. then uvicorn's own shutdown: the listener closes, requests in flight finish (cancelled after
   ``shutdown_timeout_s``);
3. the lifespan disposes the container, last; the process exits 0.

A second signal skips what is left of the drain delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import structlog
import uvicorn

from container import setup_logging
from http_api.app import create_app
from http_api.lifecycle import Lifecycle
from settings import Settings

if TYPE_CHECKING:
    from telemetry import Telemetry

log = structlog.get_logger("http_api")

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose signals start a drain (see the module's docstring)."""

    def __init__(self, config: uvicorn.Config, *, lifecycle: Lifecycle, drain_delay_s: float) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_delay_s = drain_delay_s
        self._drain_timer: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            yield
        finally:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: signal.Signals) -> None:
        if self._drain_timer is not None:
            log.warning("shutdown.drain_cut_short", signal=signum.name)
            self._drain_timer.cancel()
            self.should_exit = True
            return
        log.warning("shutdown.draining", signal=signum.name, drain_delay_s=self._drain_delay_s)
        self._lifecycle.begin_drain()
        self._drain_timer = asyncio.get_running_loop().call_later(self._drain_delay_s, self._stop)

    def _stop(self) -> None:
        self.should_exit = True


def _telemetry() -> Telemetry | None:
    """The Prometheus exposition for ``/metrics`` when the ``telemetry`` extra is installed."""
    try:
        from telemetry import prometheus_telemetry
    except ImportError:
        log.warning("metrics.unavailable", reason="the telemetry extra is not installed: no /metrics")
        return None
    return prometheus_telemetry()


def build_server(settings: Settings) -> DrainingServer:
    """uvicorn on ``create_app(settings)``, listening where ``settings.http`` says."""
    options = settings.http
    lifecycle = Lifecycle()
    scrubber = setup_logging(settings)
    app = create_app(settings, lifecycle=lifecycle, scrubber=scrubber, telemetry=_telemetry())
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        lifespan="on",
        # structlog writes the service's log lines; uvicorn's access log would add one per request.
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, round(options.shutdown_timeout_s)),
    )
    return DrainingServer(config, lifecycle=lifecycle, drain_delay_s=options.drain_delay_s)


async def serve(settings: Settings) -> bool:
    """Serve until a signal's drain completes; whether the app started (False: start-up failed)."""
    server = build_server(settings)
    await server.serve()
    return server.started
