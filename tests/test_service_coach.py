"""Contract tests of the coach service: boost and the loop against a real training server, and without one."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import service_client

from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.services import create_app
from tooloo_cli.services.coach import Coach
from tooloo_cli.services.service import Service
from tooloo_cli.services.training import Training

StackConfig = Callable[..., LoadedConfig]
LiveService = Callable[[str, LoadedConfig], str]
BASE = "/api/v1/auto-coach"


def run_coach(loaded: LoadedConfig, scenario: Callable[[httpx.AsyncClient], Any]) -> Any:
    async def main() -> Any:
        async with service_client("coach", loaded) as client:
            return await scenario(client)

    return asyncio.run(main())


async def wait_for_status(client: httpx.AsyncClient, done: Callable[[dict[str, Any]], bool],
                          timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = (await client.get(f"{BASE}/status")).json()
        if done(status):
            return status
        assert time.monotonic() < deadline, f"status never got there: {status}"
        await asyncio.sleep(0.02)


def low_threshold(config: Config) -> None:
    breaker = config.services["coach"].breaker
    assert breaker is not None
    breaker.failure_threshold = 2


def test_status_before_anything_ran(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> dict[str, Any]:
        return (await client.get(f"{BASE}/status")).json()

    status = run_coach(stack_config(), scenario)
    assert status == {"ok": True, "active": False, "intervalMs": 2000.0, "roundsDriven": 0, "failures": 0,
                      "lastRound": None, "lastError": None, "breaker": "closed", "leader": None, "leaderSince": None,
                      "traceId": status["traceId"]}


def test_the_training_breaker_is_listed_before_the_first_round(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> dict[str, Any]:
        return (await client.get("/api/v1/system/observability")).json()

    breakers = run_coach(stack_config(), scenario)["circuitBreakers"]
    assert breakers["training"]["status"] == "closed" and breakers["training"]["callCount"] == 0


def test_boost_runs_rounds_through_training(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    live_service("training", loaded)

    async def scenario(client: httpx.AsyncClient) -> None:
        boost = await client.post(f"{BASE}/boost", json={"rounds": 3})
        assert boost.status_code == 200
        assert [r["round"] for r in boost.json()["rounds"]] == [1, 2, 3] and boost.json()["failed"] == 0

        default = (await client.post(f"{BASE}/boost")).json()
        assert len(default["rounds"]) == 5 and default["rounds"][-1]["round"] == 8

        status = (await client.get(f"{BASE}/status")).json()
        assert status["roundsDriven"] == 8 and status["failures"] == 0 and status["lastError"] is None
        assert status["lastRound"] == default["rounds"][-1] and status["breaker"] == "closed"

    run_coach(loaded, scenario)


def test_boost_rounds_match_trainings_deterministic_sequence(stack_config: StackConfig,
                                                             live_service: LiveService) -> None:
    loaded = stack_config()
    live_service("training", loaded)

    async def scenario(client: httpx.AsyncClient) -> list[dict[str, Any]]:
        return (await client.post(f"{BASE}/boost", json={"rounds": 4})).json()["rounds"]

    rounds = run_coach(loaded, scenario)
    expected = Training()
    for played in rounds:
        reference = expected.run_round()
        assert {key: played[key] for key in reference} == reference


@pytest.mark.parametrize(("path", "body", "field"), [
    ("boost", {"rounds": 0}, "rounds"),
    ("boost", {"rounds": 51}, "rounds"),
    ("boost", {"rounds": "many"}, "rounds"),
    ("start", {"intervalMs": 10}, "intervalMs"),
    ("start", {"intervalMs": 60_001}, "intervalMs"),
    ("start", {"intervalMs": "fast"}, "intervalMs"),
])
def test_out_of_range_bodies_answer_422(stack_config: StackConfig, path: str, body: dict[str, Any],
                                        field: str) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(f"{BASE}/{path}", json=body)

    response = run_coach(stack_config(), scenario)
    assert response.status_code == 422 and response.json()["field"] == field


def test_malformed_body_and_wrong_method(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.post(f"{BASE}/start", content=b"{oops")).status_code == 400
        assert (await client.get(f"{BASE}/boost")).status_code == 405
        assert (await client.get(f"{BASE}/status")).json()["active"] is False

    run_coach(stack_config(), scenario)


def test_boost_with_training_down_counts_failures(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        boost = await client.post(f"{BASE}/boost", json={"rounds": 4})
        assert boost.status_code == 200
        assert boost.json()["rounds"] == [] and boost.json()["failed"] == 4

        status = (await client.get(f"{BASE}/status")).json()
        assert status["failures"] == 4 and status["roundsDriven"] == 0
        # Two refusals opened the breaker; the last two rounds were rejected without a call.
        assert status["breaker"] == "open" and "circuit breaker 'training' is open" in status["lastError"]
        breaker = (await client.get("/api/v1/system/observability")).json()["circuitBreakers"]["training"]
        assert breaker["failureCount"] == 2 and breaker["rejectedCount"] == 2

    run_coach(stack_config(low_threshold), scenario)


def test_the_loop_drives_rounds_until_stopped(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    live_service("training", loaded)

    async def scenario(client: httpx.AsyncClient) -> None:
        started = (await client.post(f"{BASE}/start", json={"intervalMs": 50})).json()
        assert started["active"] is True and started["alreadyActive"] is False and started["intervalMs"] == 50

        status = await wait_for_status(client, lambda s: s["roundsDriven"] >= 2)
        assert status["active"] is True and status["failures"] == 0
        assert status["lastRound"]["round"] >= 2

        again = (await client.post(f"{BASE}/start", json={"intervalMs": 60})).json()
        assert again["alreadyActive"] is True and again["intervalMs"] == 60

        stopped = (await client.post(f"{BASE}/stop")).json()
        assert stopped == {"ok": True, "active": False, "wasActive": True, "traceId": stopped["traceId"]}
        after_stop = (await client.get(f"{BASE}/status")).json()
        await asyncio.sleep(0.2)
        settled = (await client.get(f"{BASE}/status")).json()
        assert settled["active"] is False and settled["roundsDriven"] == after_stop["roundsDriven"]

        assert (await client.post(f"{BASE}/stop")).json()["wasActive"] is False

    run_coach(loaded, scenario)


def test_shutdown_stops_the_loop(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    training_url = live_service("training", loaded)

    async def total_rounds() -> int:
        async with httpx.AsyncClient(base_url=training_url, trust_env=False) as training:
            return (await training.get("/api/v1/training/status")).json()["totalRounds"]

    async def main() -> None:
        async with service_client("coach", loaded) as client:
            await client.post(f"{BASE}/start", json={"intervalMs": 50})
            await wait_for_status(client, lambda s: s["roundsDriven"] >= 1)
        # The lifespan has shut down with the loop still active: the loop must be gone with it.
        assert not [task for task in asyncio.all_tasks() if task.get_name() == "auto-coach"]
        rounds = await total_rounds()
        await asyncio.sleep(0.2)
        assert await total_rounds() == rounds

    asyncio.run(main())


def test_the_loop_survives_training_being_down(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await client.post(f"{BASE}/start", json={"intervalMs": 50})
        status = await wait_for_status(client, lambda s: s["failures"] >= 4)
        assert status["active"] is True and status["roundsDriven"] == 0
        assert status["breaker"] == "open" and status["lastError"]
        assert (await client.post(f"{BASE}/stop")).json()["wasActive"] is True

    run_coach(stack_config(low_threshold), scenario)


def test_a_second_boost_while_one_runs_answers_409(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    training_url = live_service("training", loaded)

    async def scenario(client: httpx.AsyncClient) -> tuple[list[httpx.Response], httpx.Response]:
        boosts = await asyncio.gather(*(client.post(f"{BASE}/boost", json={"rounds": 10}) for _ in range(2)))
        after = await client.post(f"{BASE}/boost", json={"rounds": 1})  # the first boost is over: allowed again
        return list(boosts), after

    boosts, after = run_coach(loaded, scenario)
    assert sorted(boost.status_code for boost in boosts) == [200, 409]
    done = next(boost for boost in boosts if boost.status_code == 200)
    refused = next(boost for boost in boosts if boost.status_code == 409)
    assert len(done.json()["rounds"]) == 10
    assert refused.json()["ok"] is False and refused.json()["error"] == "a boost is already running"
    assert refused.headers["content-type"] == "application/json"
    assert after.status_code == 200 and after.json()["rounds"][0]["round"] == 11
    # Training saw the rounds of the two boosts that ran, and none of the refused one.
    assert httpx.get(f"{training_url}/api/v1/training/status", trust_env=False).json()["totalRounds"] == 11


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
        status = (await client.get(f"{BASE}/status")).json()
        assert status["breaker"] == "closed" and status["failures"] == 0

    run_coach(stack_config(low_threshold), scenario)


def test_dependencies_answer_200_while_training_runs(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    live_service("training", loaded)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/dependencies")

    deep = run_coach(loaded, scenario)
    assert deep.status_code == 200 and deep.json()["failing"] == []
    assert [entry["status"] for entry in deep.json()["services"]["training"]] == ["up"]


def test_the_loop_runs_in_a_fresh_context(stack_config: StackConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the request that started the loop had in its context (its trace above all) stays with it.
    request_only: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_only", default=None)
    seen: list[str | None] = []

    async def main() -> None:
        coach = Coach(Service("coach", stack_config()))

        async def record_round() -> None:
            seen.append(request_only.get())

        monkeypatch.setattr(coach, "drive_round", record_round)
        request_only.set("the /start request")
        coach.start(50)
        while not seen:
            await asyncio.sleep(0.01)
        await coach.stop()

    asyncio.run(main())
    assert seen[0] is None


def test_missing_breaker_settings_are_named(stack_config: StackConfig) -> None:
    loaded = stack_config()
    loaded.services["coach"].breaker = None
    with pytest.raises(RuntimeError, match="breaker settings"):
        create_app("coach", loaded)
