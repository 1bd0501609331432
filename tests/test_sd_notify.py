"""sd_notify for real: a built-in service run as systemd runs it, NOTIFY_SOCKET pointing at the test's own socket.

The service is the real process (`python -m tooloo_cli.services --config … budget`, the ExecStart of
`tooloo export systemd`) on a free port, with NOTIFY_SOCKET naming a datagram socket this test binds
and WATCHDOG_USEC small: what systemd hears is what the test receives, with the time it came.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tooloo_cli.bench.stack import end_process, write_ephemeral_config
from tooloo_cli.config import LoadedConfig, load_config
from tooloo_cli.services.sd_notify import Notifier, watchdog_interval

WATCHDOG_USEC = 400_000  # a ping every 0.2 s


class Listener:
    """systemd's end: a datagram socket in a directory of its own (a short path: sun_path holds 108 bytes)."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tooloo-notify-"))
        self.path = self.directory / "notify"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))

    def next(self, timeout: float) -> tuple[float, str] | None:
        """The next datagram and when it came (time.monotonic), or None within `timeout`."""
        self.socket.settimeout(timeout)
        try:
            return time.monotonic(), self.socket.recv(4096).decode()
        except TimeoutError:
            return None

    def close(self) -> None:
        self.socket.close()
        self.path.unlink(missing_ok=True)
        self.directory.rmdir()


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener()
    yield made
    made.close()


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedConfig:
    """Every service on a free port, its state in tmp_path/.tooloo."""
    return load_config(write_ephemeral_config(tmp_path), env={})


@pytest.fixture
def budget(loaded: LoadedConfig, listener: Listener) -> Iterator[Callable[[], tuple[subprocess.Popen[bytes], str]]]:
    """Starts budget as its unit would (stopped by its pid afterwards); gives the process and its URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[subprocess.Popen[bytes], str]:
        assert loaded.source is not None
        port = loaded.services["budget"].port
        environment = {key: value for key, value in os.environ.items() if not key.startswith(("TOOLOO_", "WATCHDOG_"))}
        environment |= {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        started.append(subprocess.Popen([sys.executable, "-m", "tooloo_cli.services", "--config", str(loaded.source),
                                         "budget"], env=environment, cwd=loaded.base_dir,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return started[-1], f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        end_process(process)


def ready_status(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/ready", timeout=1, trust_env=False).status_code
    except httpx.HTTPError:
        return None


def test_ready_once_ready_answers_then_a_watchdog_ping_each_half_interval_and_stopping_at_the_end(
        budget: Callable[[], tuple[subprocess.Popen[bytes], str]], listener: Listener) -> None:
    process, url = budget()
    first = listener.next(timeout=15)
    assert first is not None, "no notification within 15 s"
    # The first thing systemd hears is READY=1, and by then the port answers /ready with a 200.
    assert first[1].split("\n")[0] == "READY=1" and "STATUS=ready" in first[1], first
    assert ready_status(url) == 200

    pings = []
    deadline = time.monotonic() + 3
    while len(pings) < 5 and time.monotonic() < deadline:
        if (message := listener.next(timeout=1)) is not None:
            assert message[1] == "WATCHDOG=1", message
            pings.append(message[0])
    assert len(pings) == 5, f"{len(pings)} pings within 3 s, expected one every {WATCHDOG_USEC / 2e6:g} s"
    # From the second on: the first ones may have waited in the socket's queue while /ready was asked.
    gaps = [later - earlier for earlier, later in zip(pings[1:], pings[2:])]
    assert all(0.1 < gap < 0.6 for gap in gaps), gaps  # every half of WATCHDOG_USEC, not as fast as it can

    process.terminate()
    messages = []
    while (message := listener.next(timeout=10)) is not None and message[1] != "STOPPING=1":
        messages.append(message[1])
    assert message is not None, f"no STOPPING=1 at SIGTERM, only {messages}"
    assert process.wait(timeout=10) == 0


def test_no_ready_while_ready_fails_and_ready_once_it_passes(
        loaded: LoadedConfig, budget: Callable[[], tuple[subprocess.Popen[bytes], str]], listener: Listener) -> None:
    """A cache file that cannot be opened keeps /ready at 503 (the service serves meanwhile): no READY=1,
    until the file can be made again (the cache tries the disk again with a call, 5 s after it failed)."""
    blocked = loaded.state_path(loaded.services["budget"].cache.file)
    blocked.mkdir(parents=True)  # a directory where the cache's file goes
    _, url = budget()
    deadline = time.monotonic() + 15
    while ready_status(url) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready_status(url) == 503
    assert listener.next(timeout=1.5) is None  # 1.5 s not ready: not a word to systemd
    assert ready_status(url) == 503

    blocked.rmdir()
    deadline = time.monotonic() + 15
    while (ready := listener.next(timeout=0.5)) is None and time.monotonic() < deadline:
        httpx.post(f"{url}/api/v1/providers/burst", json={"prompt": "again"}, timeout=5, trust_env=False)
    assert ready is not None and ready[1].startswith("READY=1\n"), ready
    assert ready_status(url) == 200


def test_an_abstract_socket_is_written_at_and_a_failed_send_is_logged_once_and_never_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    name = f"tooloo-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier is not None
        assert notifier.send("READY=1", "STATUS=x") is True
        assert receiver.recv(4096) == b"READY=1\nSTATUS=x"
        notifier.close()

    gone = Notifier("/nonexistent/notify")
    with caplog.at_level(logging.WARNING, logger="tooloo.services.sd_notify"):
        assert gone.send("READY=1") is False
        assert gone.send("WATCHDOG=1") is False
    assert [record.getMessage() for record in caplog.records] == [
        "cannot notify systemd at /nonexistent/notify (No such file or directory); it may stop the service "
        "if it waits for READY=1 or WATCHDOG=1"]

    assert Notifier.from_environment({}) is None and Notifier.from_environment({"NOTIFY_SOCKET": ""}) is None
    with caplog.at_level(logging.WARNING, logger="tooloo.services.sd_notify"):
        assert Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert "neither a path nor an abstract socket" in caplog.records[-1].getMessage()


def test_the_watchdog_is_enabled_as_sd_watchdog_enabled_says() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "400000"}, pid=7) == 0.2
    assert watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "7"}, pid=7) == 0.2
    for environ in ({}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "8"},
                    {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "x"}):
        assert watchdog_interval(environ, pid=7) is None, environ
