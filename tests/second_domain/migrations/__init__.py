"""The lending library's own Alembic scripts, run by the kernel's ``migrate(provider, scripts=...)``."""
