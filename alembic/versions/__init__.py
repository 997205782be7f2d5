"""The revisions. A regular package so that ``importlib.resources`` finds the scripts in any install.

Alembic skips this file when it loads the revisions; nothing imports it but that lookup
(``adapters.sqlalchemy.migrations``).
"""
