"""services/shared.py: limits shared in a real redis-server, and what happens when it dies or hangs."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import Tooloo, flood
from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.resilience import RateLimiter
from tooloo_cli.services.shared import RETRY_AFTER, RedisBucketStore, RedisLink, describe_server


def _limiters(url: str, count: int, capacity: int = 10, refill: float = 0.01, fallback: str = "local",
              name: str = "web") -> tuple[RedisLink, list[RateLimiter]]:
    """`count` replicas' limiters of one service (each its own store, as each replica's), over one link."""
    link = RedisLink(url, timeout=0.05, fallback=fallback)
    return link, [RateLimiter(capacity, refill, store=RedisBucketStore(link, name, replicas=count))
                  for _ in range(count)]


def test_replicas_together_allow_what_one_allows_with_the_headers_meaning_the_same(redis_server: Any) -> None:
    async def scenario() -> list[Any]:
        link, replicas = _limiters(redis_server.url, 3)
        try:
            decisions = [await replicas[i % 3].check("10.0.0.7") for i in range(30)]
            decisions.append(await replicas[0].check("10.0.0.8"))  # another client has a bucket of its own
            assert link.state()["state"] == "shared"
            return decisions
        finally:
            await link.close()

    decisions = asyncio.run(scenario())
    assert sum(d.allowed for d in decisions[:30]) == 10  # not 30: one limit for the three
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))  # counted down across replicas
    assert not decisions[10].allowed and decisions[10].retry_after > 1
    assert decisions[30].allowed and decisions[30].remaining == 9


def test_a_redis_that_stops_answering_costs_a_request_the_timeout_then_nothing(redis_server: Any) -> None:
    async def scenario() -> tuple[list[float], list[bool], dict[str, Any], dict[str, Any]]:
        link, (limiter, _) = _limiters(redis_server.url, 2, capacity=10)
        try:
            assert (await limiter.check("c")).allowed
            redis_server.stop_answering()
            took, allowed = [], []
            for _ in range(8):
                started = time.perf_counter()
                allowed.append((await limiter.check("c")).allowed)
                took.append(time.perf_counter() - started)
            during = link.state()
            redis_server.resume()
            await asyncio.sleep(RETRY_AFTER + 0.1)
            assert (await limiter.check("c")).allowed
            return took, allowed, during, link.state()
        finally:
            await link.close()

    took, allowed, during, after = asyncio.run(scenario())
    assert max(took) < 0.2  # the 50 ms timeout, not redis-py's retries nor a hang
    assert all(seconds < 0.005 for seconds in took[3:])  # the breaker is open: the fallback answers at once
    assert allowed == [True] * 5 + [False] * 3  # "local": this replica's share, 10 ÷ 2
    assert during["state"] == "fallback" and during["fallback"] == "local" and "Timeout" in during["error"]
    assert after["state"] == "shared" and after["error"] is None


def test_killed_and_restarted_the_shared_limit_returns_without_a_restart(redis_server: Any) -> None:
    async def scenario() -> tuple[bool, str, bool, str]:
        link, (limiter,) = _limiters(redis_server.url, 1, capacity=3, fallback="deny")
        try:
            assert (await limiter.check("c")).allowed
            redis_server.kill()
            denied = not (await limiter.check("c")).allowed  # "deny": no token while Redis is away
            state = link.state()["state"]
            redis_server.restart()
            await asyncio.sleep(RETRY_AFTER + 0.1)
            back = (await limiter.check("c")).allowed  # the script is loaded again by itself
            return denied, state, back, link.state()["state"]
        finally:
            await link.close()

    denied, during, back, after = asyncio.run(scenario())
    assert denied and during == "fallback" and back and after == "shared"


def test_the_server_is_named_without_its_password() -> None:
    assert describe_server("redis://:s3cret@cache.internal:6380/2") == "redis://cache.internal:6380/2"
    assert describe_server("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_a_bad_redis_url_is_a_configuration_error_that_does_not_echo_it(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    t.env = t.env | {"TOOLOO_STACK__REDIS_URL": "http://:hunter2@example.test/"}
    result = t("up", "training")
    assert result.returncode == 2
    assert "stack.redis_url has the scheme 'http'" in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def _budget_pair_over(url: str) -> Callable[[Config], None]:
    """Budget as two replicas sharing its burst limit in Redis, behind a gateway whose own limit is out of the way."""
    from test_supervisor_stack import _budget_pair

    def edit(config: Config) -> None:
        _budget_pair(config)
        config.stack.redis_url = url
        budget = config.services["budget"]
        assert budget.rate_limiter is not None and budget.provider is not None
        budget.rate_limiter.capacity, budget.rate_limiter.refill_rate = 20, 1.0
        budget.provider.latency_ms = 1

    return edit


def test_two_budget_replicas_through_web_allow_one_limit_and_survive_redis_dying(
        tooloo: Callable[..., Tooloo], redis_server: Any) -> None:
    t = tooloo(_budget_pair_over(redis_server.url))
    result = t("up", "web", "budget")
    assert result.returncode == 0, result.stdout + result.stderr
    web = f"http://127.0.0.1:{t.port('web')}"
    with httpx.Client(base_url=web, trust_env=False, timeout=10) as client:
        started = time.monotonic()
        statuses = Counter(client.post("/api/v1/providers/burst", json={"prompt": f"p{i % 7}"}).status_code
                           for i in range(300))
        seconds = time.monotonic() - started
        assert seconds < 3, seconds
        # One limit for both replicas: the capacity and what refilled meanwhile, not twice that.
        assert 20 <= statuses[200] <= 20 + seconds * 1.0 + 1, statuses
        assert set(statuses) == {200, 429}, statuses
        assert client.get("/api/v1/budget").status_code == 200

        burst = "/api/v1/providers/burst"
        with flood(web, lambda own, i: own.post(burst, json={"prompt": f"f{i % 5}"}), count=400, seconds=10) as flooded:
            time.sleep(0.3)
            redis_server.kill()
            time.sleep(0.5)
            ready = httpx.get(f"http://127.0.0.1:{t.port('budget')}/ready", trust_env=False).json()
        assert flooded and not [status for status in flooded if status >= 500], flooded  # 0 × 5xx
        assert ready["ok"] and ready["redis"]["state"] == "fallback" and ready["redis"]["fallback"] == "local"
        deadline = time.monotonic() + 5  # the supervisor's next readiness probe reads the degraded header
        while "degraded: Redis at unix://" not in (status := t("status").stdout) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "degraded: Redis at unix://" in status and "falls back (local)" in status, status
        assert "Shared state (Redis)" in t("observe").stdout  # its table, on the dashboard's terminal too
        polled = json.loads(t("observe", "--json").stdout)
        assert {name: o["observability"]["redis"]["state"] for name, o in polled["services"].items()
                if name.startswith("budget")} == {"budget.1": "fallback", "budget.2": "fallback"}, polled

        redis_server.restart()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            client.post("/api/v1/providers/burst", json={"prompt": "again"})  # each replica tries Redis again
            observed = httpx.get(f"http://127.0.0.1:{t.port('budget')}/api/v1/system/observability",
                                 trust_env=False).json()
            if observed["redis"]["state"] == "shared":
                break
            time.sleep(0.2)
        assert observed["redis"]["state"] == "shared", observed["redis"]

        redis_server.stop_answering()  # accepts connections, answers nothing
        slowest, hung = 0.0, Counter()
        for i in range(40):
            started = time.monotonic()
            hung[client.post("/api/v1/providers/burst", json={"prompt": f"h{i % 3}"}).status_code] += 1
            slowest = max(slowest, time.monotonic() - started)
        redis_server.resume()
        # Each of web's and budget's round trips waits its 50 ms at most, and only until its breaker opens.
        assert slowest < 0.5 and not [status for status in hung if status >= 500], (slowest, hung)
    assert os.environ.get("TOOLOO_STACK__REDIS_URL") is None  # nothing leaked into this process
    assert t("down").returncode == 0


def test_config_show_does_not_print_the_redis_password(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    t.env = t.env | {"TOOLOO_STACK__REDIS_URL": "redis://:hunter2@cache.internal:6380/2"}
    for command in (("config", "show"), ("config", "show", "--json")):
        result = t(*command)
        assert result.returncode == 0 and "hunter2" not in result.stdout + result.stderr
        assert "redis://:***@cache.internal:6380/2" in result.stdout


def test_a_fallback_that_is_neither_local_nor_deny_is_refused(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    t.env = t.env | {"TOOLOO_STACK__REDIS_FALLBACK": "open"}
    result = t("config", "show")
    assert result.returncode == 2 and "redis_fallback" in result.stdout + result.stderr


def _budget_pair_with_room_to_spend(url: str, calls: float) -> Callable[[Config], None]:
    """Two budget replicas over Redis, their burst limit out of the way, a daily budget of `calls` calls."""
    from tooloo_cli.services.provider import SimulatedProvider

    def edit(config: Config) -> None:
        _budget_pair_over(url)(config)
        budget = config.services["budget"]
        assert budget.rate_limiter is not None and budget.provider is not None
        budget.rate_limiter.capacity = 1_000_000
        budget.provider.usd_per_1k_tokens = 1.0
        one_call = (1 + SimulatedProvider.ANSWER_WORDS + 2) / 1000  # a one-word prompt's exact cost
        budget.provider.daily_budget_usd = round(calls * one_call, 6)

    return edit


def test_two_budget_replicas_share_one_cache_and_one_daily_budget(
        tooloo: Callable[..., Tooloo], redis_server: Any) -> None:
    t = tooloo(_budget_pair_with_room_to_spend(redis_server.url, 10.5))
    result = t("up", "web", "budget")
    assert result.returncode == 0, result.stdout + result.stderr
    replicas = [f"http://127.0.0.1:{t.port('budget') + offset}" for offset in (0, 1)]
    with httpx.Client(base_url=f"http://127.0.0.1:{t.port('web')}", trust_env=False, timeout=10) as client:
        first = client.post("/api/v1/providers/burst", json={"prompt": "shared"}).json()
        again = [httpx.post(f"{replica}/api/v1/providers/burst", json={"prompt": "shared"}, trust_env=False).json()
                 for replica in replicas]
        assert first["cached"] is False and [answer["cached"] for answer in again] == [True, True]
        assert again[0]["text"] == again[1]["text"] == first["text"]

        statuses = Counter(client.post("/api/v1/providers/burst", json={"prompt": f"w{i}"}).status_code
                           for i in range(30))
        assert statuses == {200: 9, 402: 21}, statuses  # 10 in all with "shared" above, not 10 each
        for replica in replicas:  # both stopped at the same total
            refused = httpx.post(f"{replica}/api/v1/providers/burst", json={"prompt": "more"}, trust_env=False)
            assert refused.status_code == 402, refused.text
        day = client.get("/api/v1/budget").json()
        assert day["spentUsd"] <= day["limitUsd"]
    assert t("down").returncode == 0


def test_spend_counted_alone_while_redis_hangs_is_added_when_it_answers_again(
        tooloo: Callable[..., Tooloo], redis_server: Any) -> None:
    import redis

    from tooloo_cli.services.provider import SimulatedProvider

    def edit(config: Config) -> None:
        _budget_pair_with_room_to_spend(redis_server.url, 100)(config)
        config.services["budget"].replicas = 1

    t = tooloo(edit)
    assert t("up", "budget").returncode == 0
    budget = f"http://127.0.0.1:{t.port('budget')}"
    one_call = (1 + SimulatedProvider.ANSWER_WORDS + 2) / 1000
    key = "tooloo:spend:simulated:" + httpx.get(f"{budget}/api/v1/budget", trust_env=False).json()["day"]
    reader = redis.Redis(unix_socket_path=redis_server.path)
    try:
        assert httpx.post(f"{budget}/api/v1/providers/burst", json={"prompt": "a"}, trust_env=False).status_code == 200
        assert float(reader.hget(key, "total")) == pytest.approx(one_call)
        redis_server.stop_answering()
        for prompt in ("b", "c", "d"):  # counted by the replica alone ("local"), answered all the same
            started = time.monotonic()
            answer = httpx.post(f"{budget}/api/v1/providers/burst", json={"prompt": prompt}, trust_env=False)
            assert answer.status_code == 200 and time.monotonic() - started < 1
        redis_server.resume()
        time.sleep(RETRY_AFTER + 0.2)
        assert httpx.post(f"{budget}/api/v1/providers/burst", json={"prompt": "e"}, trust_env=False).status_code == 200
        assert float(reader.hget(key, "total")) == pytest.approx(5 * one_call)  # the three reconciled, the new one
    finally:
        reader.close()
    assert t("down").returncode == 0


class SlowReplies:
    """A TCP proxy on loopback to a Redis Unix socket that can hold Redis's replies back by `delay` seconds:
    a command that Redis has carried out, answered after the client has given up on it."""

    def __init__(self, path: str) -> None:
        self.path, self.delay = path, 0.0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_unix_connection(self.path)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: bool) -> None:
            try:
                while chunk := await reader.read(65_536):
                    if held and self.delay:
                        await asyncio.sleep(self.delay)
                    writer.write(chunk)
                    await writer.drain()
            except (ConnectionError, RuntimeError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, redis_writer, False), pipe(redis_reader, client_writer, True))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def test_spend_changes_whose_answers_came_too_late_are_counted_once(
        stack_config: Callable[..., LoadedConfig], redis_server: Any) -> None:
    """Redis carried them out but answered after the 50 ms timeout: sent again, they must not count twice
    (the spend once gave a release back twice, and counted a late reserve twice)."""
    from conftest import service_client
    from tooloo_cli.services.provider import SimulatedProvider

    one_call = (1 + SimulatedProvider.ANSWER_WORDS + 2) / 1000

    async def scenario() -> tuple[float, float]:
        proxy = SlowReplies(redis_server.path)
        port = await proxy.start()

        def edit(config: Config) -> None:
            config.stack.redis_url = f"redis://127.0.0.1:{port}/0"
            budget = config.services["budget"]
            assert budget.provider is not None and budget.rate_limiter is not None
            budget.provider.latency_ms, budget.provider.usd_per_1k_tokens = 1, 1.0
            budget.rate_limiter.capacity = 1_000_000

        try:
            async with service_client("budget", stack_config(edit)) as client:
                async def call(prompt: str) -> int:
                    return (await client.post("/api/v1/providers/burst", json={"prompt": prompt})).status_code

                assert [await call(f"p{i}") for i in range(3)] == [200] * 3
                proxy.delay = 0.08  # past the 50 ms timeout: each change is made, and taken for failed
                statuses = [await call(f"late{i}") for i in range(3)]
                proxy.delay = 0.0
                await asyncio.sleep(RETRY_AFTER + 0.2)
                assert await call("after") == 200  # Redis answers again: what was held back is set there
                spent = (await client.get("/api/v1/budget")).json()["spentUsd"]
                total = await asyncio.to_thread(_total, redis_server.path)
                assert set(statuses) == {200}
                return spent, total
        finally:
            proxy.close()

    spent, total = asyncio.run(scenario())
    assert spent == pytest.approx(7 * one_call)  # the ledger: every call, once
    assert total == pytest.approx(spent)  # and Redis agrees with it


def _total(path: str) -> float:
    import redis

    reader = redis.Redis(unix_socket_path=path)
    try:
        day = next(key for key in reader.scan_iter("tooloo:spend:*"))
        return float(reader.hget(day, "total"))
    finally:
        reader.close()


def test_a_redis_restarted_empty_counts_the_day_again_from_the_ledger(
        stack_config: Callable[..., LoadedConfig], redis_server: Any) -> None:
    from conftest import service_client
    from tooloo_cli.services.provider import SimulatedProvider

    one_call = (1 + SimulatedProvider.ANSWER_WORDS + 2) / 1000

    def edit(config: Config) -> None:
        config.stack.redis_url = redis_server.url
        budget = config.services["budget"]
        assert budget.provider is not None and budget.rate_limiter is not None
        budget.provider.latency_ms, budget.provider.usd_per_1k_tokens = 1, 1.0
        budget.provider.daily_budget_usd = round(4.5 * one_call, 6)

    async def scenario() -> list[int]:
        async with service_client("budget", stack_config(edit)) as client:
            async def call(prompt: str) -> int:
                return (await client.post("/api/v1/providers/burst", json={"prompt": prompt})).status_code

            statuses = [await call(f"p{i}") for i in range(3)]
            await asyncio.sleep(0.2)  # the ledger's batch committed
            redis_server.restart()  # empty: the day's count is gone
            await asyncio.sleep(RETRY_AFTER + 0.2)
            return statuses + [await call("fourth"), await call("fifth")]

    assert asyncio.run(scenario()) == [200, 200, 200, 200, 402]  # not five: the ledger's three are counted
    assert _total(redis_server.path) == pytest.approx(4 * one_call)


def test_a_replicas_expired_copy_neither_hides_nor_deletes_another_replicas_fresh_entry(redis_server: Any) -> None:
    """Once, an entry expired in one replica's memory was deleted from Redis as it was read: the fresh
    value another replica had just written was lost to all of them (and the provider paid again)."""
    from tooloo_cli.resilience import PersistentCache
    from tooloo_cli.services.shared import RedisCacheStore

    async def scenario() -> tuple[Any, Any, Any]:
        link = RedisLink(redis_server.url, timeout=0.05)
        first, second, third = (PersistentCache(store=RedisCacheStore(link, "budget"), ttl=0.3) for _ in range(3))
        try:
            await first.aset("prompt", {"answer": "old"})
            await asyncio.sleep(0.35)  # expired in first's memory, and in Redis
            await second.aset("prompt", {"answer": "new"}, ttl=60)
            return await first.aget("prompt"), await third.aget("prompt"), await first.aget("prompt")
        finally:
            await link.close()

    assert asyncio.run(scenario()) == ({"answer": "new"},) * 3
