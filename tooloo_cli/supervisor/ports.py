"""Port preflight: is a port free, and if not, which process holds it.

    holder = port_holder("127.0.0.1", 3003)   # None, or (4242, "node")

Trying to bind is the fast and certain test (well under a millisecond); only when it
fails are the system's sockets searched for the holder's pid and program.
"""

from __future__ import annotations

import errno
import socket


def is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
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
