"""A second example domain, a lending library, written only against the kernel's public surface.

It proves that the kernel is not the ledger's: members borrow books, a book is lent to at most one
member at a time and a member holds at most three books. It has its own domain module, repository
ports, use cases on :class:`app.use_case.UseCase`, Core repositories on
:class:`adapters.sqlalchemy.repository.SqlAlchemyRepository`, its own tables (in a database of
its own) and its wiring (:mod:`.wiring`: the container with its ``repositories`` provider
overridden). It imports nothing of the ledger and no kernel module mentions it; it lives under
``tests/`` because it is not meant to ship.
"""
