"""Calls from one service to its siblings: one keep-alive client (wire.py), a breaker per replica.

    upstream = Upstream({"training": (("training", "http://127.0.0.1:3001"),)}, timeout=5.0,
                        tracer=tracer, breaker=breakers.get)
    response = await upstream.request("training", "GET", "/api/v1/training/overview")
    overview = await upstream.json("training", "GET", "/api/v1/training/overview")

It knows the siblings only by what it is given: each target's replicas (name and URL),
the timeout, the tracer whose spans the calls run in, and where to find the breaker
guarding a replica (named as the replica: `budget`, or `budget.2` of several).

A target with several replicas is called round robin. A replica that is down is skipped:
its breaker, once open, refuses at once, and a call that never reached it (refused,
connect timeout), or an idempotent call (GET, HEAD, OPTIONS, PUT, DELETE) whose connection broke, is
tried on the next replica, so one replica dying under load costs its clients nothing.

Every call carries the current `traceparent` (and the trace's `tracestate`) and runs inside a span, which a sampled trace
keeps with the HTTP client attributes of OpenTelemetry's semantic conventions
(`http.request.method`, `server.address`, `server.port`, `url.full`,
`http.response.status_code`; `error.type` for no answer or a 4xx/5xx). A timeout, a refused
connection or a 5xx of the sibling's own (500, 501, …) counts as a failure of that
replica's breaker; a 4xx does not, and neither do 502/503/504, which a sibling answers
when one of *its* dependencies failed (web must not trip `budget` because the provider
is down). Errors come out as `UpstreamError` with the status the caller should answer.

A request that cannot be sent as it stands (a control byte in its path, a header h11
refuses) is the caller's defect: 400, and it never reaches the breaker's counts, so no
client can open a breaker for everyone with a few malformed requests.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from tooloo_cli.resilience import CallTimeoutError, CircuitBreaker, CircuitOpenError, Span, Tracer
from tooloo_cli.services.http import ApiError, RequestDefect
from tooloo_cli.services.wire import (
    IDEMPOTENT,
    BadRequest,
    ConnectFailed,
    ConnectionBroken,
    Response,
    ResponseTimeout,
    WireClient,
    WireError,
)

_DEPENDENCY_FAILURES = (502, 503, 504)


class UpstreamStatusError(Exception):
    """A sibling answered 5xx: a breaker failure that still carries the response."""

    def __init__(self, target: str, response: Response) -> None:
        super().__init__(f"{target} answered {response.status_code}")
        self.response = response


class UpstreamError(ApiError):
    """A sibling could not answer; `status` is what to tell our own client (502, 503, 504)."""


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class Upstream:
    def __init__(self, replicas: Mapping[str, Sequence[tuple[str, str]]], *, timeout: float, tracer: Tracer,
                 breaker: Callable[[str], CircuitBreaker]) -> None:
        self.replicas = {target: tuple(pairs) for target, pairs in replicas.items()}
        self.timeout = timeout
        self.tracer = tracer
        self.breaker = breaker
        self._turn = dict.fromkeys(self.replicas, 0)
        self._addresses = {url: _address(url) for pairs in self.replicas.values() for _, url in pairs}
        self.client = WireClient()

    async def close(self) -> None:
        await self.client.close()

    async def probe(self, url: str, timeout: float = 1.0) -> tuple[dict[str, Any], str | None]:
        """The JSON document at `url` (a sibling's base URL and a path) and None, or {} and why not 200.

        Asked directly, not through a breaker: a health or readiness probe must not trip one.
        """
        parts = urlsplit(url)
        try:
            response = await self.client.request(parts.hostname or "127.0.0.1", parts.port or 80, "GET",
                                                 (parts.path or "/").encode(), [], b"", timeout)
        except WireError as exc:
            return {}, f"no answer from {url}: {type(exc).__name__}"
        if response.status_code != 200:
            return {}, f"{url} answered {response.status_code}"
        try:
            document = response.json()
        except ValueError:
            return {}, f"{url} answered something that is not JSON"
        return (document, None) if isinstance(document, dict) else ({}, f"{url} answered oddly")

    def breaker_state(self, target: str) -> str:
        """The state of `target`'s breaker; of several replicas', the one state they share, else "partial"."""
        states = {self.breaker(name).state for name, _ in self.replicas[target]}
        return states.pop() if len(states) == 1 else "partial"

    async def _send(self, target: str, base: str, method: str, path: bytes, headers: list[tuple[bytes, bytes]],
                    body: bytes) -> Response:
        host, port = self._addresses[base]
        with self.tracer.span(f"{method} {target}{path.split(b'?', 1)[0].decode('latin-1')}") as span:
            trace = Tracer.current()
            if trace is not None:  # this span's traceparent: the sibling's trace hangs under it
                headers = [*headers, (b"traceparent", trace.traceparent.encode())]
                if trace.tracestate:
                    headers.append((b"tracestate", trace.tracestate.encode()))
            if span.__class__ is Span:  # a sampled call: an HTTP client span (semantic conventions)
                span.attributes = {"http.request.method": method, "server.address": host, "server.port": port,
                                   "url.full": base.rstrip("/") + path.decode("latin-1")}
            try:
                response = await self.client.request(host, port, method, path, headers, body, self.timeout)
            except BadRequest as exc:  # what we were asked to send would be misread
                raise RequestDefect(f"the request cannot be passed on to {target}: {exc}") from None
            except BaseException as exc:  # no answer (a timeout cancels the call): what failed, by its class
                span.set("error.type", type(exc).__name__)
                raise
            span.set("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set("error.type", str(response.status_code))
        if response.status_code >= 500 and response.status_code not in _DEPENDENCY_FAILURES:
            raise UpstreamStatusError(target, response)
        return response

    def _rotation(self, target: str) -> tuple[tuple[str, str], ...]:
        """`target`'s replicas, starting with the next one's turn."""
        replicas = self.replicas[target]
        if len(replicas) == 1:
            return replicas
        turn = self._turn[target]
        self._turn[target] = (turn + 1) % len(replicas)
        return replicas[turn:] + replicas[:turn]

    async def request(self, target: str, method: str, path: str | bytes, *, headers: Any = None,
                      content: bytes = b"", json: Any = None) -> Response:
        """The sibling's response (5xx included, for a gateway to pass on), through its replica's breaker.

        `path` may be the raw bytes a client sent (path and query, still percent-encoded),
        which the gateway passes on untouched; `headers` are (name, value) byte pairs or a dict.
        Raises UpstreamError 503 when every replica's breaker is open, 504 on a timeout and
        502 when no replica can be reached; ApiError 400 when the request cannot be sent.
        """
        try:
            raw_path = path if isinstance(path, bytes) else path.encode("ascii")
            pairs = [(_bytes(name), _bytes(value))
                     for name, value in (headers.items() if isinstance(headers, dict) else headers or ())]
        except (UnicodeError, TypeError) as exc:
            raise ApiError(400, f"the request cannot be passed on to {target}: {exc}") from None
        body = content
        if json is not None:
            body = jsonlib.dumps(json).encode()
            pairs.append((b"content-type", b"application/json"))
        failure: Exception | None = None
        replica = target
        for replica, base in self._rotation(target):
            try:
                return await self.breaker(replica).call(self._send, target, base, method, raw_path, pairs, body)
            except RequestDefect as exc:
                raise ApiError(400, str(exc)) from None
            except UpstreamStatusError as exc:
                return exc.response
            except (CircuitOpenError, ConnectFailed) as exc:
                failure = exc  # this replica is out, and nothing was sent to it: the next one may answer
            except ConnectionBroken as exc:
                if method not in IDEMPOTENT:  # it may have been acted on: never sent twice
                    raise self._error(target, replica, exc) from None
                failure = exc
            except (CallTimeoutError, WireError) as exc:
                raise self._error(target, replica, exc) from None
        assert failure is not None
        raise self._error(target, replica, failure) from None

    def _error(self, target: str, replica: str, exc: Exception) -> UpstreamError:
        """What our own client is told when `target` (last tried at `replica`) could not answer."""
        if isinstance(exc, CircuitOpenError):
            return UpstreamError(503, str(exc), breaker=replica, retryAfter=exc.retry_after)
        if isinstance(exc, (CallTimeoutError, ResponseTimeout)):
            return UpstreamError(504, f"{target} did not answer in time", breaker=replica)
        if isinstance(exc, (ConnectFailed, ConnectionBroken)):
            return UpstreamError(502, f"{target} is unreachable: {type(exc).__name__}", breaker=replica)
        return UpstreamError(502, f"{target} could not be asked: {type(exc).__name__}", breaker=replica)

    async def json(self, target: str, method: str, path: str, **options: Any) -> dict[str, Any]:
        """The sibling's JSON object without its `ok`/`traceId` envelope.

        UpstreamError 502 for anything but a 2xx JSON object.
        """
        response = await self.request(target, method, path, **options)
        if response.status_code >= 300:
            raise UpstreamError(502, f"{target} answered {response.status_code}", breaker=target)
        try:
            document = response.json()
        except ValueError:
            raise UpstreamError(502, f"{target} answered malformed JSON", breaker=target) from None
        if not isinstance(document, dict):
            raise UpstreamError(502, f"{target} answered JSON that is not an object", breaker=target)
        document.pop("ok", None)
        document.pop("traceId", None)
        return document


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")
