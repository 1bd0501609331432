"""Calls from one service to its siblings: one pooled httpx client, a breaker per replica.

    upstream = Upstream({"training": (("training", "http://127.0.0.1:3001"),)}, timeout=5.0,
                        tracer=tracer, breaker=breakers.get)
    response = await upstream.request("training", "GET", "/api/v1/training/overview")
    overview = await upstream.json("training", "GET", "/api/v1/training/overview")

It knows the siblings only by what it is given: each target's replicas (name and URL),
the timeout, the tracer whose spans the calls run in, and where to find the breaker
guarding a replica (named as the replica: `budget`, or `budget.2` of several).

A target with several replicas is called round robin. A replica that is down is skipped:
its breaker, once open, refuses at once, and a call that never reached it (refused,
connect timeout), or an idempotent call (GET, HEAD, OPTIONS) whose connection broke, is
tried on the next replica, so one replica dying under load costs its clients nothing.

Every call carries the current `traceparent` and runs inside a span. A timeout, a refused
connection or a 5xx of the sibling's own (500, 501, …) counts as a failure of that
replica's breaker; a 4xx does not, and neither do 502/503/504, which a sibling answers
when one of *its* dependencies failed (web must not trip `budget` because the provider
is down). Errors come out as `UpstreamError` with the status the caller should answer.

A request that cannot be sent as it stands (a control byte in its path, a header h11
refuses) is the caller's defect: 400, and it never reaches the breaker's counts, so no
client can open a breaker for everyone with a few malformed requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tooloo_cli._httpx import httpx

from tooloo_cli.resilience import CallTimeoutError, CircuitBreaker, CircuitOpenError, Tracer
from tooloo_cli.services.http import ApiError, RequestDefect

_DEPENDENCY_FAILURES = (502, 503, 504)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)  # safe to try elsewhere, whatever the method


class UpstreamStatusError(Exception):
    """A sibling answered 5xx: a breaker failure that still carries the response."""

    def __init__(self, target: str, response: httpx.Response) -> None:
        super().__init__(f"{target} answered {response.status_code}")
        self.response = response


class UpstreamError(ApiError):
    """A sibling could not answer; `status` is what to tell our own client (502, 503, 504)."""


class Upstream:
    def __init__(self, replicas: Mapping[str, Sequence[tuple[str, str]]], *, timeout: float, tracer: Tracer,
                 breaker: Callable[[str], CircuitBreaker]) -> None:
        self.replicas = {target: tuple(pairs) for target, pairs in replicas.items()}
        self.tracer = tracer
        self.breaker = breaker
        self._turn = dict.fromkeys(self.replicas, 0)
        # trust_env=False: sibling calls go straight to them whatever HTTP_PROXY says. Siblings
        # speak plain http, so no TLS context is built (verify=False saves ~50 ms of CA bundle).
        self.client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            trust_env=False,
            verify=False,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def probe(self, url: str, timeout: float = 1.0) -> tuple[dict[str, Any], str | None]:
        """The JSON document at `url` and None, or {} and why it did not answer 200.

        Asked directly, not through a breaker: a health or readiness probe must not trip one.
        """
        try:
            response = await self.client.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
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

    def _build(self, base: str, target: str, method: str, path: str | bytes, headers: Any = None,
               **options: Any) -> httpx.Request:
        """The request to send; RequestDefect when it cannot be built from what was asked.

        `path` may be the raw bytes a client sent (path and query, still percent-encoded),
        which the gateway passes on untouched; `headers` may be raw (name, value) byte pairs.
        """
        try:
            url = httpx.URL(base)
            url = url.copy_with(raw_path=path) if isinstance(path, bytes) else url.join(path)
            pairs = list(headers.items() if isinstance(headers, dict) else headers or ())
            return self.client.build_request(method, url, headers=pairs, **options)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:  # UnicodeError is a ValueError
            raise RequestDefect(f"the request cannot be passed on to {target}: {exc}") from None

    async def _send(self, target: str, request: httpx.Request) -> httpx.Response:
        with self.tracer.span(f"{request.method} {target}{request.url.path}") as span:
            traceparent = Tracer.current_traceparent()  # this span's: the sibling's trace hangs under it
            if traceparent is not None:
                request.headers["traceparent"] = traceparent
            try:
                response = await self.client.send(request)
            except httpx.LocalProtocolError as exc:  # h11 refused what we were asked to send
                raise RequestDefect(f"the request cannot be passed on to {target}: {exc}") from None
            span.set("status", response.status_code)
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

    async def request(self, target: str, method: str, path: str | bytes, **options: Any) -> httpx.Response:
        """The sibling's response (5xx included, for a gateway to pass on), through its replica's breaker.

        Raises UpstreamError 503 when every replica's breaker is open, 504 on a timeout and
        502 when no replica can be reached; ApiError 400 when the request cannot be sent.
        """
        failure: Exception | None = None
        replica = target
        for replica, base in self._rotation(target):
            try:
                request = self._build(base, target, method, path, **options)
                return await self.breaker(replica).call(self._send, target, request)
            except RequestDefect as exc:
                raise ApiError(400, str(exc)) from None
            except UpstreamStatusError as exc:
                return exc.response
            except (CircuitOpenError, *_NEVER_SENT) as exc:
                failure = exc  # this replica is out: the next one may answer
            except httpx.TransportError as exc:
                if method not in _IDEMPOTENT:
                    raise self._error(target, replica, exc) from None
                failure = exc
            except (CallTimeoutError, httpx.HTTPError) as exc:
                raise self._error(target, replica, exc) from None
        assert failure is not None
        raise self._error(target, replica, failure) from None

    def _error(self, target: str, replica: str, exc: Exception) -> UpstreamError:
        """What our own client is told when `target` (last tried at `replica`) could not answer."""
        if isinstance(exc, CircuitOpenError):
            return UpstreamError(503, str(exc), breaker=replica, retryAfter=exc.retry_after)
        if isinstance(exc, (CallTimeoutError, httpx.TimeoutException)):
            return UpstreamError(504, f"{target} did not answer in time", breaker=replica)
        if isinstance(exc, httpx.TransportError):
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
