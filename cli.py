"""alchemy-hex command line: ``migrate``, ``demo``, ``serve`` and the ledger's use cases.

With no ``DATABASE_URL`` every command runs on a throwaway local PostgreSQL of its own (a primary
and, for ``demo`` and ``serve``, a streaming replica) started by the demo tooling (``demo.py``),
and removed on exit. ``migrate`` and ``demo`` migrate first; the use-case commands and ``serve`` do
so only on a throwaway server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from adapters.postgres.errors import ClusterError
from adapters.sqlalchemy.migrations import migrate
from adapters.structlog.logging import SecretScrubber
from app.ledger.workload import WorkloadPlan
from container import (
    Container,
    create_container,
    setup_logging,
    start_resources,
    stop_resources,
    watch_served_secrets,
)
from demo import embedded_database, print_summary, run_demo
from demo_faults import (
    DEFAULT_TIMELINE,
    MIN_SECONDS,
    FaultLab,
    FaultPlan,
    FaultScript,
    fault_lab,
    print_faults,
)
from domain.errors import DomainError
from ports.errors import ConfigurationError, HexError
from settings import HttpSettings, Settings, load_settings

log = structlog.get_logger("cli")

_DEMO_SECONDS: Final = 5.0
#: Beyond the scripted time, how long ``demo --faults`` may wait for the service to come back.
_FAULTS_SLACK_S: Final = 60.0


async def _with_container(
    settings: Settings,
    command: str,
    args: argparse.Namespace,
    scrubber: SecretScrubber,
    *,
    fresh: bool,
    lab: FaultLab | None = None,
) -> dict[str, Any]:
    container = create_container(settings)
    watch_served_secrets(container, scrubber)
    metrics_port = getattr(args, "metrics_port", None)
    exported = _exported(container) if metrics_port is not None else None
    await start_resources(container)
    server = None if exported is None or metrics_port is None else await exported.serve(metrics_port)
    if server is not None:
        port = server.sockets[0].getsockname()[1]
        log.info("metrics.serving", url=f"http://127.0.0.1:{port}/metrics")
    try:
        # Only what needs the newest schema migrates: a use case on a service's own database does
        # not take the migration lock (run ``migrate`` when deploying); a throwaway one starts empty.
        if command in ("migrate", "demo") or fresh:
            await _migrate(container)
        if command == "migrate":
            return {"migrated": "head"}
        if command == "demo":
            return await _demo(container, args, lab)
        return await _use_case(container, command, args)
    finally:
        if server is not None:
            server.close()
        await stop_resources(container)
        if exported is not None:
            exported.shutdown()


async def _demo(container: Container, args: argparse.Namespace, lab: FaultLab | None) -> dict[str, Any]:
    progress = not args.json and sys.stderr.isatty()
    if lab is None:
        plan = WorkloadPlan(accounts=args.accounts, workers=args.workers, duration_s=args.seconds)
        return await run_demo(container, plan, progress=progress)
    faults = FaultPlan().scaled_to(args.seconds)
    script = FaultScript(lab, container, faults, timeline_path=Path(args.timeline))
    # The script ends the workload; the plan's length only bounds a script that hangs. A client
    # backs off after a failure, as the chaos suite's do, rather than spin on an open circuit.
    bound = faults.total_s + _FAULTS_SLACK_S
    plan = WorkloadPlan(accounts=args.accounts, workers=args.workers, duration_s=bound, failure_pause_s=0.01)
    return await run_demo(container, plan, progress=progress, companion=script)


@contextlib.contextmanager
def _database(
    settings: Settings, args: argparse.Namespace, replicas: int
) -> Iterator[tuple[Settings, FaultLab | None]]:
    """The settings to run with: as given, or pointed at throwaway servers (behind a proxy for --faults)."""
    if not getattr(args, "faults", False):
        with embedded_database(settings, replicas=replicas) as ready:
            yield ready, None
        return
    if args.seconds < MIN_SECONDS:
        raise ConfigurationError(f"demo --faults needs --seconds of at least {MIN_SECONDS:g}")
    with fault_lab(settings, replicas=replicas) as (ready, lab):
        yield ready, lab


def _quiet_for_faults(settings: Settings) -> Settings:
    """Errors only, unless ``HEX_LOGGING__LEVEL`` says otherwise: the faults provoke thousands of
    expected warnings (circuit opened, connection failed), which would bury the script's lines."""
    if any(name.upper() == "HEX_LOGGING__LEVEL" for name in os.environ):
        return settings
    return settings.model_copy(update={"logging": settings.logging.model_copy(update={"level": "error"})})


def _exported(container: Container) -> Any:
    """The SDK and the Prometheus exposition for ``--metrics-port`` (the ``telemetry`` extra)."""
    try:
        from telemetry import prometheus_telemetry, use_telemetry
    except ImportError as error:
        raise ConfigurationError(
            f"--metrics-port needs the telemetry extra (pip install 'alchemy-hex[telemetry]'): {error}"
        ) from None
    exported = prometheus_telemetry()
    use_telemetry(container, exported)
    return exported


async def _migrate(container: Container) -> None:
    """Migrate as the schema owner (``migration.url``), on a connection of its own."""
    provider = container.migration_provider()
    try:
        await migrate(provider)
    finally:
        await provider.aclose()


async def _use_case(container: Container, command: str, args: argparse.Namespace) -> dict[str, Any]:
    if command == "open-account":
        return {"account_id": str(await container.open_account()(args.owner))}
    if command == "deposit":
        receipt = await container.deposit()(args.account, args.amount, idempotency_key=args.key)
        return {"transfer_id": str(receipt.transfer_id), "replayed": receipt.replayed}
    if command == "transfer":
        receipt = await container.transfer()(
            args.source, args.destination, args.amount, idempotency_key=args.key
        )
        return {"transfer_id": str(receipt.transfer_id), "replayed": receipt.replayed}
    if command == "balance":
        return {"balance": await container.get_balance()(args.account)}
    statement = await container.get_statement()(args.account, limit=args.limit)
    return {
        "balance": statement.balance,
        "entries": [
            {"kind": e.kind.value, "amount": e.amount, "transfer_id": str(e.transfer_id)}
            for e in statement.entries
        ],
    }


def _bounded(kind: Callable[[str], float], low: float, high: float) -> Callable[[str], Any]:
    """An argparse ``type`` that also checks ``low <= value <= high`` (bad input exits 2, named)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _serve(settings: Settings, args: argparse.Namespace, scrubber: SecretScrubber, *, fresh: bool) -> int:
    """Run the HTTP service until SIGTERM or SIGINT has drained it; 0 once stopped cleanly."""
    from http_api import serve  # FastAPI and uvicorn are loaded by this command only

    if fresh:
        asyncio.run(_with_container(settings, "migrate", args, scrubber, fresh=True))
    chosen = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    http = HttpSettings(**{**settings.http.model_dump(), **chosen})
    started = asyncio.run(serve(settings.model_copy(update={"http": http})))
    return 0 if started else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alchemy-hex", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="upgrade the schema to the newest revision (under an advisory lock)")
    demo = sub.add_parser("demo", help="run a concurrent ledger workload and print a summary")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.add_argument(
        "--seconds",
        type=_bounded(float, 0.001, 86_400.0),
        help=f"how long the load runs (default {_DEMO_SECONDS:g}); with --faults, the scripted sequence "
        f"(default {FaultPlan().total_s:g}), its steps scaled to fit",
    )
    demo.add_argument(
        "--faults",
        action="store_true",
        help="on the throwaway servers only: stop and restart a replica, restart the writer and add "
        "latency on its path while the load runs; then the summary and a timeline picture",
    )
    demo.add_argument(
        "--timeline",
        default=str(DEFAULT_TIMELINE),
        help="where --faults writes its timeline picture (default: %(default)s in the current folder)",
    )
    demo.add_argument("--workers", type=_bounded(int, 1, 1000), default=16)
    demo.add_argument("--accounts", type=_bounded(int, 1, 10_000), default=20)
    demo.add_argument("--ack-file", help="write the idempotency key of every acknowledged transfer here")
    demo.add_argument(
        "--replicas", type=int, default=1, help="replicas of the embedded server (no DATABASE_URL)"
    )
    demo.add_argument(
        "--metrics-port",
        type=_bounded(int, 0, 65_535),
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics during the demo (0: a free port)",
    )
    serve_cmd = sub.add_parser("serve", help="serve the ledger over HTTP until SIGTERM (then drain)")
    serve_cmd.add_argument("--host", help="address to listen on (default: http.host, 127.0.0.1)")
    serve_cmd.add_argument(
        "--port", type=_bounded(int, 1, 65_535), help="port to listen on (default: http.port, 8000)"
    )
    serve_cmd.add_argument(
        "--replicas", type=int, default=1, help="replicas of the embedded server (no DATABASE_URL)"
    )
    sub.add_parser("open-account").add_argument("owner")
    for name in ("deposit", "balance", "statement"):
        cmd = sub.add_parser(name)
        cmd.add_argument("account")
        if name == "deposit":
            cmd.add_argument("amount", type=int)
            cmd.add_argument("--key", required=True, help="idempotency key")
        if name == "statement":
            cmd.add_argument("--limit", type=int, default=50)
    transfer = sub.add_parser("transfer")
    transfer.add_argument("source")
    transfer.add_argument("destination")
    transfer.add_argument("amount", type=int)
    transfer.add_argument("--key", required=True, help="idempotency key")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status.

    0 ok; 1 refused by a rule or the database, or no throwaway server without ``DATABASE_URL``;
    2 bad input or settings.
    """
    args = _parser().parse_args(argv)
    if args.command == "demo" and args.seconds is None:
        args.seconds = FaultPlan().total_s if args.faults else _DEMO_SECONDS
    scrubber = SecretScrubber()
    try:
        settings = load_settings()
        if getattr(args, "faults", False):
            settings = _quiet_for_faults(settings)
        scrubber = setup_logging(settings)
        fresh = settings.database.url is None
        replicas = args.replicas if args.command in ("demo", "serve") else 0
        with _database(settings, args, replicas) as (ready, lab):
            if args.command == "serve":
                return _serve(ready, args, scrubber, fresh=fresh)
            if getattr(args, "ack_file", None):
                # Created up front so that a crash before the end still leaves a file to read.
                Path(args.ack_file).write_text("")
            result = asyncio.run(_with_container(ready, args.command, args, scrubber, fresh=fresh, lab=lab))
    except (HexError, DomainError) as error:
        print(f"alchemy-hex: error: {scrubber.scrub(str(error))}", file=sys.stderr)
        return 2 if isinstance(error, DomainError | ConfigurationError) else 1
    except ClusterError as error:
        # Only the throwaway server raises it: say so, and how to do without one.
        print(
            "alchemy-hex: error: DATABASE_URL is not set, and the throwaway PostgreSQL server used "
            f"instead failed: {scrubber.scrub(str(error))}",
            file=sys.stderr,
        )
        return 1
    except Exception as error:
        # A bug, not a refusal: say so plainly (scrubbed) instead of dumping a driver traceback.
        first_line = str(error).splitlines()[0] if str(error) else ""
        print(
            f"alchemy-hex: internal error: {type(error).__name__}: {scrubber.scrub(first_line)}",
            file=sys.stderr,
        )
        return 1
    acknowledged = result.pop("acknowledged_keys", [])
    if getattr(args, "ack_file", None):
        Path(args.ack_file).write_text("".join(f"{key}\n" for key in acknowledged))
    if args.command == "demo" and not args.json:
        print_summary(result)
        if "faults" in result:
            print_faults(result["faults"])
    else:
        print(json.dumps(result))
    passed = result.get("balance_check", {}).get("passed", True)
    return 0 if passed and result.get("faults", {}).get("passed", True) else 1


def main() -> None:
    """Console-script entry point."""
    raise SystemExit(run())


if __name__ == "__main__":
    main()
