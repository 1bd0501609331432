"""The supervisor's small parts: log rotation and tail, the control API over a real socket, port preflight."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _parent_of_one(code: str) -> Iterator[tuple[int, int]]:
    """A Python process running `code`, which starts one child and prints its pid: (parent, child) pids,
    both ended by their pids afterwards."""
    import subprocess
    import sys

    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        yield parent.pid, child
    finally:
        if child is not None:
            os.kill(child, 9)
        parent.kill()
        parent.wait()


def test_a_process_tree_is_found_through_proc(tmp_path: Path) -> None:
    from tooloo_cli.supervisor.usage import TreeUsage, process_tree

    with _parent_of_one("import subprocess, sys, time; "
                        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
                        "print(c.pid, flush=True); time.sleep(30)") as (parent, child):
        assert process_tree(parent) == [parent, child]
        usage = TreeUsage()
        usage.sample(parent)
        assert usage.rss_bytes and usage.rss_bytes > 0 and usage.cpu_percent is not None


def test_a_child_forked_by_a_thread_other_than_the_main_one_is_in_the_tree() -> None:
    """/proc/PID/task/PID/children lists the main thread's children only (a Go program forks from any)."""
    from tooloo_cli.supervisor.usage import process_tree

    code = ("import subprocess, sys, threading, time\n"
            "def fork():\n"
            "    c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
            "    print(c.pid, flush=True)\n"
            "    c.wait()\n"
            "threading.Thread(target=fork, daemon=True).start()\n"
            "time.sleep(30)")
    with _parent_of_one(code) as (parent, child):
        assert process_tree(parent) == [parent, child]  # before the fix: [parent]


def test_samples_close_together_never_read_as_more_cores_than_a_process_uses() -> None:
    """CPU time comes in 10 ms ticks: before the fix, samples 1 ms apart read 0 % or 1000 % (seen: 313 %)."""
    import subprocess
    import sys

    from tooloo_cli.supervisor.usage import TreeUsage

    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        usage = TreeUsage()
        usage.sample(busy.pid)
        time.sleep(0.6)
        readings = []
        for _ in range(50):
            usage.sample(busy.pid)
            readings.append(usage.cpu_percent)
            time.sleep(0.001)
        assert all(reading is not None and reading <= 110 for reading in readings), readings
    finally:
        busy.kill()
        busy.wait()


def test_a_busy_tree_is_measured_as_psutil_would(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from tooloo_cli.supervisor.usage import TreeUsage, own_rss

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        usage = TreeUsage()
        usage.sample(busy.pid)
        assert usage.cpu_percent == 0.0  # a first reading counts from the next one, as psutil's
        time.sleep(0.5)
        usage.sample(busy.pid)
        reference = psutil.Process(busy.pid).memory_info().rss
        assert usage.cpu_percent is not None and usage.cpu_percent > 40
        assert usage.rss_bytes is not None and abs(usage.rss_bytes - reference) < 2 * 1024 * 1024
    finally:
        busy.kill()
        busy.wait()
    usage.sample(busy.pid)  # gone: nothing to show
    assert usage.cpu_percent is None and usage.rss_bytes is None
    rss = own_rss()
    assert rss is not None and abs(rss - psutil.Process().memory_info().rss) < 2 * 1024 * 1024


def test_the_supervisor_is_given_only_what_it_passes_on_and_runs_on() -> None:
    from tooloo_cli.supervisor.standby import supervisor_environment

    environ = {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C", "PYTHONDONTWRITEBYTECODE": "1",
               "HTTPS_PROXY": "http://proxy:3128", "LD_LIBRARY_PATH": "/opt/lib", "OPENAI_API_KEY": "sk-x",
               "TOOLOO_SERVICES__WEB__PORT": "4000", "SSH_AUTH_SOCK": "/tmp/agent", "MY_TOKEN": "t"}
    assert supervisor_environment(environ) == {
        "PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C", "PYTHONDONTWRITEBYTECODE": "1",
        "HTTPS_PROXY": "http://proxy:3128", "LD_LIBRARY_PATH": "/opt/lib"}


def test_this_process_began_is_never_after_its_start_and_as_psutil_reads_it() -> None:
    import time

    from tooloo_cli.supervisor.commands import _this_process_began

    began = _this_process_began()
    assert began <= time.time()
    # psutil's btime-based reading puts the start up to a second early; this one at most one tick late.
    assert psutil.Process().create_time() - 0.02 <= began <= psutil.Process().create_time() + 1.02


# -- what the commands print where rich would print plain text ---------------------------------------------


def _status_document() -> dict[str, Any]:
    def replica(name: str, **changes: Any) -> dict[str, Any]:
        base = {"name": name, "state": "running", "health": "healthy", "ready": True, "pid": 4242, "port": 3001,
                "uptime": 75.0, "restarts": 0, "lastExitCode": None, "error": None, "lastWarning": None,
                "cpuPercent": 1.5, "rssBytes": 36_700_160}
        return base | changes

    return {"supervisor": {"pid": 4241, "uptime": 3600.0, "rssBytes": 20_000_000},
            "services": {
                "web": replica("web"),
                "budget.1": replica("budget.1", state="failed", health="unknown", pid=None, cpuPercent=None,
                                    rssBytes=None, lastExitCode=2, error="it [red]broke[/] \\ at [bold]once"),
                "budget.2": replica("budget.2", ready=False, lastWarning="WARNING tooloo: a [x] moved aside"),
                "segmentation": replica("segmentation", state="stopped", health="unknown", pid=None, uptime=None),
                "coach": replica("coach", state="running", health="unhealthy", restarts=12),
            }}


def test_the_plain_status_table_is_richs_text(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from tooloo_cli.supervisor.printer import PlainConsole, Printer

    for document in (_status_document(), _status_document() | {"supervisor": None}):
        names = list(document["services"])
        for width in (120, 80):
            rich, plain = io.StringIO(), io.StringIO()
            Printer(Console(file=rich, width=width), names).status_table(document)
            Printer(PlainConsole(plain, {"COLUMNS": str(width)}), names).status_table(document)
            assert plain.getvalue() == rich.getvalue(), width
    narrow_rich, narrow_plain = io.StringIO(), io.StringIO()  # too wide for 16 columns even so: rich shrinks it
    Printer(Console(file=narrow_rich, width=16), ["web"]).status_table(_status_document(), ["web"])
    Printer(PlainConsole(narrow_plain, {"COLUMNS": "16"}), ["web"]).status_table(_status_document(), ["web"])
    assert "…" in narrow_plain.getvalue()
    # The same text; rich wraps the line saying what was left out, a PlainConsole keeps one line as one.
    assert "".join(narrow_plain.getvalue().split()) == "".join(narrow_rich.getvalue().split())


def test_the_status_table_leaves_columns_out_rather_than_cut_a_pid_or_a_name() -> None:
    import io

    from rich.console import Console

    from tooloo_cli.supervisor.printer import PlainConsole, Printer

    document = _status_document()
    document["services"]["segmentation"] |= {"state": "running", "health": "unhealthy", "pid": 1_884_211}
    names = list(document["services"])
    for width in (80, 60):
        for console in (Console(file=io.StringIO(), width=width), PlainConsole(io.StringIO(), {"COLUMNS": str(width)})):
            Printer(console, names).status_table(document)
            text = console.file.getvalue()
            lines = text.splitlines()
            assert "…" not in text and all(len(line) <= width for line in lines[:len(names) + 2]), (width, text)
            assert all(re.search(rf"^{re.escape(name)} ", text, re.MULTILINE) for name in names), text
            assert "1884211" in text and text.count("4242") == 3 and "35.0 MiB" in text
            assert f"left out at {width} columns: " in text
    wide = PlainConsole(io.StringIO(), {"COLUMNS": "120"})
    Printer(wide, names).status_table(document)
    assert "left out" not in wide.file.getvalue() and "uptime" in wide.file.getvalue()


def test_markup_is_read_and_escaped_as_rich_does() -> None:
    from rich.markup import escape as rich_escape
    from rich.text import Text

    from tooloo_cli.supervisor.printer import escape, plain

    for text in ("plain", "[red]red[/]", "a \\[b] c", "[link=x]l[/link]", "x [1, 2] y", "\\\\[bold]b[/]", "end\\",
                 "[/]", "a[b", "[#ff0000]hex[/]", "[@click]c[/]", "ünïcode ✓ [green]✗[/]"):
        if text != "[/]":  # rich refuses a closing tag with nothing to close; plain() has no styles to close
            assert plain(text) == Text.from_markup(text, emoji=False).plain, text
        assert escape(text) == rich_escape(text), text
        # Escaped, it reads as rich reads it: the text itself (but for rich's trailing backslash, doubled).
        assert plain(escape(text)) == Text.from_markup(escape(text), emoji=False).plain, text


def test_plain_text_where_rich_would_write_plain_text(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from tooloo_cli.supervisor.printer import writes_plain_text

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream in (io.StringIO(), Terminal()):
        for environ in ({}, {"FORCE_COLOR": "1"}, {"FORCE_COLOR": ""}, {"TTY_COMPATIBLE": "0"},
                        {"TTY_COMPATIBLE": "1"}, {"NO_COLOR": "1"}, {"TTY_COMPATIBLE": "0", "FORCE_COLOR": "1"}):
            assert writes_plain_text(stream, environ) == (not Console(file=stream, _environ=environ).is_terminal), \
                (type(stream).__name__, environ)


def test_the_metrics_listener_answers_a_silent_client_in_time_and_closes_with_one_connected() -> None:
    from tooloo_cli.bench.stack import free_port
    from tooloo_cli.supervisor.api import REQUEST_SECONDS, Text

    async def page(payload: dict[str, Any]) -> tuple[int, Text]:
        return 200, Text("up 1\n", "text/plain; version=0.0.4")

    async def scenario() -> tuple[bytes, bytes, float, float]:
        port = free_port()
        server = ControlServer(("127.0.0.1", port), {("GET", "/metrics"): page})
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        scraped = await reader.read()
        writer.close()
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        silent.write(b"POST /metrics HTTP/1.1\r\nContent-Length: \xc2\xb2000\r\n\r\n")  # a non-ASCII digit
        odd = await asyncio.wait_for(silent_reader.read(), 5)
        silent.close()
        stalled_reader, stalled = await asyncio.open_connection("127.0.0.1", port)
        stalled.write(b"POST /metrics HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")  # and never the body
        started = time.monotonic()
        answered = await asyncio.wait_for(stalled_reader.read(), REQUEST_SECONDS + 5)
        waited = time.monotonic() - started
        await asyncio.open_connection("127.0.0.1", port)  # one more, silent, left connected
        started = time.monotonic()
        await server.close(grace=0.5)
        return scraped + b"|" + odd, answered, waited, time.monotonic() - started

    answers, incomplete, waited, closing = asyncio.run(scenario())
    scraped, odd = answers.split(b"|", 1)
    assert scraped.startswith(b"HTTP/1.1 200 OK") and b"version=0.0.4" in scraped and scraped.endswith(b"up 1\n")
    assert odd.startswith(b"HTTP/1.1 405")  # the length read as none, and the method refused: an answer
    assert incomplete.startswith(b"HTTP/1.1 400") and waited < REQUEST_SECONDS + 2
    assert closing < 2.0


def test_a_service_s_own_words_in_status_are_shown_not_obeyed() -> None:
    import io

    from tooloo_cli.supervisor.printer import PlainConsole, Printer

    document = _status_document()
    document["services"]["budget.2"]["lastWarning"] = "WARNING tooloo: moved\x1b[2J\rweb: fine"
    out = io.StringIO()
    Printer(PlainConsole(out, {"COLUMNS": "120"}), list(document["services"])).status_table(document)
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert "budget.2: WARNING tooloo: moved\\x1b[2J\\x0dweb: fine" in out.getvalue()
    detail = io.StringIO()
    Printer(PlainConsole(detail), ["budget.2"]).detail("budget.2", document["services"]["budget.2"], "log", [])
    assert "\x1b" not in detail.getvalue() and "\\x1b[2J" in detail.getvalue()


def test_the_status_table_names_the_signal_an_exit_was_by_as_status_name_does() -> None:
    import io

    from tooloo_cli.supervisor.printer import PlainConsole, Printer

    document = _status_document()
    document["services"]["coach"] |= {"lastExitCode": -9, "restarts": 1}  # asyncio's returncode for a SIGKILL
    plain = PlainConsole(io.StringIO(), {"COLUMNS": "120"})
    Printer(plain, list(document["services"])).status_table(document)
    (coach,) = [line for line in plain.file.getvalue().splitlines() if line.startswith("coach ")]
    assert " SIGKILL " in coach and "-9" not in coach
    (failed,) = [line for line in plain.file.getvalue().splitlines() if line.startswith("budget.1 ")]
    assert re.search(r" 2 ", failed)  # a code stays a code
