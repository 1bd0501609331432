"""Port preflight: is a port free, and if not, which process holds it; a listener bound at once.

    holder = port_holder("127.0.0.1", 3003)   # None, or (4242, "node")
    sock = listen("127.0.0.1", 3003)          # bound and listening, or PortTaken naming the holder

Trying to bind is the fast and certain test (well under a millisecond); only when it
fails are the system's sockets searched for the holder's pid and program. The supervisor
checks before it spawns; `tooloo serve` binds its socket itself, so that what it says
("listening", or who holds the port) is what happened.
"""

from __future__ import annotations

import errno
import socket

from tooloo_cli.errors import ToolooError


class PortTaken(ToolooError):
    """The port is held by another process (exit 1)."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def is_free(host: str, port: int) -> bool:
    with socket.socket(_family(host)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_holder(host: str, port: int) -> tuple[int | None, str] | None:
    """None when the port is free; else the holder's (pid, program), pid None when unknown."""
    if is_free(host, port):
        return None
    import psutil

    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        return None, "another user's process"
    for connection in connections:
        if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
            if connection.pid is None:
                return None, "an unknown process"
            try:
                return connection.pid, psutil.Process(connection.pid).name()
            except psutil.Error:
                return connection.pid, "an exited process"
    return None, "an unknown process"


def describe_holder(holder: tuple[int | None, str]) -> str:
    """`pid 4242 (node)`, or the program's description when the pid is unknown."""
    pid, program = holder
    return f"pid {pid} ({program})" if pid else program


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on host:port; PortTaken naming the holder when another process has it."""
    sock = socket.socket(_family(host))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            holder = port_holder(host, port)
            raise PortTaken(f"port {port} on {host} is taken by "
                            f"{describe_holder(holder) if holder else 'another process'}") from None
        raise ToolooError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock
