"""pg_ctl for one data directory: starting with a bounded wait, stopping, promoting."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from adapters.postgres import files
from adapters.postgres.binaries import PgBinaries, ServerUser, run_tool, tail
from adapters.postgres.errors import ClusterError
from adapters.postgres.processes import kill_postmaster, live_postmaster

StopMode = Literal["smart", "fast", "immediate"]

# pg_ctl gets the whole timeout for its own wait; the process gets this much more before we kill it.
_MARGIN_S: Final = 10.0


class PortTakenError(ClusterError):
    """Another process bound the server's port first, typically between picking it and starting."""


@dataclass(frozen=True, slots=True)
class PgCtl:
    """pg_ctl for ``data_dir``, run as the server user; every wait is bounded by ``timeout_s``."""

    binaries: PgBinaries
    user: ServerUser | None
    data_dir: Path
    timeout_s: float

    def start(self, *, log_file: Path) -> None:
        """Start the server and wait until it accepts connections; a failure quotes the server log."""
        offset = log_file.stat().st_size if log_file.exists() else 0
        try:
            self._run("start", "-l", log_file)
        except ClusterError as exc:
            # pg_ctl may give up while the postmaster is still starting: leave nothing behind.
            kill_postmaster(self.data_dir, grace_s=self.timeout_s)
            log = files.read_from(log_file, offset)
            error = PortTakenError if "Address already in use" in log else ClusterError
            message = f"server {self.data_dir} did not start: {exc}\n--- server log ---\n{tail(log)}"
            raise error(message) from exc

    def stop(self, mode: StopMode) -> None:
        """Stop the server with pg_ctl's ``smart``, ``fast`` or ``immediate`` shutdown and wait for it."""
        self._run("stop", "-m", mode)

    def promote(self) -> None:
        """Promote a standby and wait until pg_ctl sees it out of recovery."""
        self._run("promote")

    def stop_at_once(self) -> None:
        """Immediate shutdown if the server runs; SIGKILL when even that fails."""
        if live_postmaster(self.data_dir) is None:
            return
        try:
            self.stop("immediate")
        except ClusterError:
            kill_postmaster(self.data_dir, grace_s=self.timeout_s)

    def _run(self, action: str, *args: str | Path) -> None:
        wait = ["-w", "-t", str(math.ceil(self.timeout_s))]
        command = [self.binaries.tool("pg_ctl"), action, *wait, "-D", self.data_dir, *args]
        run_tool(command, binaries=self.binaries, user=self.user, timeout_s=self.timeout_s + _MARGIN_S)
