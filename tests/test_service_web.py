"""web: the gateway's own contract, in process (siblings absent unless a test starts them), then as
real processes: what a client can and cannot do to the gateway."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import service_client
from tooloo_cli.bench.stack import EphemeralStack
from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.stack import owner_of


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
            greedy = [(await first.get("/api/v1/system/status")).status_code for _ in range(5)]
            health = [(await first.get("/health")).status_code for _ in range(5)]
        async with service_client("web", loaded, client_address="10.1.1.2") as second:
            polite = [(await second.get("/api/v1/system/status")).status_code for _ in range(3)]
        return greedy, health, polite

    greedy, health, polite = asyncio.run(scenario())
    assert greedy == [200, 200, 200, 429, 429] and health == [200] * 5 and polite == [200] * 3


def test_forwarded_for_is_believed_only_from_trusted_proxies(stack_config: Callable[..., LoadedConfig]) -> None:
    def trust(config: Config) -> None:
        config.stack.trusted_proxies = ["10.9.0.0/16"]

    loaded = stack_config(trust)

    async def scenario(peer: str) -> dict:
        async with service_client("web", loaded, client_address=peer) as client:
            await client.get("/api/v1/system/status", headers={"x-forwarded-for": "203.0.113.9"})
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


# -- as real processes: what a client can and cannot do to the gateway ------------------------------


def _tight(config: Config) -> None:
    web, budget = config.services["web"], config.services["budget"]
    assert web.rate_limiter is not None and web.breaker is not None and budget.rate_limiter is not None
    web.rate_limiter.capacity, web.rate_limiter.refill_rate = 20, 0.01
    web.breaker.failure_threshold = 2
    budget.rate_limiter.capacity, budget.rate_limiter.refill_rate = 3, 0.01


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., EphemeralStack]]:
    """Starts web and the named siblings as real processes; they are stopped by pid at the end."""
    stacks: list[EphemeralStack] = []

    def start(*names: str, edit: Callable[[Config], None] | None = None) -> EphemeralStack:
        def edits(config: Config) -> None:
            _tight(config)
            if edit is not None:
                edit(config)

        directory = tmp_path / f"stack{len(stacks)}"
        directory.mkdir()
        stacks.append(EphemeralStack(directory, edits))
        stacks[-1].start("web", *names)
        return stacks[-1]

    yield start
    for stack in stacks:
        stack.stop_all()


def _raw(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(65_536)):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_a_new_x_forwarded_for_per_request_does_not_escape_the_limit(gateway: Callable[..., EphemeralStack]) -> None:
    stack = gateway("budget")
    with httpx.Client(base_url=stack.url("web")) as client:
        web = [client.get("/api/v1/system/status", headers={"x-forwarded-for": f"198.51.100.{n}"}).status_code
               for n in range(60)]
    with httpx.Client(base_url=stack.url("budget")) as client:
        budget = [client.get("/api/v1/providers/burst", params={"prompt": "x"},
                             headers={"x-forwarded-for": f"198.51.100.{n}"}).status_code for n in range(10)]
    assert web.count(200) == 20 and web.count(429) == 40  # before the fix: 60 x 200
    assert budget.count(200) == 3 and budget.count(429) == 7


def test_behind_web_budget_sees_one_client_unless_loopback_is_a_trusted_proxy(
        gateway: Callable[..., EphemeralStack]) -> None:
    def statuses(stack: EphemeralStack) -> list[int]:
        with httpx.Client(base_url=stack.url("web")) as client:
            return [client.get("/api/v1/providers/burst", params={"prompt": "x"},
                               headers={"x-forwarded-for": f"198.51.100.{n}"}).status_code for n in range(6)]

    assert statuses(gateway("budget")).count(429) == 3  # every client is web's address to budget

    def trust_loopback(config: Config) -> None:
        config.stack.trusted_proxies = ["127.0.0.1"]

    assert statuses(gateway("budget", edit=trust_loopback)).count(429) == 0  # each forwarded client its own


def test_malformed_requests_get_4xx_and_never_open_the_upstreams_breaker(
        gateway: Callable[..., EphemeralStack]) -> None:
    stack = gateway("training")
    port = stack.loaded.services["web"].port
    bad = [_raw(port, b"GET /api/v1/training/x%01y HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
           for _ in range(5)]
    accented = [_raw(port, "GET /api/v1/training/overview HTTP/1.1\r\nHost: t\r\nUser-Agent: café\r\n"
                           "Connection: close\r\n\r\n".encode()) for _ in range(5)]
    breaker = httpx.get(f"{stack.url('web')}/api/v1/system/observability").json()["circuitBreakers"]["training"]
    after = httpx.get(f"{stack.url('web')}/api/v1/training/overview")
    assert set(bad) == {404} and set(accented) == {200}  # before the fix: 500 x 5, then 503
    assert breaker["status"] == "closed" and breaker["failureCount"] == 0
    assert after.status_code == 200


def test_a_request_that_cannot_be_passed_on_is_a_400_that_the_breaker_never_counts(
        stack_config: Callable[..., LoadedConfig], live_service: Callable[[str, LoadedConfig], str]) -> None:
    """Whatever the front parser lets through, the gateway's own client may still refuse: not a failure."""
    from conftest import running_lifespan
    from tooloo_cli.services import create_app

    def low_threshold(config: Config) -> None:
        assert config.services["web"].breaker is not None
        config.services["web"].breaker.failure_threshold = 2

    loaded = stack_config(low_threshold)
    live_service("training", loaded)  # reachable: the refusal is the gateway client's, not a connection's
    app = create_app("web", loaded, access_log=io.StringIO())

    async def call(raw_path: bytes, headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, bytes]:  # type: ignore[assignment]
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": raw_path.decode("latin-1"), "raw_path": raw_path, "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"web"), *headers], "client": ("127.0.0.1", 5000),
                 "server": ("127.0.0.1", 80), "state": {}}
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    async def scenario() -> tuple[list[int], dict]:
        async with running_lifespan(app):
            statuses = [(await call(b"/api/v1/training/x\x01y"))[0] for _ in range(5)]
            statuses += [(await call(b"/api/v1/training/overview", [(b"user-agent", b"bad\x00value")]))[0]
                         for _ in range(5)]
            _, document = await call(b"/api/v1/system/observability")
            return statuses, json.loads(document)["circuitBreakers"]["training"]

    statuses, breaker = asyncio.run(scenario())
    assert statuses == [400] * 10
    assert breaker["status"] == "closed" and breaker["failureCount"] == 0 and breaker["callCount"] == 0


def test_a_429_from_budget_through_web_carries_budgets_own_limit(gateway: Callable[..., EphemeralStack]) -> None:
    stack = gateway("budget")
    with httpx.Client(base_url=stack.url("web")) as client:
        answers = [client.get("/api/v1/providers/burst", params={"prompt": "x"}) for _ in range(4)]
        elsewhere = client.get("/api/v1/system/status")
    denied = answers[-1]
    assert denied.status_code == 429 and denied.headers["x-ratelimit-limit"] == "3"
    assert denied.headers["x-ratelimit-remaining"] == "0" and int(denied.headers["retry-after"]) >= 1
    assert elsewhere.headers["x-ratelimit-limit"] == "20"  # web's own, where budget says nothing


def test_the_proxy_passes_head_and_bodies_on_and_refuses_other_methods_as_json(
        gateway: Callable[..., EphemeralStack]) -> None:
    stack = gateway("segmentation")
    with httpx.Client(base_url=stack.url("web")) as client:
        head = client.head("/api/v1/segmentation/status")
        posted = client.post("/api/v1/segmentation/analyze", json={"messages": [
            {"role": "user", "content": "hello there"}]})
        refused = client.request("OPTIONS", "/api/v1/segmentation/status")
        too_large = client.post("/api/v1/segmentation/analyze", content=b"x" * 2_000_000)
    assert head.status_code == 200 and head.content == b""
    assert posted.status_code == 200 and posted.json()["ok"] is True and posted.json()["traceId"]
    assert refused.status_code == 405 and refused.json()["ok"] is False and "GET" in refused.headers["allow"]
    assert refused.json()["traceId"]  # refused inside the traced /api, like any answer of the gateway
    assert too_large.status_code == 413 and too_large.json()["ok"] is False
