"""The HTTP connection guard, against real `tooloo serve` processes: header size, read timeout, connection cap."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tooloo_cli.bench.stack import EphemeralStack
from tooloo_cli.config import Config

READ_TIMEOUT = 1.0
MAX_CONNECTIONS = 64


def _guarded(config: Config) -> None:
    config.stack.read_timeout = READ_TIMEOUT
    config.stack.max_connections = MAX_CONNECTIONS


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EphemeralStack]:
    with EphemeralStack(tmp_path_factory.mktemp("guarded"), _guarded) as running:
        running.start("web", "training")
        yield running


def _port(stack: EphemeralStack, name: str) -> int:
    return stack.loaded.services[name].port


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s pass)."""
    received = b""
    while chunk := sock.recv(65_536):
        received += chunk
    return received


def _status(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def _health(port: int) -> int | None:
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return _status(_answer(sock))


def test_headers_over_the_limit_get_431_and_are_not_kept(stack: EphemeralStack) -> None:
    port = _port(stack, "web")
    web = psutil.Process(stack.processes["web"].pid)
    before = web.memory_info().rss
    statuses = []
    for number in range(100):  # before the guard: 100 x 1 MB ids grew web by ~100 MB
        with _connect(port) as sock:
            value = f"{number}-".encode() + b"a" * 1_048_576
            try:
                sock.sendall(b"GET /api/v1/system/status HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: " + value + b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # cut before it finished sending: the point
            statuses.append(_status(_answer(sock)))
    grown = web.memory_info().rss - before
    assert set(statuses) == {431}
    assert grown < 20 * 1024 * 1024, f"web grew by {grown / 2**20:.1f} MB"
    within = httpx.get(f"{stack.url('web')}/api/v1/system/status", headers={"x-padding": "p" * 10_000})
    assert within.status_code == 200


def test_many_headers_adding_up_past_the_limit_get_431(stack: EphemeralStack) -> None:
    with _connect(_port(stack, "training")) as sock:
        headers = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"f" * 1000) for n in range(20))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
        answer = _answer(sock)
    assert _status(answer) == 431 and b"16384-byte limit" in answer


def test_headers_that_never_finish_are_cut_with_408(stack: EphemeralStack) -> None:
    with _connect(_port(stack, "training")) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        started = time.monotonic()
        answer = _answer(sock)
        waited = time.monotonic() - started
    assert _status(answer) == 408
    assert READ_TIMEOUT * 0.8 < waited < READ_TIMEOUT + 3


def test_a_body_that_never_arrives_is_cut_and_logged_as_the_client_leaving(stack: EphemeralStack) -> None:
    with _connect(_port(stack, "training")) as sock:
        sock.sendall(b"POST /api/v1/training/round HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        _answer(sock)
        waited = time.monotonic() - started
    assert waited < READ_TIMEOUT + 3
    time.sleep(0.2)
    log = stack.log("training").read_text()
    assert "POST /api/v1/training/round 499" in log and "Traceback" not in log
    tracer = httpx.get(f"{stack.url('training')}/api/v1/system/observability").json()["tracer"]
    assert tracer["errorRate"] == 0.0  # the client leaving is not a server error


def test_a_connection_that_sends_nothing_is_closed(stack: EphemeralStack) -> None:
    with _connect(_port(stack, "training")) as sock:
        started = time.monotonic()
        assert _answer(sock) == b""
        assert time.monotonic() - started < READ_TIMEOUT + 3


def test_a_slowloris_flood_cannot_shut_out_health(stack: EphemeralStack) -> None:
    port = _port(stack, "training")
    training = psutil.Process(stack.processes["training"].pid)
    slow = []
    try:
        for _ in range(MAX_CONNECTIONS * 3):
            sock = _connect(port)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
            slow.append(sock)
        answers = [_health(port) for _ in range(20)]
        held = len([c for c in training.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED])
    finally:
        for sock in slow:
            sock.close()
    assert answers == [200] * 20
    assert held <= MAX_CONNECTIONS + 2


def test_a_quick_keep_alive_client_is_served_throughout(stack: EphemeralStack) -> None:
    with httpx.Client(base_url=stack.url("web")) as client:
        statuses = []
        for _ in range(3):
            statuses += [client.get("/api/v1/system/status").status_code for _ in range(20)]
            time.sleep(READ_TIMEOUT / 2)  # idle between bursts, shorter than the keep-alive timeout
    assert statuses == [200] * 60
