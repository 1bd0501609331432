"""A service's Starlette app (services/routing.py) inside ServiceMiddleware, as every service serves it.

What ServiceApp leaves out of Starlette's stack must still be answered the same way: a route's own
errors by their handlers, the router's 404 and 405 as JSON, and an unexpected exception as a JSON
500 with the trace id, logged, never a traceback. Driven in-process through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from tooloo_cli.resilience import Tracer
from tooloo_cli.services.http import ApiError
from tooloo_cli.services.metrics import RequestMetrics
from tooloo_cli.services.middleware import ServiceMiddleware
from tooloo_cli.services.routing import ServiceApp


async def fine(request: Request) -> Response:
    return JSONResponse({"ok": True, "app": request.app is not None})


async def refused(request: Request) -> Response:
    raise ApiError(409, "already done", field="round")


async def broken(request: Request) -> Response:
    raise RuntimeError("a bug, with a secret in its message")


def serve(scenario: Any) -> str:
    """Runs `scenario(client)` against the app; the access log it wrote."""
    log = io.StringIO()
    routes = [Route("/api/fine", fine), Route("/api/refused", refused, methods=["POST"]), Route("/api/broken", broken),
              Route("/health", broken)]  # a quiet path: no trace, line or count, but still its 500
    app = ServiceMiddleware(ServiceApp(routes), log, Tracer("test", 1.0), RequestMetrics(), 1024)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await scenario(client)

    asyncio.run(run())
    return log.getvalue()


def test_routes_and_their_own_errors_answer_as_declared() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/api/fine")).json() == {"ok": True, "app": True}
        refusal = await client.post("/api/refused")
        assert refusal.status_code == 409 and refusal.json()["error"] == "already done"
        assert refusal.json()["field"] == "round"

    assert [line.split()[2] for line in serve(scenario).splitlines()] == ["200", "409"]


def test_the_routers_404_and_405_are_json() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        missing = await client.get("/api/nowhere")
        assert missing.status_code == 404 and missing.json()["error"] == "not found: GET /api/nowhere"
        not_allowed = await client.get("/api/refused")
        assert not_allowed.status_code == 405 and not_allowed.json()["error"] == "method not allowed"
        assert not_allowed.headers["allow"] == "POST"
        assert missing.headers["traceparent"].split("-")[1] == missing.json()["traceId"]

    serve(scenario)


def get_logged(path: str, caplog: pytest.LogCaptureFixture) -> tuple[httpx.Response, str]:
    """GET `path` with the service's errors logged into `caplog`: the answer and the access log."""
    answers: list[httpx.Response] = []

    async def scenario(client: httpx.AsyncClient) -> None:
        answers.append(await client.get(path))

    with caplog.at_level(logging.ERROR, logger="tooloo.services"):
        log = serve(scenario)
    (answer,) = answers
    return answer, log


def test_an_unexpected_exception_is_a_logged_json_500_with_the_trace_id(caplog: pytest.LogCaptureFixture) -> None:
    answer, log = get_logged("/api/broken", caplog)
    assert answer.status_code == 500 and answer.json() == {"ok": False, "error": "internal error",
                                                           "traceId": answer.headers["traceparent"].split("-")[1]}
    assert "secret" not in answer.text and "Traceback" not in answer.text
    assert "unhandled error in GET /api/broken" in caplog.text and "a bug, with a secret" in caplog.text
    assert log.split()[2] == "500"


def test_an_unexpected_exception_on_a_quiet_path_is_a_logged_json_500_too(caplog: pytest.LogCaptureFixture) -> None:
    answer, log = get_logged("/health", caplog)
    assert answer.status_code == 500 and answer.json() == {"ok": False, "error": "internal error", "traceId": None}
    assert "unhandled error in GET /health" in caplog.text
    assert log == ""  # the liveness probe stays out of the access log


class RawEndpoint:
    """An ASGI app as an endpoint: Starlette calls it as it is, outside `request_response`."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})


@pytest.mark.parametrize("route", [Route("/raw", RawEndpoint()), Mount("/mounted", app=RawEndpoint())])
def test_a_route_that_could_be_answered_twice_is_refused(route: Any) -> None:
    with pytest.raises(TypeError, match="Routes of function endpoints"):
        ServiceApp([Route("/api/fine", fine), route])
