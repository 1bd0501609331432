"""Upstream: a sibling's replicas called round robin, one breaker each, the dead ones skipped."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import service_client
from tooloo_cli.bench.stack import free_port
from tooloo_cli.config import Config, LoadedConfig


def _stand_in(replica: str) -> Starlette:
    async def answer(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "replica": replica, "method": request.method})

    return Starlette(routes=[Route("/api/v1/budget", answer, methods=["GET", "POST"]),
                             Route("/health", answer), Route("/ready", answer)])


def _three_budgets(config: Config) -> None:
    taken = {settings.port for settings in config.services.values()}
    while {port := free_port(), port + 1, port + 2} & taken:
        pass
    config.services["budget"].port, config.services["budget"].replicas = port, 3
    config.services["web"].breaker.failure_threshold = 2  # type: ignore[union-attr]


def test_replicas_take_turns_and_a_dead_one_is_skipped_for_any_method(
        stack_config: Callable[..., LoadedConfig], live_app: Callable[..., str]) -> None:
    loaded = stack_config(_three_budgets)
    port = loaded.services["budget"].port
    for index in (1, 3):  # budget.2 is down: nothing listens on its port
        live_app(_stand_in(f"budget.{index}"), "budget", _at(loaded, port + index - 1))

    async def scenario() -> tuple[Counter[str], Counter[int], dict[str, object]]:
        answered: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        async with service_client("web", loaded) as client:
            for method in ("GET", "POST") * 6:
                response = await client.request(method, "/api/v1/budget", json={} if method == "POST" else None)
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    answered[response.json()["replica"]] += 1
            observed = (await client.get("/api/v1/system/observability")).json()["circuitBreakers"]
            status = (await client.get("/api/v1/system/status")).json()["services"]["budget"]
        return answered, statuses, {"breakers": observed, "status": status}

    answered, statuses, seen = asyncio.run(scenario())
    assert statuses == Counter({200: 12})  # a refused connection is tried on the next replica, POST too
    assert answered["budget.1"] >= 4 and answered["budget.3"] >= 4 and "budget.2" not in answered
    breakers = seen["breakers"]
    assert breakers["budget.2"]["status"] == "open" and breakers["budget.1"]["status"] == "closed"  # type: ignore[index]
    status = seen["status"]
    assert status["status"] == "degraded"  # type: ignore[index]
    assert [r["status"] for r in status["replicas"]] == ["up", "down", "up"]  # type: ignore[index]


def test_every_replica_down_is_a_502_naming_the_last_one_tried(stack_config: Callable[..., LoadedConfig]) -> None:
    loaded = stack_config(_three_budgets)

    async def scenario() -> httpx.Response:
        async with service_client("web", loaded) as client:
            return await client.get("/api/v1/budget")

    response = asyncio.run(scenario())
    assert response.status_code == 502 and response.json()["breaker"].startswith("budget.")
    assert "unreachable" in response.json()["error"]


def _at(loaded: LoadedConfig, port: int) -> LoadedConfig:
    """`loaded` with budget's port moved, so that live_app serves a stand-in on a replica's port."""
    import copy

    moved = copy.deepcopy(loaded)
    moved.services["budget"].port, moved.services["budget"].replicas = port, 1
    return moved
