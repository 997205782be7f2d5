"""The example ledger's tables and Core repositories, on the kernel's ``SqlAlchemyRepository``."""
