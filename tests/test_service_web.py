"""web: the gateway's own contract, in process (siblings absent unless a test starts them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from conftest import service_client
from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.services.web import owner_of


def test_every_prefix_has_its_owner() -> None:
    assert owner_of("/api/v1/training/overview") == "training"
    assert owner_of("/api/v4/meta-learning/insights") == "meta"
    assert owner_of("/api/v1/providers/burst") == "budget"
    assert owner_of("/api/v1/budget") == "budget"
    assert owner_of("/api/v1/auto-coach/status") == "coach"
    assert owner_of("/api/v1/segmentation/analyze") == "segmentation"
    assert owner_of("/api/v1/reports/comprehensive") == "reports"
    assert owner_of("/api/v1/capabilities/status") == "capabilities"
    assert owner_of("/api/v2/unknown") is None


def _small_web(config: Config) -> None:
    web = config.services["web"]
    assert web.rate_limiter is not None and web.breaker is not None
    web.rate_limiter.capacity, web.rate_limiter.refill_rate = 3, 0.01
    web.breaker.failure_threshold = 2


def test_an_unknown_api_path_is_a_json_404(stack_config: Callable[..., LoadedConfig]) -> None:
    async def scenario() -> httpx.Response:
        async with service_client("web", stack_config()) as client:
            return await client.get("/api/v2/unknown")

    response = asyncio.run(scenario())
    assert response.status_code == 404 and response.json()["ok"] is False and response.json()["traceId"]


def test_each_client_has_its_own_bucket_and_health_is_not_limited(stack_config: Callable[..., LoadedConfig]) -> None:
    loaded = stack_config(_small_web)

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        async with service_client("web", loaded, client_address="10.1.1.1") as first:
            greedy = [(await first.get("/api/v1/system/health")).status_code for _ in range(5)]
            health = [(await first.get("/health")).status_code for _ in range(5)]
        async with service_client("web", loaded, client_address="10.1.1.2") as second:
            polite = [(await second.get("/api/v1/system/health")).status_code for _ in range(3)]
        return greedy, health, polite

    greedy, health, polite = asyncio.run(scenario())
    assert greedy == [200, 200, 200, 429, 429] and health == [200] * 5 and polite == [200] * 3


def test_forwarded_for_is_believed_only_from_trusted_proxies(stack_config: Callable[..., LoadedConfig]) -> None:
    def trust(config: Config) -> None:
        config.stack.trusted_proxies = ["10.9.0.0/16"]

    loaded = stack_config(trust)

    async def scenario(peer: str) -> dict:
        async with service_client("web", loaded, client_address=peer) as client:
            await client.get("/api/v1/system/health", headers={"x-forwarded-for": "203.0.113.9"})
            return (await client.get("/api/v1/system/observability")).json()["rateLimiter"]["buckets"]

    assert "203.0.113.9" in asyncio.run(scenario("10.9.0.1"))
    assert "203.0.113.9" not in asyncio.run(scenario("192.0.2.1"))


def test_an_unreachable_upstream_trips_its_breaker_and_then_answers_503_fast(
        stack_config: Callable[..., LoadedConfig]) -> None:
    async def scenario() -> tuple[list[httpx.Response], dict]:
        async with service_client("web", stack_config(_small_web), client_address="10.2.2.2") as client:
            answers = [await client.get("/api/v1/budget") for _ in range(3)]
            return answers, (await client.get("/health")).json()

    answers, _ = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [502, 502, 503]
    assert answers[0].json()["breaker"] == "budget" and "unreachable" in answers[0].json()["error"]
    assert answers[2].json()["breaker"] == "budget" and "open" in answers[2].json()["error"]


def test_system_status_reports_siblings_that_are_down(stack_config: Callable[..., LoadedConfig]) -> None:
    async def scenario() -> dict:
        async with service_client("web", stack_config()) as client:
            return (await client.get("/api/v1/system/status")).json()

    status = asyncio.run(scenario())
    assert status["healthy"] is False
    assert status["services"]["web"]["status"] == "up"
    assert {name for name, entry in status["services"].items() if entry["status"] == "down"} == {
        "training", "meta", "budget", "coach", "segmentation", "reports", "capabilities"}
    assert all(entry["error"] for name, entry in status["services"].items() if name != "web")
