"""The launcher's one error, in a module of its own so that the CLI can catch it without the launcher."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """A throwaway PostgreSQL server could not be found, set up, started, stopped or queried."""
