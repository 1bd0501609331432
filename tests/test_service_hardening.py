"""Cross-cutting hardening checks against in-process apps: hostile bodies, logs, limits, breakers, fan-out."""

from __future__ import annotations

import asyncio
import datetime
import importlib
import io
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import service_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.services import budget

StackConfig = Callable[..., LoadedConfig]
LiveService = Callable[[str, LoadedConfig], str]
LiveApp = Callable[[Any, str, LoadedConfig], str]
BURST = "/api/v1/providers/burst"
REPORT = "/api/v1/reports/comprehensive"


def in_process(name: str, loaded: LoadedConfig, scenario: Callable[[httpx.AsyncClient], Any], **options: Any) -> Any:
    async def main() -> Any:
        async with service_client(name, loaded, **options) as client:
            return await scenario(client)

    return asyncio.run(main())


def fast_provider(config: Config) -> None:
    provider = config.services["budget"].provider
    assert provider is not None
    provider.latency_ms = 5


# -- hostile bodies -------------------------------------------------------------------------


def test_nan_in_a_burst_body_is_malformed_json(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(BURST, content=b'{"prompt": "x", "ttlSeconds": NaN}')

    response = in_process("budget", stack_config(fast_provider), scenario)
    assert response.status_code == 400 and response.json()["ok"] is False
    assert response.headers["content-type"] == "application/json"


def test_nan_in_a_burst_query_is_refused_and_the_cache_stays_persistent(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response, dict[str, Any]]:
        refused = await client.get(BURST, params={"prompt": "x", "ttlSeconds": "nan"})
        answered = await client.get(BURST, params={"prompt": "x"})
        return refused, answered, (await client.get("/api/v1/system/observability")).json()["cache"]

    refused, answered, cache = in_process("budget", stack_config(fast_provider), scenario)
    assert refused.status_code == 422 and refused.json()["field"] == "ttlSeconds"
    assert "ttlSeconds" in refused.json()["error"]
    assert answered.status_code == 200
    assert cache["persistent"] is True and cache["recoveries"] == 0


def test_an_infinite_coach_interval_is_refused_and_the_coach_keeps_answering(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        start = await client.post("/api/v1/auto-coach/start", content=b'{"intervalMs": 1e999}')
        return start, await client.get("/api/v1/auto-coach/status")

    start, status = in_process("coach", stack_config(), scenario)
    assert start.status_code in (400, 422) and start.json()["ok"] is False
    assert status.status_code == 200 and status.json()["active"] is False


def test_a_deeply_nested_body_is_malformed_json(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/api/v1/segmentation/analyze", content=b"[" * 100_000)

    response = in_process("segmentation", stack_config(), scenario)
    assert response.status_code == 400 and response.json()["ok"] is False
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text


def test_a_declared_body_over_the_limit_is_refused_on_a_route_that_never_reads_it(
        stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/api/v1/auto-coach/stop", content=b" " * (2 * 1024 * 1024))

    response = in_process("coach", stack_config(), scenario)
    assert response.status_code == 413 and response.json()["ok"] is False
    assert response.headers["content-type"] == "application/json"


def test_an_encoded_newline_in_the_path_cannot_forge_an_access_log_line(stack_config: StackConfig) -> None:
    log = io.StringIO()

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/nope%0Aforged")

    response = in_process("training", stack_config(), scenario, access_log=log)
    assert response.status_code == 404
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("GET /nope%0Aforged 404 ")


# -- budget: limiting and the ledger ----------------------------------------------------


def test_burst_is_limited_before_its_body_is_validated(stack_config: StackConfig) -> None:
    def two_tokens(config: Config) -> None:
        fast_provider(config)
        limiter = config.services["budget"].rate_limiter
        assert limiter is not None
        limiter.capacity, limiter.refill_rate = 2, 0.01

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post(BURST, json={"prompt": 5}) for _ in range(3)]

    answers = in_process("budget", stack_config(two_tokens), scenario)
    assert [answer.status_code for answer in answers] == [422, 422, 429]
    first, second, denied = answers
    assert first.json()["field"] == "prompt"
    assert first.headers["x-ratelimit-limit"] == "2" and first.headers["x-ratelimit-remaining"] == "1"
    assert second.headers["x-ratelimit-remaining"] == "0" and "x-ratelimit-reset" in second.headers
    assert denied.headers["retry-after"] and denied.json()["error"] == "rate limited"


def test_a_spent_budget_answers_402_with_the_limit_headers(stack_config: StackConfig) -> None:
    def nothing_to_spend(config: Config) -> None:
        fast_provider(config)
        provider = config.services["budget"].provider
        assert provider is not None
        provider.daily_budget_usd = 0

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(BURST, json={"prompt": "anything"})

    response = in_process("budget", stack_config(nothing_to_spend), scenario)
    assert response.status_code == 402 and response.json()["ok"] is False
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(response.headers)


class Calendar:
    """Stands in for `datetime.date` in the budget module: today is whatever the test says."""

    day = datetime.date(2025, 11, 14)

    @classmethod
    def today(cls) -> datetime.date:
        return cls.day


def test_the_ledger_rolls_over_at_midnight_when_read(stack_config: StackConfig,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Calendar, "day", datetime.date(2025, 11, 14))
    monkeypatch.setattr(budget, "date", Calendar)

    async def scenario(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
        assert (await client.post(BURST, json={"prompt": "spend a little"})).status_code == 200
        before = (await client.get("/api/v1/budget")).json()
        Calendar.day = datetime.date(2025, 11, 15)
        return before, (await client.get("/api/v1/budget")).json()

    before, after = in_process("budget", stack_config(fast_provider), scenario)
    assert before["day"] == "2025-11-14" and before["calls"] == 1 and before["spentUsd"] > 0
    assert after["day"] == "2025-11-15" and after["calls"] == 0 and after["spentUsd"] == 0
    assert after["remainingUsd"] == after["limitUsd"]


# -- web: a sibling's dependency failing is not the sibling failing ---------------------


async def answer_the_status_in_the_path(request: Request) -> Response:
    """/anything/503 answers 503: a budget whose own dependency failed (500 for a broken budget)."""
    return JSONResponse({"ok": False, "error": "a dependency failed"}, int(request.path_params["status"]))


def test_web_passes_dependency_failures_on_without_tripping_the_budget_breaker(
        stack_config: StackConfig, live_app: LiveApp) -> None:
    loaded = stack_config()
    live_app(Starlette(routes=[Route("/{path:path}/{status:int}", answer_the_status_in_the_path)]), "budget", loaded)

    async def scenario(client: httpx.AsyncClient) -> tuple[list[int], dict[str, Any], dict[str, Any]]:
        statuses = [(await client.get(f"/api/v1/providers/{status}")).status_code
                    for status in (502, 503, 504, 503, 503, 503, 503)]
        after_dependency_failures = (await client.get("/api/v1/system/observability")).json()
        statuses.append((await client.get("/api/v1/providers/500")).status_code)
        after_own_failure = (await client.get("/api/v1/system/observability")).json()
        return statuses, after_dependency_failures, after_own_failure

    statuses, after_dependency_failures, after_own_failure = in_process("web", loaded, scenario)
    assert statuses == [502, 503, 504, 503, 503, 503, 503, 500]
    breaker = after_dependency_failures["circuitBreakers"]["budget"]
    assert breaker["failureCount"] == 0 and breaker["status"] == "closed" and breaker["callCount"] == 7
    # A 500 of budget's own does count: the breaker is listening, it only tells the two apart.
    assert after_own_failure["circuitBreakers"]["budget"]["failureCount"] == 1


# -- reports: many readers at once ------------------------------------------------------------


def test_reports_answers_20_concurrent_readers_with_every_sibling_down(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return list(await asyncio.gather(*(client.get(REPORT) for _ in range(20))))

    answers = in_process("reports", stack_config(), scenario)
    assert [answer.status_code for answer in answers] == [200] * 20
    assert all(answer.json()["available"] == 0 for answer in answers)


def test_20_concurrent_cold_readers_share_one_fan_out(stack_config: StackConfig, live_service: LiveService) -> None:
    loaded = stack_config()
    training_url = live_service("training", loaded)

    def training_requests() -> int:
        """Requests training has finished under /api (this one is still running, so not counted)."""
        document = httpx.get(f"{training_url}/api/v1/system/observability", trust_env=False).json()
        return document["tracer"]["totalTraces"]

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return list(await asyncio.gather(*(client.get(REPORT) for _ in range(20))))

    before = training_requests()
    answers = in_process("reports", loaded, scenario)
    after = training_requests()
    assert [answer.status_code for answer in answers] == [200] * 20
    assert all(answer.json()["sections"]["training"] is not None for answer in answers)
    assert after - before == 1  # one overview fetch (polling the observability document is not counted)


# -- documentation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["meta", "coach", "segmentation", "capabilities"])
def test_the_module_docstring_lists_every_route_and_shows_a_one_line_curl(name: str) -> None:
    module = importlib.import_module(f"tooloo_cli.services.{name}")
    doc = module.__doc__ or ""
    source = open(module.__file__ or "", encoding="utf-8").read()
    for path in re.findall(r'Route\("([^"]+)"', source):
        assert re.search(rf"^\s+(GET|POST)\s+{re.escape(path)}\b", doc, re.MULTILINE), path
    port = {"meta": 3002, "coach": 3004, "segmentation": 3007, "capabilities": 3009}[name]
    curls = [line.strip() for line in doc.splitlines() if line.strip().startswith("$ curl ")]
    assert len(curls) == 1 and f"localhost:{port}/api/" in curls[0] and not curls[0].endswith("\\")


# -- text that is not Unicode ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "path", "field"), [
    ("budget", BURST, "prompt"),
    ("capabilities", "/api/v1/capabilities/activate", "name"),
])
def test_a_lone_surrogate_is_a_422_naming_the_field(stack_config: StackConfig, name: str, path: str,
                                                    field: str) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(path, content=b'{"%s": "\\ud800"}' % field.encode())

    response = in_process(name, stack_config(fast_provider), scenario)
    assert response.status_code == 422 and response.json()["field"] == field  # before: 500


def test_a_lone_surrogate_deep_in_a_conversation_names_its_place(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        body = b'{"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\\udfff"}]}'
        return await client.post("/api/v1/segmentation/analyze", content=body)

    response = in_process("segmentation", stack_config(), scenario)
    assert response.status_code == 422 and response.json()["field"] == "messages[1].content"


# -- internal detail only for the operator on this machine ----------------------------------------------


def _unusable_cache(config: Config) -> None:
    cache = config.services["budget"].cache
    assert cache is not None
    cache.file = "blocked/cache.db"


def test_ready_gives_paths_and_exceptions_only_to_a_direct_local_caller(stack_config: StackConfig) -> None:
    loaded = stack_config(_unusable_cache)
    (loaded.state_path()).mkdir(parents=True, exist_ok=True)
    loaded.state_path("blocked").write_text("a file where a directory should be")

    async def ready(client: httpx.AsyncClient, **headers: str) -> dict:
        return (await client.get("/ready", headers=headers)).json()

    local = in_process("budget", loaded, ready)
    forwarded = in_process("budget", loaded, lambda c: ready(c, **{"x-forwarded-for": "203.0.113.7"}))
    remote = in_process("budget", loaded, ready, client_address="203.0.113.7")
    assert str(loaded.state_path()) in local["failing"]["cache"]
    assert forwarded["failing"] == remote["failing"] == {"cache": "unavailable"}


def test_breaker_errors_and_system_status_are_short_for_remote_callers(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[dict, dict]:
        await client.get("/api/v1/budget")  # budget is not running: a breaker failure with its detail
        observed = (await client.get("/api/v1/system/observability")).json()["circuitBreakers"]["budget"]
        status = (await client.get("/api/v1/system/status")).json()["services"]["budget"]
        return observed, status

    local_breaker, local_status = in_process("web", stack_config(), scenario)
    remote_breaker, remote_status = in_process("web", stack_config(), scenario, client_address="198.51.100.4")
    assert ":" in local_breaker["lastError"] and "http://" in local_status["error"]
    assert remote_breaker["lastError"] == "ConnectFailed" and remote_status["error"] == "unavailable"


@pytest.mark.parametrize(("hard", "expected"), [(None, "1024 1888"), (1000, "136 1000")])
def test_the_descriptor_limit_leaves_room_for_the_sibling_pools(hard: int | None, expected: str) -> None:
    """The soft limit rises to the connection cap + the pools to siblings + headroom; short of that, fewer connections."""
    code = ("import resource, sys; from tooloo_cli.services.serve import descriptor_room\n"
            f"hard = {hard} or resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "print(descriptor_room(1024, outbound=800), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == expected, result.stderr
