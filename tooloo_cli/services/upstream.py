"""Calls from one service to its siblings: one pooled httpx client, a breaker per sibling.

    response = await service.upstream.request("training", "GET", "/api/v1/training/overview")
    overview = await service.upstream.json("training", "GET", "/api/v1/training/overview")

Every call carries the current `traceparent` and runs inside a span. A timeout, a refused
connection or a 5xx of the sibling's own (500, 501, …) counts as a failure of that
sibling's breaker; a 4xx does not, and neither do 502/503/504, which a sibling answers
when one of *its* dependencies failed (web must not trip `budget` because the provider
is down). Errors come out as `UpstreamError` with the status the caller should answer.

A request that cannot be sent as it stands (a control byte in its path, a header h11
refuses) is the caller's defect: 400, and it never reaches the breaker's counts, so no
client can open a breaker for everyone with a few malformed requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tooloo_cli._httpx import httpx

from tooloo_cli.resilience import CallTimeoutError, CircuitOpenError, Tracer
from tooloo_cli.services.http import ApiError, RequestDefect

if TYPE_CHECKING:
    from tooloo_cli.services.service import Service


_DEPENDENCY_FAILURES = (502, 503, 504)


class UpstreamStatusError(Exception):
    """A sibling answered 5xx: a breaker failure that still carries the response."""

    def __init__(self, target: str, response: httpx.Response) -> None:
        super().__init__(f"{target} answered {response.status_code}")
        self.response = response


class UpstreamError(ApiError):
    """A sibling could not answer; `status` is what to tell our own client (502, 503, 504)."""


class Upstream:
    def __init__(self, service: Service) -> None:
        self.service = service
        config = service.loaded.config
        host = f"[{config.stack.host}]" if ":" in config.stack.host else config.stack.host
        self.base_urls = {name: f"http://{host}:{settings.port}" for name, settings in config.services.items()}
        # trust_env=False: sibling calls stay on loopback whatever HTTP_PROXY says. Siblings
        # speak plain http, so no TLS context is built (verify=False saves ~50 ms of CA bundle).
        self.client = httpx.AsyncClient(
            timeout=config.stack.upstream_timeout,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            trust_env=False,
            verify=False,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def probe(self, target: str, timeout: float = 1.0) -> tuple[dict[str, Any], str | None]:
        """`target`'s /health document and None, or {} and why it did not answer 200.

        Asked directly, not through the breaker: a health or readiness probe must not trip it.
        """
        url = f"{self.base_urls[target]}/health"
        try:
            response = await self.client.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            return {}, f"{target} did not answer {url}: {type(exc).__name__}"
        if response.status_code != 200:
            return {}, f"{target} answered {url} with {response.status_code}"
        try:
            document = response.json()
        except ValueError:
            return {}, f"{target} answered {url} with something that is not JSON"
        return (document, None) if isinstance(document, dict) else ({}, f"{target} answered {url} oddly")

    async def healthy(self, target: str, timeout: float = 1.0) -> None:
        """Returns when `target`'s /health answers 200, else raises RuntimeError saying why."""
        _, error = await self.probe(target, timeout)
        if error is not None:
            raise RuntimeError(error)

    def _build(self, target: str, method: str, path: str | bytes, headers: Any = None,
               **options: Any) -> httpx.Request:
        """The request to send; RequestDefect when it cannot be built from what was asked.

        `path` may be the raw bytes a client sent (path and query, still percent-encoded),
        which the gateway passes on untouched; `headers` may be raw (name, value) byte pairs.
        """
        try:
            base = httpx.URL(self.base_urls[target])
            url = base.copy_with(raw_path=path) if isinstance(path, bytes) else base.join(path)
            pairs = list(headers.items() if isinstance(headers, dict) else headers or ())
            return self.client.build_request(method, url, headers=pairs, **options)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:  # UnicodeError is a ValueError
            raise RequestDefect(f"the request cannot be passed on to {target}: {exc}") from None

    async def _send(self, target: str, request: httpx.Request) -> httpx.Response:
        with self.service.tracer.span(f"{request.method} {target}{request.url.path}") as span:
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

    async def request(self, target: str, method: str, path: str | bytes, **options: Any) -> httpx.Response:
        """The sibling's response (5xx included, for a gateway to pass on), through its breaker.

        Raises UpstreamError 503 when the breaker is open, 504 on a timeout and 502 when
        the sibling cannot be reached; ApiError 400 when the request cannot be sent.
        """
        breaker = self.service.breaker(target)
        try:
            request = self._build(target, method, path, **options)
            return await breaker.call(self._send, target, request)
        except RequestDefect as exc:
            raise ApiError(400, str(exc)) from None
        except UpstreamStatusError as exc:
            return exc.response
        except CircuitOpenError as exc:
            raise UpstreamError(503, str(exc), breaker=target, retryAfter=exc.retry_after) from None
        except (CallTimeoutError, httpx.TimeoutException):
            raise UpstreamError(504, f"{target} did not answer in time", breaker=target) from None
        except httpx.TransportError as exc:
            raise UpstreamError(502, f"{target} is unreachable: {type(exc).__name__}", breaker=target) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(502, f"{target} could not be asked: {type(exc).__name__}", breaker=target) from None

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
