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
from tooloo_cli.ports import is_free, port_holder


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


def test_each_process_gets_only_its_own_secrets_and_the_commands_settings(tmp_path: Path) -> None:
    from tooloo_cli.bench.stack import write_ephemeral_config
    from tooloo_cli.config import load_config
    from tooloo_cli.stack import stack_of
    from tooloo_cli.supervisor.environment import handover, scrubbed, service_environment

    loaded = load_config(write_ephemeral_config(tmp_path), env={})
    specs = stack_of(loaded).specs
    command = {"PATH": "/usr/bin", "OPENAI_API_KEY": "sk-x", "TOOLOO_SERVICES__WEB__PORT": "4000",
               "TOOLOO_CONFIG": "/elsewhere.toml"}
    handed = handover(loaded, command)
    assert handed["config"] == str(loaded.source)
    assert handed["environment"] == {"OPENAI_API_KEY": "sk-x", "TOOLOO_SERVICES__WEB__PORT": "4000"}
    assert scrubbed(command, loaded) == {"PATH": "/usr/bin"}  # the supervisor's own environment
    # From whoever launched it, long ago; and what the supervisor has that no service needs.
    stale = {"PATH": "/usr/bin", "TOOLOO_STACK__HOST": "::1", "DISPLAY": ":0", "HTTPS_PROXY": "http://proxy:3128"}
    budget = service_environment(specs["budget"], stale, handed["environment"])
    web = service_environment(specs["web"], stale, handed["environment"])
    assert budget == {"PATH": "/usr/bin", "TOOLOO_SERVICES__WEB__PORT": "4000", "OPENAI_API_KEY": "sk-x",
                      "HTTPS_PROXY": "http://proxy:3128"}  # budget calls out: it gets the proxy too
    assert web == {"PATH": "/usr/bin", "TOOLOO_SERVICES__WEB__PORT": "4000"}


def test_a_process_tree_is_found_through_proc(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tooloo_cli.supervisor.usage import TreeUsage, process_tree

    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
                               "print(c.pid, flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert process_tree(parent.pid) == [parent.pid, child]
        usage = TreeUsage()
        usage.sample(parent.pid)
        assert usage.rss_bytes and usage.rss_bytes > 0 and usage.cpu_percent is not None
    finally:
        if child is not None:
            os.kill(child, 9)
        parent.kill()
        parent.wait()
