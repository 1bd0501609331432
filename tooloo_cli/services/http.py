"""Request and response helpers shared by every service: JSON bodies, errors, client identity.

    body = await read_json(request, {"prompt": Field(str)}, limit=service.stack.max_body_bytes)
    return ok({"text": text}, request)           # {"ok": true, "text": ..., "traceId": ...}
    raise ApiError(409, "already running")       # {"ok": false, "error": ..., "traceId": ...}

Every error a client sees is JSON with `ok: false`, an `error` message and the request's
`traceId`; none carries a stack trace.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tooloo_cli.config import is_loopback
from tooloo_cli.resilience import (
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    Decision,
    PoolClosedError,
    PoolTimeoutError,
    ResilienceError,
)

T = TypeVar("T")

logger = logging.getLogger("tooloo.services")


class RequestDefect(Exception):
    """A request to a dependency could not be sent as it stands: the asker's fault, not the
    dependency's. Every breaker of a service excludes it (it counts as nothing)."""


class ApiError(Exception):
    """An error answered as `{"ok": false, "error": message, ...extra}` with `status`.

    `headers` travel with the answer (a rate-limited route keeps its X-RateLimit-* headers).
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


def trace_id_of(scope: Mapping[str, Any]) -> str | None:
    """The trace id the tracing middleware gave this request, if it was traced."""
    state = scope.get("state")
    return state.get("trace_id") if isinstance(state, dict) else None


def ok(payload: Mapping[str, Any], request: Request, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A success document with `ok: true` and the request's trace id."""
    return JSONResponse({"ok": True, **payload, "traceId": trace_id_of(request.scope)}, status, headers=headers)


def error_response(status: int, message: str, trace_id: str | None, headers: Mapping[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message, **extra, "traceId": trace_id}, status, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, trace_id_of(request.scope), headers=exc.headers, **exc.extra)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """404, 405 and the like, as JSON."""
    assert isinstance(exc, HTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    if exc.status_code == 404:
        message = f"not found: {request.method} {request.url.path}"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, message, trace_id_of(request.scope), headers=headers)


BUSY_RETRY_AFTER = 1  # seconds: a pool or a breaker that is out of room now will likely have it soon


async def resilience_error_handler(request: Request, exc: Exception) -> Response:
    """A resilience module refusing (a pool with no free connection in time, a breaker open, a pool
    closing at shutdown): the service is busy or unwell, not broken, so 503 with Retry-After, never 500."""
    assert isinstance(exc, ResilienceError)
    retry_after = getattr(exc, "retry_after", None) or BUSY_RETRY_AFTER
    message = {PoolTimeoutError: "the service is busy: no database connection was free in time; retry shortly",
               PoolClosedError: "the service is shutting down; retry shortly"}.get(type(exc), str(exc))
    logger.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(503, message, trace_id_of(request.scope),
                          headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


CLIENT_CLOSED_REQUEST = 499  # nginx's code for a client that left before its answer


async def client_disconnect_handler(request: Request, exc: Exception) -> Response:
    """The client left while sending its body: nobody to answer, and not a server error.

    The answer goes nowhere; its status is what the access log and the tracer record.
    """
    return error_response(CLIENT_CLOSED_REQUEST, "the client closed the connection", trace_id_of(request.scope))


# What a service answers for an exception of its own. An unexpected one has no handler here: it
# goes up to ServiceMiddleware, which logs it and answers a JSON 500 with the trace id.
EXCEPTION_HANDLERS = {ApiError: api_error_handler, HTTPException: http_exception_handler,
                      ClientDisconnect: client_disconnect_handler, ResilienceError: resilience_error_handler}


async def answer_error(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """`exc` answered as Starlette's app would answer it: the handler of its nearest class above.

    For what is raised outside a route (the router's 404 and 405, the gateway's pure-ASGI
    proxy). An unexpected exception is raised again, so that ServiceMiddleware, the last line
    of defence, logs it and answers 500.
    """
    handler = next((EXCEPTION_HANDLERS[kind] for kind in type(exc).__mro__ if kind in EXCEPTION_HANDLERS), None)
    if handler is None:
        raise exc
    response = await handler(Request(scope, receive), exc)
    await response(scope, receive, send)


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """The X-RateLimit-* headers of a limiter decision (reset in epoch seconds)."""
    return {name.decode(): value.decode() for name, value in rate_limit_header_bytes(decision)}


def rate_limit_header_bytes(decision: Decision) -> list[tuple[bytes, bytes]]:
    """The same headers as raw ASGI pairs, for middleware on the hot path."""
    return [
        (b"x-ratelimit-limit", b"%d" % decision.limit),
        (b"x-ratelimit-remaining", b"%d" % decision.remaining),
        (b"x-ratelimit-reset", b"%d" % math.ceil(decision.reset)),
    ]


def rate_limited(decision: Decision, trace_id: str | None) -> JSONResponse:
    """The 429 answer to a denied request, with Retry-After and the X-RateLimit-* headers."""
    headers = {**rate_limit_headers(decision), "Retry-After": str(math.ceil(decision.retry_after))}
    return error_response(429, "rate limited", trace_id, headers=headers, retryAfter=decision.retry_after)


# -- bodies ---------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it exceeds `limit` bytes."""
    return await receive_body(request.scope, request.receive, limit)


async def receive_body(scope: Mapping[str, Any], receive: Receive, limit: int) -> bytes:
    """The body from the ASGI `receive` channel itself, with read_body's 413 (for pure-ASGI endpoints).

    ClientDisconnect when the client leaves before the last chunk, as Starlette's Request says it.
    """
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise ApiError(413, f"request body over the {limit}-byte limit")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@dataclass(frozen=True)
class Field:
    """One expected JSON field: its type(s), whether it is required, and optional bounds."""

    kind: type | tuple[type, ...]
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None


_KIND_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
               list: "a list", dict: "an object"}


def _describe(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)


def check_field(name: str, value: Any, field: Field) -> Any:
    """`value` if it fits `field`, else ApiError 422 naming the field."""
    kinds = field.kind if isinstance(field.kind, tuple) else (field.kind,)
    if float in kinds and int not in kinds:
        kinds = (*kinds, int)  # JSON has one number type: 5 is a fine float
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ApiError(422, f"field '{name}' must be {_describe(field.kind)}", field=name)
    if isinstance(value, str) and not _is_unicode(value):
        raise ApiError(422, f"field '{name}' must be valid Unicode text (it holds a lone surrogate, "
                            "such as \\ud800)", field=name)
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(422, f"field '{name}' must be a finite number", field=name)
    if field.minimum is not None and value < field.minimum:
        raise ApiError(422, f"field '{name}' must be at least {field.minimum}", field=name)
    if field.maximum is not None and value > field.maximum:
        raise ApiError(422, f"field '{name}' must be at most {field.maximum}", field=name)
    if field.choices is not None and value not in field.choices:
        raise ApiError(422, f"field '{name}' must be one of {', '.join(map(str, field.choices))}", field=name)
    return value


def check_fields(document: Any, fields: Mapping[str, Field], prefix: str = "") -> dict[str, Any]:
    """The document's expected fields, checked; missing optional ones are left out.

    `prefix` names where a nested object sits (`messages[3].`), so errors name the full path.
    """
    if not isinstance(document, dict):
        where = prefix.rstrip(".")
        raise ApiError(422, f"field '{where}' must be an object" if where else "the body must be a JSON object",
                       field=where or None)
    checked = {}
    for name, field in fields.items():
        if name not in document or document[name] is None:
            if field.required:
                raise ApiError(422, f"field '{prefix}{name}' is required", field=f"{prefix}{name}")
            continue
        checked[name] = check_field(f"{prefix}{name}", document[name], field)
    return checked


def _is_unicode(text: str) -> bool:
    """Whether `text` can be encoded: JSON may escape a lone surrogate, UTF-8 cannot hold one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON: NaN and Infinity are refused, and so is nesting too deep to parse (400)."""
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None


async def read_json(request: Request, fields: Mapping[str, Field], *, limit: int,
                    empty_ok: bool = False) -> dict[str, Any]:
    """The JSON body checked against `fields`: 413 over `limit`, 400 malformed, 422 wrong fields."""
    body = await read_body(request, limit)
    if not body.strip() and empty_ok:
        return check_fields({}, fields)
    return check_fields(parse_json(body), fields)


async def call_through(breaker: CircuitBreaker, what: str, fn: Callable[..., Awaitable[T]], *args: Any,
                       failures: tuple[type[BaseException], ...] = ()) -> T:
    """Awaits `fn(*args)` through `breaker`, answering 503 (open), 504 (timeout) or 502 (`failures`)."""
    try:
        return await breaker.call(fn, *args)
    except CircuitOpenError as exc:
        raise ApiError(503, str(exc), breaker=breaker.name, retryAfter=exc.retry_after) from None
    except CallTimeoutError:
        raise ApiError(504, f"{what} did not answer in time", breaker=breaker.name) from None
    except failures as exc:
        raise ApiError(502, str(exc), breaker=breaker.name) from None


# -- who is asking ----------------------------------------------------------------------


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_LONGEST_ADDRESS = 64  # an IPv6 address with a zone fits; anything longer is not an address


def _address(text: str) -> Address | None:
    if len(text) > _LONGEST_ADDRESS:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address | None, proxies: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_id(scope: Mapping[str, Any], proxies: tuple[Network, ...]) -> str:
    """The client's address: the peer, or from `X-Forwarded-For` when the peer is a trusted proxy.

    The forwarded chain is read right to left, skipping trusted proxies, so a client
    cannot choose its identity by sending the header itself. Only addresses are believed:
    a hop that is not one ends the walk at the last proxy that named it, so an id is
    always a short, normalised address (buckets stay small whatever the header holds).
    """
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not proxies or not _trusted(_address(peer), proxies):
        return peer
    forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
    hops = [hop.strip() for value in forwarded for hop in value.decode("latin-1").split(",") if hop.strip()]
    believed = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return believed
        believed = str(address)
        if not _trusted(address, proxies):
            return believed
    return believed


def asked_locally(scope: Mapping[str, Any]) -> bool:
    """Whether the request comes straight from this machine (not through the gateway or a proxy).

    Such a caller is the operator (the CLI, a curl on the host) and may read internal
    detail: file paths, exception text. Everyone else gets a short reason; the detail is
    in the service's log.
    """
    client = scope.get("client")
    if not client or not is_loopback(client[0]):
        return False
    return not any(name == b"x-forwarded-for" for name, _ in scope["headers"])
