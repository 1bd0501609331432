"""The server side of the supervisor's control channel: JSON over HTTP/1.1 on a Unix socket.

    server = ControlServer(paths.socket, {("GET", "/status"): status_handler})
    await server.start()          # the socket is created 0600, inside the 0700 state directory
    ControlServer(("127.0.0.1", 9464), {("GET", "/metrics"): metrics_handler})   # or on a TCP port

A few dozen lines of asyncio rather than a web framework: the daemon lives as long as the
stack and stays light. One request per connection; bodies are JSON objects of at most 1 MiB.
A handler gets the body's object, or for a GET the query's parameters (`?after=7&wait=2` →
{"after": "7", "wait": "2"}, as strings), and answers a status and a JSON document, or a
`Text` (the Prometheus page of /metrics).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from tooloo_cli.errors import ToolooError, UsageError

logger = logging.getLogger("tooloo.supervisor")

MAX_BODY = 1_048_576
REQUEST_SECONDS = 5.0  # to send a whole request in
MAX_CONNECTIONS = 64  # answered at once; more are closed at once


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Text:
    """An answer that is not JSON: `body` as `content_type`."""

    body: str
    content_type: str


Handler = Callable[[dict[str, Any]], Awaitable[tuple[int, "dict[str, Any] | Text"]]]


class ControlServer:
    """Serves `routes` on the Unix socket at `address`, or on a TCP (host, port)."""

    def __init__(self, address: Path | tuple[str, int], routes: dict[tuple[str, str], Handler]) -> None:
        self.address = address
        self.routes = routes
        self._server: asyncio.AbstractServer | None = None
        self._answering: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listens; an OSError (the port taken, say) is the caller's to report."""
        if isinstance(self.address, tuple):
            host, port = self.address
            self._server = await asyncio.start_server(self._serve, host, port)
            return
        self.address.unlink(missing_ok=True)
        previous = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.address))
        finally:
            os.umask(previous)
        os.chmod(self.address, 0o600)

    async def close(self, grace: float = 1.0) -> None:
        """Stops listening, lets the answers being written finish (`grace` seconds at most: the one to the
        `down` that asked for this close, say), and removes the socket."""
        if self._server is not None:
            self._server.close()
        answering = [task for task in self._answering if task is not asyncio.current_task()]
        if answering:
            _, late = await asyncio.wait(answering, timeout=grace)
            for task in late:
                task.cancel()
        if self._server is not None:
            # After the connections' tasks: from Python 3.12 on, wait_closed waits for every connection, and a
            # client that sends nothing would hold it for good.
            await self._server.wait_closed()
        if isinstance(self.address, Path):
            self.address.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._answering) >= MAX_CONNECTIONS:  # a flood of idle connections holds nothing of ours
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        try:
            status, document = await self._answer(reader)
            if isinstance(document, Text):
                body, content_type = document.body.encode(), document.content_type
            else:
                body, content_type = json.dumps(document).encode(), "application/json"
            reason = HTTPStatus(status).phrase
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        """The request's method, target and body; _Refused for one that cannot be answered."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _ = request_line.split(" ", 2)
        except ValueError:
            raise _Refused(400, "malformed request line") from None
        length = 0
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isascii() and value.strip().isdigit():
                length = int(value)
        if length > MAX_BODY:
            raise _Refused(413, "request body too large")
        return method, target, await reader.readexactly(length) if length else b""

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any] | Text]:
        try:
            # The whole request, head and body, within one deadline: a client that stops sending is answered,
            # not waited for. The handler's own time (a long poll of /states) is not in it.
            async with asyncio.timeout(REQUEST_SECONDS):
                method, target, body = await self._read(reader)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError):
            return 400, {"ok": False, "error": "incomplete request"}
        except _Refused as refused:
            return refused.status, {"ok": False, "error": refused.reason}
        path, _, query = target.partition("?")
        handler = self.routes.get((method, path))
        if handler is None:
            known = any(route_path == path for _, route_path in self.routes)
            return (405, {"ok": False, "error": "method not allowed"}) if known else \
                (404, {"ok": False, "error": f"no such endpoint: {path}"})
        try:
            payload = json.loads(body) if body else dict(parse_qsl(query)) if method == "GET" else {}
        except ValueError:
            return 400, {"ok": False, "error": "malformed JSON"}
        if not isinstance(payload, dict):
            return 400, {"ok": False, "error": "the body must be a JSON object"}
        try:
            return await handler(payload)
        except ToolooError as exc:  # `usage`: what was asked cannot be used (the command exits 2)
            return 400, {"ok": False, "error": str(exc), "usage": isinstance(exc, UsageError)}
        except Exception:
            logger.exception("control request %s %s failed", method, path)
            return 500, {"ok": False, "error": "internal error (see the supervisor log)"}
