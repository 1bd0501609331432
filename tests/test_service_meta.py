"""Contract tests of the meta service against a real training server, and with training down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import service_client

from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.services import create_app
from tooloo_cli.services.meta import derive_insights
from tooloo_cli.services.training import Training

StackConfig = Callable[..., LoadedConfig]
LiveService = Callable[[str, LoadedConfig], str]
BASE = "/api/v4/meta-learning"


def run_meta(loaded: LoadedConfig, scenario: Callable[[httpx.AsyncClient], Any]) -> Any:
    async def main() -> Any:
        async with service_client("meta", loaded) as client:
            return await scenario(client)

    return asyncio.run(main())


def low_threshold(config: Config) -> None:
    breaker = config.services["meta"].breaker
    assert breaker is not None
    breaker.failure_threshold = 2


def test_insights_are_derived_from_trainings_overview(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    live_service("training", loaded)

    async def scenario(client: httpx.AsyncClient) -> None:
        status = (await client.get(f"{BASE}/status")).json()
        assert status["ok"] is True
        assert status["analyses"] == 0 and status["lastAnalysisAt"] is None and status["training"] == "closed"

        response = await client.get(f"{BASE}/insights")
        assert response.status_code == 200
        insights = response.json()
        # A fresh training service: python is weakest, algorithms and system-design tie for strongest.
        assert insights["weakest"] == {"name": "python", "mastery": 44.0}
        assert insights["strongest"] == {"name": "algorithms", "mastery": 59.0}
        assert insights["spread"] == 15.0 and insights["averageMastery"] == 52.71
        assert insights["totalRounds"] == 0 and insights["learningVelocity"] == 0.0
        assert insights["recommendations"][0].startswith("Focus the next rounds on python")
        assert any(r.startswith("Run more training rounds") for r in insights["recommendations"])

        status = (await client.get(f"{BASE}/status")).json()
        assert status["analyses"] == 1 and isinstance(status["lastAnalysisAt"], float)
        assert status["training"] == "closed"

        document = (await client.get("/api/v1/system/observability")).json()
        training_breaker = document["circuitBreakers"]["training"]
        assert training_breaker["status"] == "closed" and training_breaker["callCount"] == 1

    run_meta(loaded, scenario)


def test_insights_follow_training_rounds(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    training_url = live_service("training", loaded)

    async def scenario(client: httpx.AsyncClient) -> None:
        async with httpx.AsyncClient(base_url=training_url, trust_env=False) as training:
            for _ in range(6):
                assert (await training.post("/api/v1/training/round", json={})).status_code == 200
            overview = (await training.get("/api/v1/training/overview")).json()
        first = (await client.get(f"{BASE}/insights")).json()
        second = (await client.get(f"{BASE}/insights")).json()
        assert first["totalRounds"] == 6 and first["learningVelocity"] == 6.0
        assert second["learningVelocity"] == 3.0
        assert not any(r.startswith("Run more training rounds") for r in first["recommendations"])
        assert {k: v for k, v in first.items() if k not in ("traceId", "learningVelocity")} == {
            "ok": True, **{k: v for k, v in derive_insights(overview, 1).items() if k != "learningVelocity"}}

    run_meta(loaded, scenario)


def test_report_with_training_up(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    live_service("training", loaded)

    async def scenario(client: httpx.AsyncClient) -> None:
        report = (await client.get(f"{BASE}/report")).json()
        assert report["ok"] is True and report["trainingAvailable"] is True and report["error"] is None
        assert report["insights"]["weakest"]["name"] == "python"
        assert report["status"]["analyses"] == 1 and report["status"]["training"] == "closed"

    run_meta(loaded, scenario)


def test_derive_insights_calls_balanced_mastery_balanced() -> None:
    training = Training()
    for domain in training.domains.values():
        domain.mastery = 70.0
    insights = derive_insights(training.overview(), analyses=4)
    assert insights["spread"] == 0.0 and insights["recommendations"][0].startswith("Mastery is balanced")


def test_training_down_answers_502_then_the_open_breaker_503(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for _ in range(2):
            refused = await client.get(f"{BASE}/insights")
            assert refused.status_code == 502
            assert refused.json()["ok"] is False and refused.json()["breaker"] == "training"
            assert "unreachable" in refused.json()["error"]

        started = time.perf_counter()
        rejected = await client.get(f"{BASE}/insights")
        assert time.perf_counter() - started < 0.5
        assert rejected.status_code == 503
        assert rejected.json()["breaker"] == "training" and rejected.json()["retryAfter"] > 0
        assert "Traceback" not in rejected.text

        status = (await client.get(f"{BASE}/status")).json()
        assert status["training"] == "open" and status["analyses"] == 0

        report = await client.get(f"{BASE}/report")
        assert report.status_code == 200
        assert report.json()["trainingAvailable"] is False and report.json()["insights"] is None
        assert "circuit breaker 'training' is open" in report.json()["error"]
        assert report.json()["status"]["training"] == "open"

    run_meta(stack_config(low_threshold), scenario)


def test_report_names_the_failure_while_the_breaker_is_still_closed(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> dict[str, Any]:
        return (await client.get(f"{BASE}/report")).json()

    report = run_meta(stack_config(), scenario)
    assert report["trainingAvailable"] is False and "training is unreachable" in report["error"]
    assert report["status"]["training"] == "closed"


def test_the_training_breaker_is_listed_before_the_first_call(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> dict[str, Any]:
        return (await client.get("/api/v1/system/observability")).json()

    breakers = run_meta(stack_config(), scenario)["circuitBreakers"]
    assert breakers["training"]["status"] == "closed" and breakers["training"]["callCount"] == 0


def test_ready_stays_200_while_training_is_down_and_dependencies_names_it(stack_config: StackConfig) -> None:
    """Readiness is the service's own: one failing upstream must not pull it out of service."""
    async def scenario(client: httpx.AsyncClient) -> None:
        for _ in range(3):  # more probes than the breaker's threshold of 2
            ready = await client.get("/ready")
            assert ready.status_code == 200 and ready.json()["ok"] is True
            deep = await client.get("/dependencies")
            assert deep.status_code == 503
            assert deep.json()["ok"] is False and deep.json()["failing"] == ["training"]
            assert deep.json()["services"]["training"][0]["status"] == "down"
        breaker = (await client.get("/api/v1/system/observability")).json()["circuitBreakers"]["training"]
        assert breaker["status"] == "closed" and breaker["callCount"] == 0 and breaker["failureCount"] == 0

    run_meta(stack_config(low_threshold), scenario)


def test_dependencies_answer_200_while_training_runs(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    live_service("training", loaded)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/dependencies")

    deep = run_meta(loaded, scenario)
    assert deep.status_code == 200 and deep.json()["failing"] == []
    assert [entry["status"] for entry in deep.json()["services"]["training"]] == ["up"]


def test_missing_breaker_settings_are_named(stack_config: StackConfig) -> None:
    loaded = stack_config()
    loaded.services["meta"].breaker = None
    with pytest.raises(RuntimeError, match="breaker settings"):
        create_app("meta", loaded)
