"""tooloo_cli.loopback, the commands' HTTP/1.1 client, against real sockets that answer as scripted."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tooloo_cli.loopback import BadAnswer, TimedOut, Unreachable, gather, request

Script = Callable[[socket.socket, bytes], None]  # (the accepted connection, the request it sent)


def _read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
            while len(body) < length:
                body += connection.recv(65536)
    return data


class Served:
    def __init__(self, address: tuple[str, int] | Path) -> None:
        self.address = address
        self.received: list[bytes] = []


@contextmanager
def _server(script: Script, path: Path | None = None) -> Iterator[Served]:
    """A listener on a free loopback port (or a Unix socket at `path`) running `script` on each connection;
    what it received is kept. Stopped, and its thread joined, on the way out."""
    listener = socket.socket(socket.AF_UNIX if path is not None else socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(str(path) if path is not None else ("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    served = Served(path if path is not None else listener.getsockname())
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with connection:
                request_bytes = _read_request(connection)
                served.received.append(request_bytes)
                script(connection, request_bytes)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _answer(raw: bytes) -> Script:
    return lambda connection, _: connection.sendall(raw)


def test_a_body_by_content_length_and_the_request_it_sends() -> None:
    with _server(_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: 1\r\n\r\n{\"ok\": true}extra")) as server:
        answer = request(server.address, "POST", "/stop", b'{"services": null}', timeout=2,
                         headers={"Content-Type": "application/json"})
    assert answer.status == 200 and answer.json() == {"ok": True} and answer.header("X-A") == "1"
    sent = server.received[0]
    assert sent.startswith(b"POST /stop HTTP/1.1\r\n") and b"\r\nConnection: close\r\n" in sent
    assert b"\r\nContent-Length: 18\r\n" in sent and sent.endswith(b'{"services": null}')


def test_chunked_and_to_the_close_bodies_and_interim_answers() -> None:
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\n"
               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n")
    with _server(_answer(chunked)) as server:
        assert request(server.address, "GET", "/x", timeout=2).json() == {"a": 1}
    with _server(_answer(b"HTTP/1.1 200 OK\r\n\r\nuntil the close")) as server:
        assert request(server.address, "GET", "/x", timeout=2).body == b"until the close"


def test_no_body_for_head_204_and_304_whatever_the_length_says() -> None:
    for status, method in ((200, "HEAD"), (204, "GET"), (304, "GET")):
        raw = f"HTTP/1.1 {status} X\r\nContent-Length: 50\r\n\r\n".encode()
        with _server(lambda connection, _: (connection.sendall(raw), time.sleep(1))) as server:
            started = time.monotonic()
            answer = request(server.address, method, "/x", timeout=5)
            took = time.monotonic() - started  # not waiting for 50 bytes that never come
        assert answer.status == status and answer.body == b"" and took < 0.9


def test_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with _server(_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"), path) as server:
        assert request(path, "GET", "/states?after=1&wait=2", timeout=2).json() == {}
    assert server.received[0].startswith(b"GET /states?after=1&wait=2 HTTP/1.1\r\nHost: localhost\r\n")


def test_failures_each_say_what_happened(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()
    with pytest.raises(Unreachable, match="nothing listens"):
        request(free, "GET", "/", timeout=1)
    with pytest.raises(Unreachable, match="no socket"):
        request(tmp_path / "absent.sock", "GET", "/", timeout=1)
    with _server(lambda connection, _: None) as server:  # closes without a word
        with pytest.raises(Unreachable, match="without answering"):
            request(server.address, "GET", "/", timeout=2)
    with _server(lambda connection, _: time.sleep(1.5)) as server:
        started = time.monotonic()
        with pytest.raises(TimedOut, match="within 0.3 s"):
            request(server.address, "GET", "/", timeout=0.3)
        assert time.monotonic() - started < 1.0  # one deadline for the whole exchange
    with _server(_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")) as server:
        with pytest.raises(BadAnswer, match="before the whole answer"):
            request(server.address, "GET", "/", timeout=2)
    with _server(_answer(b"SSH-2.0-OpenSSH\r\n\r\n")) as server:
        with pytest.raises(BadAnswer, match="HTTP/1.1"):
            request(server.address, "GET", "/", timeout=2)
    with _server(_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)) as server:
        with pytest.raises(BadAnswer, match="larger than 1,000 bytes"):
            request(server.address, "GET", "/", timeout=2, limit=1000)
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    with _server(_answer(switching)) as server:  # before the fix: a raw HttpParserUpgrade
        with pytest.raises(BadAnswer, match="101 Switching Protocols"):
            request(server.address, "GET", "/", timeout=2)


def test_a_request_the_peer_does_not_read_is_cut_at_the_one_deadline() -> None:
    """A connection that takes its time and a body nobody reads share one deadline (once each had it all)."""
    with socket.socket() as listener:  # accepts (the kernel does), never reads: the send blocks once buffers fill
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        started = time.monotonic()
        with pytest.raises(TimedOut, match="within 0.5 s"):
            request(listener.getsockname(), "POST", "/", b"x" * 64 * 1024 * 1024, timeout=0.5)
        assert time.monotonic() - started < 0.8


def test_a_unix_socket_whose_backlog_is_full_is_waited_for_then_timed_out(tmp_path: Path) -> None:
    """A supervisor too busy to accept: its socket's backlog fills, and a connect says EAGAIN at once
    (once a raw BlockingIOError); that is waited out until the deadline, like a TCP connect."""
    path = tmp_path / "busy.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(0)
        waiting = []
        try:
            for _ in range(64):  # fill the backlog: a connect that would wait fails at once
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.setblocking(False)
                try:
                    client.connect(str(path))
                except BlockingIOError:
                    client.close()
                    break
                waiting.append(client)
            started = time.monotonic()
            with pytest.raises(TimedOut, match=r"no connection to .*busy.sock within 0.3 s"):
                request(path, "GET", "/status", timeout=0.3)
            assert 0.25 < time.monotonic() - started < 0.8
        finally:
            for client in waiting:
                client.close()


def test_a_connection_reset_while_connecting_is_unreachable(tmp_path: Path) -> None:
    """A Unix socket whose listener is gone but whose file remains refuses; one closed mid-handshake resets."""
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed supervisor leaves
    with pytest.raises(Unreachable, match="nothing listens"):
        request(path, "GET", "/status", timeout=1)


def test_what_would_split_a_request_is_refused_before_anything_is_sent() -> None:
    with _server(_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
        for method, target, headers in (("GET", "/a b", {}), ("GET", "/a\r\nX: 1", {}),
                                        ("GE T", "/", {}), ("GET", "/", {"X": "1\r\nY: 2"})):
            with pytest.raises(ValueError):
                request(server.address, method, target, timeout=1, headers=headers)
        time.sleep(0.3)  # had anything been sent, the server would have it by now
        assert server.received == []


def test_gather_runs_at_once_keeps_the_order_and_raises_the_first_error() -> None:
    started = time.monotonic()
    assert gather([lambda i=i: (time.sleep(0.3), i)[1] for i in range(5)]) == [0, 1, 2, 3, 4]
    assert time.monotonic() - started < 1.0
    assert gather([]) == []

    def fail() -> int:
        raise KeyError("second")

    with pytest.raises(KeyError, match="second"):
        gather([lambda: 1, fail, lambda: 3])
