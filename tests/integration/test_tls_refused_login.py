"""A TLS login the server refuses leaves no socket open, however slowly the server says goodbye.

asyncpg (0.32) closes a connection whose login failed with the TLS transport's graceful ``close()``
and raises at once; asyncio then waits (up to 30s) for the server's TLS close_notify before it closes
the socket. A loaded server that has not sent it yet when the event loop ends leaves the socket to
the garbage collector, and its ResourceWarning fails whichever later test is running. Here a fake
server completes the handshake, refuses the login and then stays silent: the worst case, every time.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from adapters.sqlalchemy.connect_args import TlsOptions, client_context
from tests.tls_support import make_pki

_REFUSAL = b"SFATAL\0VFATAL\0C28000\0Mconnection requires a valid client certificate\0\0"


@pytest.fixture
def silent_refuser(tmp_path: Path) -> Iterator[int]:
    """A port where TLS is accepted, every login refused, and the connection then kept in silence."""
    pki = make_pki(tmp_path, client_role="someone", key_password="Unused-Passphrase-1")
    (tmp_path / "server.crt").write_bytes(pki.server_pem[0])
    (tmp_path / "server.key").write_bytes(pki.server_pem[1])
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        raw, _ = listener.accept()
        raw.recv(8)  # the SSLRequest
        raw.sendall(b"S")
        tls = server_context.wrap_socket(raw, server_side=True)
        held.append(tls)
        tls.recv(4096)  # the startup message
        tls.sendall(b"E" + struct.pack("!i", len(_REFUSAL) + 4) + _REFUSAL)
        done.wait(10)  # no close_notify, no FIN: the server has not got round to it yet

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(10)
        for sock in held:
            sock.close()
        listener.close()


def test_a_refused_tls_login_leaves_no_socket_open_once_the_event_loop_is_gone(silent_refuser: int) -> None:
    async def log_in() -> None:
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await asyncpg.connect(
                host="127.0.0.1",
                port=silent_refuser,
                user="someone",
                database="db",
                ssl=client_context(TlsOptions(mode="require")),
                timeout=5,
            )

    with asyncio.Runner() as runner:  # the loop ends as a test's or a service's does, soon after
        runner.run(log_in())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
