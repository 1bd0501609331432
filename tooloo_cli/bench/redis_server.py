"""A redis-server of one's own on a Unix socket in a private directory, for the tests and the bench.

    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))   # answering PING when this returns
        server.url                              # "unix:///…/redis.sock": [stack] redis_url
        server.kill(); server.restart()         # as if it crashed, and came back empty
        server.end()

Contract: no TCP port and nothing on disk (no RDB, no AOF); every signal goes to its pid
(never by name); it dies with the process that started it, even one killed with SIGKILL
(tooloo_cli/parent.py). Needs `redis-server` on PATH (Debian's package: scripts/setup).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

from tooloo_cli.parent import death_hook

PING = b"*1\r\n$4\r\nPING\r\n"


def redis_ping(path: str, timeout: float = 1.0) -> bool:
    """True when the redis-server on Unix socket `path` answers PING with +PONG within `timeout` s.
    Raw bytes rather than redis-py: the fixture must not depend on the client the code under test uses."""
    answer = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        try:
            connection.connect(path)
            connection.sendall(PING)
            while not answer.endswith(b"\r\n") and (chunk := connection.recv(64)):
                answer += chunk
        except OSError:  # no socket yet, refused (nobody listening) or no answer in time
            return False
    return answer == b"+PONG\r\n"


class RedisServer:
    """A redis-server of the test's own, on a Unix socket in a private directory: no TCP port, no disk.

        redis_server.url, .path, .pid    # "unix:///tmp/tooloo-redis-…/redis.sock", that path, its pid
        redis_server.kill()              # SIGKILL, waited for: the socket file stays and refuses
        redis_server.restart()           # a new redis-server (new pid, empty) on the same path, answering
        redis_server.stop_answering()    # SIGSTOP: connections are accepted, nothing is answered
        redis_server.resume()            # SIGCONT: it answers again, what it had is still there

    Every signal goes to its pid; it dies with the test process, even a SIGKILLed one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = str(directory / "redis.sock")
        self.url = f"unix://{self.path}"
        self.log = directory / "redis-server.log"
        self.process = self._start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _start(self) -> subprocess.Popen[bytes]:
        command = ["redis-server", "--port", "0", "--unixsocket", self.path, "--unixsocketperm", "700",
                   "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)]
        with self.log.open("ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       preexec_fn=death_hook(os.getpid()))
        deadline = time.monotonic() + 5
        while not redis_ping(self.path, timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                what = "did not answer PING within 5 s" if process.poll() is None \
                    else f"exited with code {process.returncode} before answering PING"
                process.kill()
                process.wait()
                last = self.log.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"redis-server on {self.path} {what}; the end of its log:\n" + "\n".join(last))
            time.sleep(0.01)
        return process

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        """A new server on the same path; a live one is killed first, as if it had crashed."""
        self.kill()
        self.process = self._start()

    def stop_answering(self) -> None:
        self.process.send_signal(signal.SIGSTOP)
        # SIGSTOP lands asynchronously: a PING sent right after could still be answered.
        deadline = time.monotonic() + 5
        while psutil.Process(self.pid).status() != psutil.STATUS_STOPPED:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server {self.pid} is not stopped 5 s after SIGSTOP")
            time.sleep(0.001)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def end(self) -> None:
        self.resume()
        self.kill()
