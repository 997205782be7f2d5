"""The kernel names no example but the ledger, and the second domain uses only the kernel's public surface."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
HERE: Final = Path(__file__).resolve().parent
KERNEL: Final = [ROOT / name for name in ("domain", "ports", "app", "adapters", "alembic")]
ENTRY_POINTS: Final = [ROOT / name for name in ("container.py", "cli.py", "demo.py", "settings")]
LEDGER: Final = ("domain.ledger", "ports.ledger", "app.ledger", "adapters.sqlalchemy.ledger")
#: What the second domain's own modules (not its tests) may import of alchemy-hex.
PUBLIC_SURFACE: Final = {
    "adapters.sqlalchemy.repository",  # SqlAlchemyRepository
    "adapters.sqlalchemy.unit_of_work",  # Transaction, what a repository factory receives
    "app.use_case",  # UseCase
    "container",  # create_kernel_container, KernelContainer
    "domain.errors",  # DomainError, InvalidArgumentError
    "ports.connection_provider",  # Intent, CausalToken
    "ports.unit_of_work",  # UnitOfWork, UnitOfWorkFactory, UnitOptions
    "settings",  # Settings
}
OWN_MODULES: Final = ("domain", "ports", "use_cases", "tables", "repositories", "wiring")
MENTION: Final = re.compile(r"second_domain|\blending\b", re.IGNORECASE)


def _sources(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from [root] if root.is_file() else sorted(root.rglob("*.py"))


def _imported(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            modules.add(node.module)
    return modules


def test_no_kernel_module_mentions_or_imports_the_second_domain() -> None:
    sources = list(_sources(*KERNEL, *ENTRY_POINTS))
    assert len(sources) > 50, "the kernel's sources were not found"
    mentions = [str(path.relative_to(ROOT)) for path in sources if MENTION.search(path.read_text())]
    importing_tests = [
        str(path.relative_to(ROOT))
        for path in sources
        if any(module == "tests" or module.startswith("tests.") for module in _imported(path))
    ]
    assert mentions == []
    assert importing_tests == []


def test_the_second_domain_imports_nothing_of_the_ledger() -> None:
    for path in _sources(HERE):
        ledger = {m for m in _imported(path) if m.startswith(LEDGER)}
        assert ledger == set(), f"{path.name} imports the ledger"


def test_the_second_domain_is_built_on_the_kernels_public_surface_only() -> None:
    used: set[str] = set()
    for name in OWN_MODULES:
        used |= {
            m
            for m in _imported(HERE / f"{name}.py")
            if m.split(".")[0] in {"domain", "ports", "app", "adapters", "container", "settings"}
        }
    assert used <= PUBLIC_SURFACE, sorted(used - PUBLIC_SURFACE)
