"""The client side of the supervisor's control channel (JSON over HTTP/1.1 on a Unix socket).

    client = ControlClient(paths.socket)
    document = client.call("GET", "/status")

It is the standard library's http.client and nothing else: a CLI command pays neither
httpx nor asyncio to ask, and `tooloo status` has to answer in well under 150 ms. The
server side is `api.py`, in the supervisor.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

from tooloo_cli.errors import ToolooError


class SupervisorUnavailable(ToolooError):
    """No supervisor answers on the socket."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.socket_path))


class ControlClient:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                timeout: float | None = None) -> tuple[int, dict[str, Any]]:
        connection = _UnixConnection(self.path, self.timeout if timeout is None else timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError,
                http.client.RemoteDisconnected) as exc:
            raise SupervisorUnavailable(f"no supervisor answers on {self.path}") from exc
        except (TimeoutError, socket.timeout) as exc:
            raise SupervisorUnavailable(f"the supervisor on {self.path} did not answer in time") from exc
        finally:
            connection.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """The answer of a request that must succeed; its error, as a ToolooError, when it does not."""
        status, document = self.request(method, path, body, timeout)
        if status != 200:
            raise ToolooError(f"the supervisor refused {method} {path}: {document.get('error', status)}")
        return document

    def answers(self) -> bool:
        # /states, not /status: asking must be cheap, and must not disturb what /status measures.
        try:
            status, _ = self.request("GET", "/states", timeout=1.0)
        except SupervisorUnavailable:
            return False
        return status == 200
