"""The client side of the supervisor's control channel (JSON over HTTP/1.1 on a Unix socket).

    client = ControlClient(paths.socket)
    document = client.call("GET", "/status")
    states = client.call("GET", "/states?after=7&wait=2")   # once something changed since version 7

It is `tooloo_cli.loopback` (a socket and httptools) and nothing else: a CLI command pays
neither httpx, nor http.client's email and ssl imports, nor asyncio to ask, and `tooloo
status` has to answer in well under 150 ms. The server side is `api.py`, in the supervisor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tooloo_cli.errors import ToolooError, UsageError


class SupervisorUnavailable(ToolooError):
    """No supervisor answers on the socket."""


class ControlClient:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                timeout: float | None = None) -> tuple[int, dict[str, Any]]:
        # Imported here: `up` asks nothing before it has launched the supervisor, and should not wait for this.
        from tooloo_cli.loopback import BadAnswer, TimedOut, Unreachable
        from tooloo_cli.loopback import request as loopback_request

        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else None
        try:
            answer = loopback_request(self.path, method, path, payload, headers=headers,
                                      timeout=self.timeout if timeout is None else timeout)
        except (Unreachable, ConnectionError) as exc:
            raise SupervisorUnavailable(f"no supervisor answers on {self.path}") from exc
        except TimedOut as exc:
            raise SupervisorUnavailable(f"the supervisor on {self.path} did not answer in time") from exc
        except BadAnswer as exc:
            raise ToolooError(f"the supervisor's answer could not be read ({exc}); see its log beside "
                              f"{self.path}") from None
        try:
            document = json.loads(answer.body or b"{}")
        except ValueError:
            raise ToolooError(f"the supervisor on {self.path} answered {method} {path} with something that is "
                              f"not JSON; see its log beside the socket") from None
        return answer.status, document if isinstance(document, dict) else {}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """The answer of a request that must succeed; its error, as a ToolooError, when it does not."""
        status, document = self.request(method, path, body, timeout)
        if status != 200:
            # What was asked, or the configuration it brought, cannot be used (exit 2); else something failed.
            refusal = UsageError if document.get("usage") is True else ToolooError
            raise refusal(f"the supervisor refused {method} {path}: {document.get('error', status)}")
        return document

    def answers(self) -> bool:
        # /states, not /status: asking must be cheap, and must not disturb what /status measures.
        try:
            status, _ = self.request("GET", "/states", timeout=1.0)
        except SupervisorUnavailable:
            return False
        return status == 200
