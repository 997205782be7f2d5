"""The lending library on the kernel's container: the same providers, with its own repositories.

``create_container(settings)`` builds every kernel provider (connection provider, policies, the
unit-of-work factory); overriding its ``repositories`` provider, one provider as the style guide
asks, makes every unit of work hand out the lending repositories. The use cases take the
container's unit-of-work factory, retry policy, retry budget and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, cast

from dependency_injector import providers

from app.use_case import UseCase
from container import Container, create_container
from ports.unit_of_work import UnitOfWorkFactory
from settings import Settings
from tests.second_domain.ports import LendingRepositories
from tests.second_domain.repositories import lending_repositories
from tests.second_domain.use_cases import AddBook, LendBook, MemberLoans, RegisterMember, ReturnBook

U = TypeVar("U", bound=UseCase[LendingRepositories])


def lending_container(settings: Settings) -> Container:
    """The kernel's container for ``settings``, its units of work handing out the lending repositories."""
    container = create_container(settings)
    container.repositories.override(providers.Object(lending_repositories))
    return container


def lending_units(container: Container) -> UnitOfWorkFactory[LendingRepositories]:
    """The container's unit-of-work factory, typed for the repositories it now hands out.

    The cast is needed because ``Container.unit_of_work`` is annotated with the ledger's
    repositories: overriding ``repositories`` changes what it builds, not its static type.
    """
    return cast(UnitOfWorkFactory[LendingRepositories], container.unit_of_work)


@dataclass(frozen=True, slots=True)
class Lending:
    """The lending library's use cases, as a caller (an HTTP route, a CLI) would hold them."""

    register_member: RegisterMember
    add_book: AddBook
    lend_book: LendBook
    return_book: ReturnBook
    member_loans: MemberLoans


def lending_use_cases(container: Container) -> Lending:
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
