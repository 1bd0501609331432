"""Contract tests of the training service, in process: rounds, mastery, errors, observability."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from conftest import service_client

from tooloo_cli.config import LoadedConfig
from tooloo_cli.services.training import DOMAINS, Training

StackConfig = Callable[..., LoadedConfig]


def run_training(loaded: LoadedConfig, scenario: Callable[[httpx.AsyncClient], Any]) -> Any:
    async def main() -> Any:
        async with service_client("training", loaded) as client:
            return await scenario(client)

    return asyncio.run(main())


def test_overview_lists_every_domain_with_its_mastery(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/training/overview")
        assert response.status_code == 200
        body = response.json()
        assert body["ok"] is True and body["traceId"]
        assert [d["name"] for d in body["domains"]] == list(DOMAINS)
        assert body["totalRounds"] == 0
        masteries = [d["mastery"] for d in body["domains"]]
        assert body["averageMastery"] == round(sum(masteries) / len(masteries), 2)

    run_training(stack_config(), scenario)


def test_default_round_trains_the_weakest_domain_and_raises_it(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        domains = (await client.get("/api/v1/training/overview")).json()["domains"]
        weakest = min(domains, key=lambda d: (d["mastery"], d["name"]))
        response = await client.post("/api/v1/training/round")
        assert response.status_code == 200
        played = response.json()
        assert played["round"] == 1 and played["domain"] == weakest["name"]
        assert played["before"] == weakest["mastery"] and played["after"] > played["before"]
        assert played["after"] == round(played["before"] + played["gain"], 2)

        status = (await client.get("/api/v1/training/status")).json()
        assert status["totalRounds"] == 1 and status["active"] is True
        assert isinstance(status["lastRoundAt"], float) and status["domains"] == len(DOMAINS)

    run_training(stack_config(), scenario)


def test_a_named_domain_is_trained(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        played = (await client.post("/api/v1/training/round", json={"domain": "security"})).json()
        assert played["domain"] == "security"
        overview = (await client.get("/api/v1/training/overview")).json()
        security = next(d for d in overview["domains"] if d["name"] == "security")
        assert security == {"name": "security", "mastery": played["after"], "rounds": 1}

    run_training(stack_config(), scenario)


def test_a_fresh_service_always_plays_the_same_sequence(stack_config: StackConfig) -> None:
    async def ten_rounds(client: httpx.AsyncClient) -> list[dict[str, Any]]:
        rounds = [(await client.post("/api/v1/training/round", json={})).json() for _ in range(10)]
        return [{key: value for key, value in r.items() if key != "traceId"} for r in rounds]

    loaded = stack_config()
    first, second = run_training(loaded, ten_rounds), run_training(loaded, ten_rounds)
    assert first == second
    expected = Training()
    assert first == [{"ok": True, **expected.run_round()} for _ in range(10)]


def test_bad_requests_answer_json_errors(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        malformed = await client.post("/api/v1/training/round", content=b"{not json")
        assert malformed.status_code == 400 and malformed.json()["ok"] is False
        assert "malformed JSON" in malformed.json()["error"]

        wrong_type = await client.post("/api/v1/training/round", json={"domain": 7})
        assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "domain"

        unknown = await client.post("/api/v1/training/round", json={"domain": "astrology"})
        assert unknown.status_code == 422 and unknown.json()["field"] == "domain"

        not_allowed = await client.get("/api/v1/training/round")
        assert not_allowed.status_code == 405 and not_allowed.json()["error"] == "method not allowed"

        too_big = await client.post("/api/v1/training/round", content=b" " * 1025,
                                     headers={"content-type": "application/json"})
        assert too_big.status_code == 413 and "1024-byte" in too_big.json()["error"]

        missing = await client.get("/api/v1/training/nowhere")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not found: GET /api/v1/training/nowhere"

        for response in (malformed, wrong_type, unknown, not_allowed, too_big, missing):
            assert response.headers["content-type"] == "application/json"
            assert "Traceback" not in response.text
        # Nothing above counted as a round.
        assert (await client.get("/api/v1/training/status")).json()["totalRounds"] == 0

    def small_bodies(config: Any) -> None:
        config.stack.max_body_bytes = 1024

    run_training(stack_config(small_bodies), scenario)


def test_non_json_numbers_and_deep_nesting_are_malformed(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for body in (b'{"domain": NaN}', b'{"domain": -Infinity}', b"[" * 100_000):
            refused = await client.post("/api/v1/training/round", content=body)
            assert refused.status_code == 400, body[:20]
            assert refused.json()["ok"] is False and "malformed JSON" in refused.json()["error"]
        assert (await client.get("/api/v1/training/status")).json()["totalRounds"] == 0

    run_training(stack_config(), scenario)


def test_a_body_over_the_default_limit_is_refused(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post("/api/v1/training/round", content=b" " * (1_048_576 + 1))
        assert response.status_code == 413 and response.json()["ok"] is False

    run_training(stack_config(), scenario)


def test_observability_document_has_seed_fields_and_nulls(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        await client.post("/api/v1/training/round")
        document = (await client.get("/api/v1/system/observability")).json()
        assert document["service"] == "training"
        for key in ("pid", "uptime"):
            assert isinstance(document[key], int | float)
        tracer = document["tracer"]
        assert tracer["samplingRate"] == 0.15
        for key in ("activeTraces", "totalTraces", "sampledTraces", "avgLatency", "p50Latency", "p95Latency",
                    "p99Latency", "throughput", "errorRate"):
            assert isinstance(tracer[key], int | float) and not isinstance(tracer[key], bool), key
        assert tracer["totalTraces"] >= 1 and 0 <= tracer["errorRate"] <= 1
        assert isinstance(tracer["spans"], list)
        for module in ("rateLimiter", "cache", "pool", "queryOptimizer", "circuitBreakers"):
            assert document[module] is None, module

        health = (await client.get("/health")).json()
        assert health["ok"] is True and health["service"] == "training"
        assert (await client.get("/ready")).json()["ok"] is True

    run_training(stack_config(), scenario)
