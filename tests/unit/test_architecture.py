"""The dependency rule is a test, not a hope: import-linter's contracts from pyproject.toml."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_the_layers_and_forbidden_imports_hold() -> None:
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_the_packages_use_the_opentelemetry_api_only() -> None:
    # import-linter names external packages by their top level only: the SDK and the exporters
    # (opentelemetry.sdk, opentelemetry.exporter) and the instrumentations (opentelemetry.instrumentation,
    # wired by telemetry.py for the SQL spans) are checked here, line by line.
    offending = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for package in ("domain", "ports", "app", "adapters")
        for path in (ROOT / package).rglob("*.py")
        for line in path.read_text().splitlines()
        if line.lstrip().startswith(("import ", "from "))
        and any(
            name in line
            for name in (
                "opentelemetry.sdk",
                "opentelemetry.exporter",
                "opentelemetry.instrumentation",
                "prometheus_client",
            )
        )
    ]
    assert not offending
