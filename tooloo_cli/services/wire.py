"""The services' client to each other: HTTP/1.1 keep-alive on asyncio protocols, parsed by httptools.

    client = WireClient()
    response = await client.request("127.0.0.1", 3001, "GET", b"/api/v1/training/overview",
                                    [(b"accept", b"application/json")], b"", timeout=5.0)
    response.status_code, response.raw_headers, response.content, response.json()
    await client.close()

Why not httpx: on the gateway's hot path its async stack cost ~1.5 ms a request, growing
with concurrency (encode/httpx#3215): the gateway kept 6-7 % of a direct route. This is
the little the calls between tooloo's own services need, and no more:

- one pool of idle connections per host and port; every connection whose answer said it
  may be reused is kept (`Connection: close`, HTTP/1.0 and a HEAD answer end it), never
  after a timeout, a cancellation or a protocol error. Closing the ones a busy moment
  opened would make the next busy moment connect again: with 50 clients on the gateway
  that churn halved its throughput and doubled its p99. A connection idle for
  `idle_seconds` (below uvicorn's 5 s keep-alive) is closed rather than reused, so a
  request never races the server closing it;
- a pooled connection the server had closed is noticed and not used; one that breaks
  before anything comes back is tried once more on a fresh connection, for an
  idempotent method only (a POST may have been acted on before the peer went away);
- at most `max_connections` at once to one host and port (others wait, within their
  deadline): the bound on what the pool holds, idle or not;
- bodies by Content-Length, chunked (httptools decodes both) or, without either, up to
  the peer's close; 1xx interim answers are skipped; a request body always goes with its
  Content-Length;
- TLS when given an `ssl.SSLContext` (`WireClient(tls=context)`: the handshake is part of
  connecting, within the same deadline); plain TCP otherwise, as between the services;
- one deadline for the whole exchange (connect, send, answer): `ConnectFailed` when the
  peer was never reached (safe to send elsewhere), `ResponseTimeout` when it did not
  answer in time, `ConnectionBroken` when it closed or broke mid-answer, `BadResponse`
  for what is not HTTP, `BadRequest` (before anything is sent) for a method, target or
  header that would let a request be smuggled (a space, a control byte, CR or LF).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import httptools

if TYPE_CHECKING:
    from ssl import SSLContext

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a method or a header name (RFC 9110)
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
_FORBIDDEN_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")
# Framing is ours to write: the caller's own would let it desynchronise the connection.
_OURS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade"})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_CONNECTIONS = 100  # at once to one host and port: what a service may hold open to each sibling replica


class WireError(Exception):
    """A call to a sibling that did not give an HTTP answer."""


class BadRequest(WireError, ValueError):
    """What was asked cannot be sent as it stands (the caller's defect); nothing was sent."""


class ConnectFailed(WireError):
    """The peer was never reached (refused, unreachable, no connection in time); nothing was sent."""


class ResponseTimeout(WireError, TimeoutError):
    """The request went out, and no whole answer came back before the deadline."""


class ConnectionBroken(WireError):
    """The connection closed or broke before the whole answer had come."""


class BadResponse(WireError):
    """The peer answered something that is not HTTP/1.1."""


class Response:
    __slots__ = ("content", "raw_headers", "status_code")

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers  # (lower-case name, value) as the peer sent them
        self.content = content

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.raw_headers if key == name), None)

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection(asyncio.Protocol):
    """One TCP connection, one exchange at a time."""

    def __init__(self, max_body: int | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.max_body = max_body  # bytes of an answer's body kept at most (None: no bound)
        self._body_size = 0
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Response] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._status = 0
        self._heard = False  # anything at all came back for the current request
        self._head_only = False
        self._headers_done = False
        self.reusable = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._heard = True
        if self._answer is None or self._answer.done():  # nothing asked: a peer talking out of turn
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # not an HttpParserError: a 101 ends HTTP on this connection
            self._give(BadResponse("the answer is 101 Switching Protocols, not an HTTP/1.1 answer"))
        except httptools.HttpParserError as exc:
            self._give(BadResponse(f"the answer is not HTTP/1.1: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is None or self._answer.done():
            return
        framed = any(name in (b"content-length", b"transfer-encoding") for name, _ in self._headers)
        if self._headers_done and not framed and exc is None:  # an answer that ends where the connection does
            self._complete()
            return
        self._give(ConnectionBroken("the connection closed before the whole answer came"
                                    if self._heard else "the connection closed before any answer came"))

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.done():  # a second answer to one request: not to be trusted
            self._give(BadResponse("the peer answered more than it was asked"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = 100 > self._status or self._status >= 200
        if self._head_only and self._headers_done:  # a HEAD answer has no body, whatever its Content-Length says
            self.reusable = False
            self._complete()

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self.max_body is not None and self._body_size > self.max_body:
            self._give(BadResponse(f"the answer's body is over {self.max_body} bytes"))  # and closes
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._headers, self._body, self._body_size = [], [], 0
            return
        if not self._head_only:
            self.reusable = self._parser.should_keep_alive()
            self._complete()

    # -- the exchange --------------------------------------------------------------------

    def _complete(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(Response(self._status, self._headers, b"".join(self._body)))
            self._headers, self._body = [], []  # the answer's own now: nothing after it may touch them

    def _give(self, error: WireError) -> None:
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self.close()

    @property
    def heard(self) -> bool:
        return self._heard

    async def exchange(self, request: bytes, head_only: bool, timeout: float) -> Response:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        answer = self._answer = loop.create_future()
        self._headers, self._body, self._status, self._heard, self._body_size = [], [], 0, False, 0
        self._head_only, self.reusable, self._headers_done = head_only, False, False
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)
        # One timer on the answer itself: wait_for's waiter future and callbacks cost more than
        # the rest of the exchange on a small route.
        timer = loop.call_later(timeout, _time_out, answer, timeout)
        try:
            return await answer
        except BaseException:  # timed out, or cancelled (a breaker's call timeout, a client gone): the answer is lost
            self.close()
            raise
        finally:
            timer.cancel()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


def _time_out(answer: asyncio.Future[Response], timeout: float) -> None:
    if not answer.done():
        answer.set_exception(ResponseTimeout(f"no answer within {timeout:g} s"))


def encode_request(method: str, host: str, port: int, target: bytes,
                   headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request's bytes; BadRequest for what would let it be misread (nothing is sent then)."""
    verb = method.encode("ascii", "replace")
    if not _TOKEN.fullmatch(verb):
        raise BadRequest(f"{method!r} is not an HTTP method")
    if not target.startswith(b"/") or _FORBIDDEN_IN_TARGET.search(target):
        raise BadRequest("the request target holds a space or a control character")
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (verb, target, authority.encode())]
    for name, value in headers:
        name = name.lower()
        if not _TOKEN.fullmatch(name):
            raise BadRequest(f"{name!r} is not a header name")
        if _FORBIDDEN_IN_VALUE.search(value):
            raise BadRequest(f"the {name.decode()} header holds CR, LF or NUL")
        if name not in _OURS:
            lines.append(b"%s: %s\r\n" % (name, value))
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines) + body


class WireClient:
    def __init__(self, max_connections: int = MAX_CONNECTIONS, idle_seconds: float = 4.0,
                 tls: SSLContext | None = None, max_response_bytes: int | None = None) -> None:
        self.max_connections = max_connections  # at once, per host and port
        # An answer's body beyond this is BadResponse, the connection closed: a peer that is not one of
        # tooloo's own (an OTLP collector) must not make the client hold what it sends. None: no bound.
        self.max_response_bytes = max_response_bytes
        self.idle_seconds = idle_seconds
        self.tls = tls  # TLS to every peer (an https:// OTLP collector); None: plain TCP, as between services
        # Per host and port, (connection, when it went idle), the most recently used last.
        self._idle: defaultdict[tuple[str, int], list[tuple[_Connection, float]]] = defaultdict(list)
        self._slots: defaultdict[tuple[str, int], asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self.max_connections))
        self._closed = False

    async def request(self, host: str, port: int, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes, timeout: float) -> Response:
        """One exchange within `timeout` seconds, on a pooled connection when one is idle."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        request = encode_request(method, host, port, target, headers, body)
        slot = self._slots[(host, port)]
        if not slot.locked():  # a free slot is taken at once: no timer to set for it
            await slot.acquire()
        else:
            try:
                await asyncio.wait_for(slot.acquire(), max(timeout, 0.001))
            except asyncio.TimeoutError:
                raise ConnectFailed(f"all {self.max_connections} connections to {host}:{port} stayed busy for "
                                    f"{timeout:g} s") from None
        try:
            return await self._exchange(host, port, method, request, deadline)
        finally:
            slot.release()

    async def _exchange(self, host: str, port: int, method: str, request: bytes, deadline: float) -> Response:
        loop = asyncio.get_running_loop()
        head_only = method == "HEAD"
        connection, reused = self._idle_connection(host, port), True
        if connection is None:
            connection, reused = await self._connect(host, port, deadline - loop.time()), False
        try:
            response = await connection.exchange(request, head_only, max(deadline - loop.time(), 0.001))
        except ConnectionBroken:
            if not reused or connection.heard or method not in IDEMPOTENT:
                raise
            # A pooled connection that broke before any answer, for a request that may be repeated.
            try:
                connection = await self._connect(host, port, deadline - loop.time())
            except ConnectFailed as exc:  # the request went out once: it must not be called unsent
                raise ConnectionBroken(f"the connection broke, and no new one could be made: {exc}") from None
            response = await connection.exchange(request, head_only, max(deadline - loop.time(), 0.001))
        if connection.reusable and not connection.closed and not self._closed:
            self._idle[(host, port)].append((connection, loop.time()))
        else:
            connection.close()
        return response

    def _idle_connection(self, host: str, port: int) -> _Connection | None:
        """The most recently used idle connection; what the server may be closing now is closed instead."""
        idle = self._idle.get((host, port))
        now = asyncio.get_running_loop().time()
        while idle:
            connection, since = idle.pop()
            if now - since > self.idle_seconds:
                # The most recent is too old, so every one under it is: all of them go.
                connection.close()
                for stale, _ in idle:
                    stale.close()
                idle.clear()
            elif not connection.closed:
                return connection
        return None

    async def _connect(self, host: str, port: int, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(loop.create_connection(lambda: _Connection(self.max_response_bytes), host, port, ssl=self.tls),
                                                   max(timeout, 0.001))
        except asyncio.TimeoutError:
            raise ConnectFailed(f"no connection to {host}:{port} within {timeout:g} s") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        return connection

    async def close(self) -> None:
        self._closed = True  # what is in flight now closes its connection when done
        for connections in self._idle.values():
            for connection, _ in connections:
                connection.close()
        self._idle.clear()
