"""The supervisor's small parts: log rotation and tail, the control API over a real socket, port preflight."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import psutil

from tooloo_cli.supervisor.api import ControlServer
from tooloo_cli.supervisor.control import ControlClient, SupervisorUnavailable
from tooloo_cli.supervisor.logs import RotatingLog, tail
from tooloo_cli.supervisor.ports import is_free, port_holder


def test_a_log_rotates_at_its_size_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "budget.log"
    log = RotatingLog(path, max_bytes=100, backups=2)
    for number in range(30):
        log.write(f"line {number:02d} of the budget log\n".encode())  # 28 bytes each
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["budget.log", "budget.log.1", "budget.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    assert path.read_text().splitlines()[-1] == "line 29 of the budget log"
    assert tail(path, 4) == [f"line {n} of the budget log" for n in (26, 27, 28, 29)]
    assert tail(path, 5)[0] == "line 25 of the budget log"  # reaches into the rotated file


def test_a_log_reopened_appends(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    for text in (b"first\n", b"second\n"):
        log = RotatingLog(path, max_bytes=1000, backups=1)
        log.write(text)
        log.close()
    assert tail(path, 10) == ["first", "second"]


def test_the_control_api_answers_json_and_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    async def status(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "echo": payload}

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        server = ControlServer(tmp_path / "s.sock", {("GET", "/status"): status, ("POST", "/echo"): status})
        await server.start()
        assert oct((tmp_path / "s.sock").stat().st_mode & 0o777) == "0o600"
        client = ControlClient(tmp_path / "s.sock")
        try:
            return [await asyncio.to_thread(client.request, *call) for call in (
                ("GET", "/status"), ("POST", "/echo", {"services": ["web"]}), ("GET", "/nope"), ("POST", "/status"),
            )] + [await asyncio.to_thread(_raw, tmp_path / "s.sock", b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\n{x}")]
        finally:
            await server.close()

    answers = asyncio.run(scenario())
    assert answers[0] == (200, {"ok": True, "echo": {}})
    assert answers[1] == (200, {"ok": True, "echo": {"services": ["web"]}})
    assert answers[2][0] == 404 and answers[3][0] == 405 and answers[4][0] == 400
    assert not (tmp_path / "s.sock").exists()


def _raw(path: Path, request: bytes) -> tuple[int, dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(str(path))
        connection.sendall(request)
        status = int(connection.recv(65536).split(b" ", 2)[1])
    return status, {}


def test_a_client_without_a_supervisor_says_so(tmp_path: Path) -> None:
    client = ControlClient(tmp_path / "absent.sock")
    assert client.answers() is False
    try:
        client.request("GET", "/status")
    except SupervisorUnavailable as exc:
        assert "no supervisor" in str(exc)
    else:
        raise AssertionError("a missing socket must raise SupervisorUnavailable")


def test_port_preflight_names_the_holder() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not is_free("127.0.0.1", port)
        pid, program = port_holder("127.0.0.1", port) or (None, "")
        assert (pid, program) == (os.getpid(), psutil.Process().name())
    assert is_free("127.0.0.1", port) and port_holder("127.0.0.1", port) is None
