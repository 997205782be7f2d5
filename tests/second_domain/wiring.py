"""The lending library on the kernel's container: the same providers, with its own repositories.

``create_kernel_container(settings, lending_repositories)`` builds every kernel provider
(connection provider, policies, the unit-of-work factory), its units of work handing out the
lending repositories. The use cases take the container's unit-of-work factory, retry policy,
retry budget and metrics, as ``KernelContainer.use_case_deps`` names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from app.use_case import UseCase
from container import KernelContainer, create_kernel_container
from ports.unit_of_work import UnitOfWorkFactory
from settings import Settings
from tests.second_domain.ports import LendingRepositories
from tests.second_domain.repositories import lending_repositories
from tests.second_domain.use_cases import AddBook, LendBook, MemberLoans, RegisterMember, ReturnBook

U = TypeVar("U", bound=UseCase[LendingRepositories])


def lending_container(settings: Settings) -> KernelContainer:
    """The kernel's container for ``settings``, its units of work handing out the lending repositories."""
    return create_kernel_container(settings, lending_repositories)


def lending_units(container: KernelContainer) -> UnitOfWorkFactory[LendingRepositories]:
    """The container's unit-of-work factory, typed for the repositories this domain gave it."""
    factory: UnitOfWorkFactory[LendingRepositories] = container.unit_of_work
    return factory


@dataclass(frozen=True, slots=True)
class Lending:
    """The lending library's use cases, as a caller (an HTTP route, a CLI) would hold them."""

    register_member: RegisterMember
    add_book: AddBook
    lend_book: LendBook
    return_book: ReturnBook
    member_loans: MemberLoans


def lending_use_cases(container: KernelContainer) -> Lending:
    """The use cases, each on the container's unit of work, retry policy, retry budget and metrics."""
    units = lending_units(container)

    def make(use_case: type[U]) -> U:
        return use_case(
            uow_factory=units,
            retry_policy=container.retry_policy(),
            retry_budget=container.retry_budget(),
            metrics=container.metrics(),
        )

    return Lending(make(RegisterMember), make(AddBook), make(LendBook), make(ReturnBook), make(MemberLoans))
