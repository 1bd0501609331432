"""A small blocking HTTP/1.1 client for tooloo's own endpoints on this machine.

    answer = request(("127.0.0.1", 3003), "GET", "/api/v1/system/observability", timeout=0.5)
    answer = request(Path(".tooloo/supervisor.sock"), "POST", "/stop", b'{"services": null}', timeout=30)
    answer.status, answer.header("content-type"), answer.json()
    documents = gather([lambda: request(a, "GET", "/ready", timeout=1.0) for a in addresses])   # at once

What the commands ask of the supervisor's control socket and of the services' documents
(`status`, `up`, `down`, `observe`, the deep check, the bench's probes). A command is
over in a tenth of a second, so what a client costs to import is most of what it costs:
httpx's first request imports httpcore and anyio (~55 ms), http.client imports the email
package and ssl (~25 ms); this is a socket and httptools (already a dependency: the
services parse with it), ~1 ms. It sits beside ports.py, below the CLI, the supervisor
and the bench alike (the services have their own client, services/wire.py).

It does what these exchanges need, and no more:

- one request per connection, sent with `Connection: close`: nothing to pool or reuse;
- a request body always goes with its Content-Length; the method, target and header
  values are refused before anything is sent if they hold a space (target), CR, LF or NUL;
- the answer is read by Content-Length, chunked, or up to the close when it has neither
  (httptools decides); interim 1xx answers are skipped; a HEAD answer, a 204 and a 304
  have no body; a body beyond `limit` bytes is refused, not buffered;
- one deadline for the whole exchange (connect, send, answer); a Unix socket whose backlog
  is full (a supervisor too busy to accept) is tried again until then, as TCP would wait;
- no proxy (these are loopback addresses, whatever http_proxy says), no TLS, no redirects.

Failures are `LoopbackError`s with a reason a person can read: `Unreachable` (nothing
listens, no such socket, closed before answering), `TimedOut`, `BadAnswer` (not HTTP, cut
short, too large). Other OSErrors (a socket one may not open) pass through unchanged.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httptools

Address = Path | tuple[str, int]  # a Unix socket's path, or a host and port
DEFAULT_LIMIT = 64 * 1024 * 1024  # an observability document is tens of KB; a supervisor's status less
_READ = 65_536
_NO_BODY = (204, 304)
T = TypeVar("T")


class LoopbackError(Exception):
    """A request that got no usable HTTP answer; `str()` says why."""


class Unreachable(LoopbackError):
    """Nothing answered: refused, no such socket, or closed before any answer came."""


class TimedOut(LoopbackError):
    """No (whole) answer within the deadline."""


class BadAnswer(LoopbackError):
    """Something answered, but not a usable HTTP answer."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # names lowercased, in the order received
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body)


@dataclass
class _Parse:
    """httptools' callbacks for one answer."""

    limit: int
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    head_only: bool = False
    headers_done: bool = False  # of the final (non-1xx) answer
    complete: bool = False
    parser: Any = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = not 100 <= self.status < 200
        if self.headers_done and (self.head_only or self.status in _NO_BODY):
            self.complete = True  # whatever Content-Length says, there is no body to wait for

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise BadAnswer(f"the answer is larger than {self.limit:,} bytes")
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # an interim answer (100 Continue): the real one follows
            self.headers, self.body, self.size = [], [], 0
            return
        self.complete = True

    @property
    def framed(self) -> bool:
        return any(name in ("content-length", "transfer-encoding") for name, _ in self.headers)


def _check(text: str, what: str, forbidden: str) -> None:
    if any(char in forbidden for char in text):
        raise ValueError(f"a {what} with a space or control character cannot be sent: {text!r}")


def _describe(address: Address) -> str:
    if isinstance(address, Path):
        return str(address)
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# How often a connect to a Unix socket whose backlog is full is tried again.
_BUSY_RETRY = 0.005


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


def _connect_unix(path: Path, deadline: float) -> socket.socket:
    """A Unix socket's connect with a timeout fails at once (EAGAIN) while the listener's backlog is
    full, where a TCP connect would wait: waited out here, until the deadline (then TimeoutError)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        while True:
            sock.settimeout(_left(deadline))
            try:
                sock.connect(str(path))
                return sock
            except BlockingIOError:
                if time.monotonic() + _BUSY_RETRY >= deadline:
                    raise TimeoutError from None
                time.sleep(_BUSY_RETRY)
    except BaseException:
        sock.close()
        raise


def _connect(address: Address, deadline: float) -> socket.socket:
    if isinstance(address, Path):
        return _connect_unix(address, deadline)
    timeout = _left(deadline)
    host, port = address
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        socket.inet_pton(family, host)
    except OSError:  # a name: resolved (getaddrinfo imports the idna codec, ~2 ms, so only then)
        sock = socket.create_connection(address, timeout=timeout)
    else:  # an address, as the stack's are: dialled as it is
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(address: Address, method: str, target: str, body: bytes | None = None, *, timeout: float,
            headers: dict[str, str] | None = None, limit: int = DEFAULT_LIMIT) -> Answer:
    """One exchange with `address`, within `timeout` seconds in all (see the module's contract)."""
    _check(method, "method", " \r\n\0")
    _check(target, "target", " \r\n\0\t")
    host = "localhost" if isinstance(address, Path) else _describe(address)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    for name, value in (headers or {}).items():
        _check(name, "header name", " :\r\n\0")
        _check(value, "header value", "\r\n\0")
        lines.append(f"{name}: {value}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    deadline = time.monotonic() + timeout
    where = _describe(address)
    try:
        sock = _connect(address, deadline)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise Unreachable(f"nothing listens on {where}" if not isinstance(exc, FileNotFoundError)
                          else f"no socket at {where}") from None
    except (TimeoutError, socket.timeout):
        raise TimedOut(f"no connection to {where} within {timeout:g} s") from None
    except (ConnectionResetError, ConnectionAbortedError):  # the listener went away as it was reached
        raise Unreachable(f"{where} closed the connection without answering") from None
    with sock:
        parse = _Parse(limit, head_only=method == "HEAD")
        parse.parser = httptools.HttpResponseParser(parse)
        heard = False
        try:
            sock.settimeout(_left(deadline))  # what the connect left of the deadline, not a timeout of its own
            sock.sendall(payload)
            while not parse.complete:
                sock.settimeout(_left(deadline))
                chunk = sock.recv(_READ)
                if not chunk:
                    break
                heard = True
                parse.parser.feed_data(chunk)
        except (TimeoutError, socket.timeout):
            raise TimedOut(f"{where} did not answer {method} {target} within {timeout:g} s") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            if not heard:
                raise Unreachable(f"{where} closed the connection without answering") from exc
            raise BadAnswer(f"{where} broke the connection mid-answer") from exc
        except httptools.HttpParserUpgrade:  # not an HttpParserError: a 101 ends HTTP on this connection
            raise BadAnswer(f"{where} answered 101 Switching Protocols to {method} {target}") from None
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, BadAnswer):  # raised by a callback of ours (too large)
                raise BadAnswer(f"{where}: {exc.__context__}") from None
            if not parse.complete:  # bytes after a whole answer are the peer's problem, not this answer's
                raise BadAnswer(f"{where} did not answer in HTTP/1.1: {exc}") from None
        if not parse.complete:
            if parse.headers_done and not parse.framed:  # an answer that ends where the connection does
                parse.complete = True
            elif not heard:
                raise Unreachable(f"{where} closed the connection without answering")
            else:
                raise BadAnswer(f"{where} closed the connection before the whole answer came")
    return Answer(parse.status, parse.headers, b"".join(parse.body))


def gather(calls: list[Callable[[], T]]) -> list[T]:
    """Runs blocking `calls` at once (a thread each but the first) and returns their results in order.

    For a handful of loopback requests: each waits on the network, not on the processor, so
    eight at once take about as long as the slowest. An exception is raised again here, the
    first call's first.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # handed to the caller below, in the caller's thread
            errors[index] = exc

    threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in range(1, len(calls))]
    for thread in threads:
        thread.start()
    if calls:
        run(0)
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results
