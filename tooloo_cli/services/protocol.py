"""The HTTP connection guard: uvicorn's httptools protocol, with limits on what one client may hold.

    protocol = guarded_protocol(ConnectionLimits(max_header_bytes=16_384, read_timeout=10.0,
                                                 max_connections=1024))
    uvicorn.Config(app, http=protocol, ...)

Contract, per connection and per server:

- A request's line and headers together hold at most `max_header_bytes`; past that the
  client gets 431 and the connection closes, before the rest is buffered.
- A client has `read_timeout` seconds to send a whole request (line, headers and body),
  counted from when the connection opened or the request's first byte arrived. Slower
  is cut: 408 while the headers are incomplete, else the connection closes and the app
  sees the client leave.
- At most `max_connections` connections are held. At the limit a new connection evicts
  the one that has been waiting longest for a request (idle, or still sending one), so a
  flood of slow clients cannot shut out `/health` and quick clients; only when every
  connection is busy being answered does the newcomer get 503.

A refusal is sent, then the connection lingers for up to LINGER seconds, reading and
discarding what the client still sends, so that the client reads the answer instead of a
reset (closing a socket with unread data makes the kernel reset the connection).

uvicorn has none of these (its keep-alive timeout starts only after a first answer), and
a Slowloris flood held ~20,000 connections until the service ran out of descriptors.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, NamedTuple

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LINGER = 2.0  # seconds a refused connection is drained before it is closed


class ConnectionLimits(NamedTuple):
    max_header_bytes: int
    read_timeout: float
    max_connections: int


class _HeadersTooLarge(Exception):
    """Raised from a parser callback: the parser stops, and the client is answered 431."""


def _answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"ok": False, "error": message, "traceId": None}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the current request's headers are not complete yet
        self._head_bytes = 0  # bytes of the current request's line and headers, as parsed
        self._head_received = 0  # bytes received while its headers were incomplete
        # When this connection started waiting for a request (loop time); None while a
        # request it has received whole is being answered. The oldest waiter is evicted first.
        self.waiting_since: float | None = None
        self._deadline: Any = None
        self._refusal: bytes | None = None
        self._lingering = False

    # -- connection lifecycle -------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_waiting()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _start_waiting(self) -> None:
        self.waiting_since = self.loop.time()
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _make_room(self) -> None:
        waiting = [connection for connection in self.connections
                   if connection is not self and getattr(connection, "waiting_since", None) is not None]
        if waiting:
            victim = min(waiting, key=lambda connection: connection.waiting_since)
            victim.waiting_since = None
            victim.transport.abort()  # at once: the room is needed now, and a slow client gets no courtesy
            self.connections.discard(victim)  # its connection_lost comes on the next turn of the loop
        else:
            self._close_with(_answer(503, "Service Unavailable", "too many connections; retry shortly"))

    def _read_timed_out(self) -> None:
        """The client took too long: 408 if it was sending headers, else a plain close."""
        self._deadline = None
        if self._in_head and (self._head_bytes or self._head_received):
            self._close_with(_answer(408, "Request Timeout", "the request was not received in time"))
        elif not self.transport.is_closing():
            self.transport.close()

    def _close_with(self, answer: bytes) -> None:
        """Sends `answer`, then drains what the client still sends for LINGER seconds and closes."""
        if self.transport.is_closing() or self._lingering:
            return
        self._lingering = True
        self.waiting_since = 0.0  # the first to go when room is needed
        self._disarm()
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER, self.transport.abort)

    def eof_received(self) -> bool | None:
        if self._lingering:
            self.transport.close()
        return None

    # -- parsing ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # drained: the answer is on its way, the rest of the request is not wanted
        head_before = self._in_head
        super().data_received(data)
        if self.transport.is_closing():
            return
        if head_before and self._in_head:
            # The whole chunk went into headers that are still incomplete: the parser is
            # buffering them, so they are cut here rather than once they are complete.
            self._head_received += len(data)
            if self._head_received > self.limits.max_header_bytes:
                self._close_with(self._headers_too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._deadline is None:  # a new request after an answer (the first is timed from the connection)
            self._start_waiting()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_bytes:
            self._refusal = self._headers_too_large()
            raise _HeadersTooLarge

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = self._head_received = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.waiting_since = None
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and not self.transport.is_closing():
            # Idle until the next request: uvicorn's keep-alive timeout ends it, and
            # meanwhile it is the first to go when room is needed.
            self.waiting_since = self.loop.time()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # the parser stopped because a callback refused the headers
            self._close_with(self._refusal)
            return
        super().send_400_response(msg)

    def _headers_too_large(self) -> bytes:
        return _answer(431, "Request Header Fields Too Large",
                       f"request line and headers over the {self.limits.max_header_bytes}-byte limit")


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class bound to `limits` (uvicorn instantiates the class it is given)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
