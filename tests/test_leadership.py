"""services/leadership.py: one leader at a time over a real redis-server, takeover when it dies, nobody new
while Redis is away; and coach's replicas, of which only the leader drives the loop."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from conftest import Tooloo, alive
from tooloo_cli.bench.stack import room_for_replicas
from tooloo_cli.config import Config
from tooloo_cli.services.leadership import LEASE_SECONDS, Lease
from tooloo_cli.services.shared import RETRY_AFTER, RedisLink

TTL = 1.0  # the unit tests' lease: the same rules as LEASE_SECONDS's, in a third of the time
SLACK = 0.3  # a standby's poll (ttl/10), a round trip and the scheduler's delays, with room to spare


@asynccontextmanager
async def two_replicas(url: str) -> AsyncIterator[tuple[Lease, Lease]]:
    """Two leases of one name, each on a link of its own (as two processes), started one after the other."""
    links = [RedisLink(url, timeout=0.05) for _ in range(2)]
    leases = [Lease(link, "coach", holder=f"replica-{i}", ttl=TTL) for i, link in enumerate(links, start=1)]
    try:
        for lease in leases:
            await lease.start()
        yield leases[0], leases[1]
    finally:
        for lease in leases:
            await lease.stop()
        for link in links:
            await link.close()


async def watch(leases: tuple[Lease, Lease], seconds: float,
                until: Callable[[], bool] = lambda: False) -> list[tuple[float, bool, bool]]:
    """(elapsed, first leads, second leads) every 10 ms for `seconds` at most, or until `until()` holds."""
    started = time.monotonic()
    seen = []
    while (elapsed := time.monotonic() - started) < seconds:
        seen.append((elapsed, leases[0].is_leader, leases[1].is_leader))
        if until():
            break
        await asyncio.sleep(0.01)
    return seen


def test_of_two_replicas_only_one_leads(redis_server: Any) -> None:
    async def scenario() -> tuple[bool, bool, list[tuple[float, bool, bool]], dict[str, Any]]:
        async with two_replicas(redis_server.url) as (first, second):
            started = first.is_leader, second.is_leader
            seen = await watch((first, second), 3 * TTL)  # several renewals and standby polls
            return *started, seen, first.state()

    first, second, seen, state = asyncio.run(scenario())
    assert first and not second  # the first to start took the lease; the second stands by
    assert all(a and not b for _, a, b in seen), [s for s in seen if not (s[1] and not s[2])][:5]
    assert state["leader"] and state["holder"] == "replica-1" and state["key"] == "tooloo:lease:coach"
    assert state["leaderSince"] <= time.time() and 0 < state["validForSeconds"] <= TTL and state["error"] is None


def test_a_leader_that_dies_is_replaced_within_the_lease_time(redis_server: Any) -> None:
    async def scenario() -> list[tuple[float, bool, bool]]:
        async with two_replicas(redis_server.url) as (first, second):
            await asyncio.sleep(TTL / 2)
            await first.stop(release=False)  # as a process that dies: no more renewals, nothing released
            return await watch((first, second), TTL + 2 * SLACK, until=lambda: second.is_leader)

    seen = asyncio.run(scenario())
    assert not any(a and b for _, a, b in seen)  # never two leaders
    took_over = next((elapsed for elapsed, _, b in seen if b), None)
    assert took_over is not None and took_over <= TTL + SLACK, seen[-1]


def test_a_leader_that_shuts_down_hands_over_at_once(redis_server: Any) -> None:
    async def scenario() -> list[tuple[float, bool, bool]]:
        async with two_replicas(redis_server.url) as (first, second):
            await first.stop()  # released: the key is free now, not when it would have expired
            return await watch((first, second), TTL, until=lambda: second.is_leader)

    seen = asyncio.run(scenario())
    took_over = next((elapsed for elapsed, _, b in seen if b), None)
    assert took_over is not None and took_over <= SLACK < TTL, seen[-1]


def test_without_redis_nobody_new_leads_and_the_leader_stands_down_by_its_lease_time(redis_server: Any) -> None:
    async def scenario() -> tuple[list[tuple[float, bool, bool]], dict[str, Any], list[tuple[float, bool, bool]]]:
        async with two_replicas(redis_server.url) as (first, second):
            redis_server.stop_answering()  # SIGSTOP: commands time out
            try:
                during = await watch((first, second), TTL + SLACK)
                state = first.state(detail=False)
            finally:
                redis_server.resume()
            # The links' breakers are open for RETRY_AFTER; then the first attempt to reach Redis leads.
            after = await watch((first, second), RETRY_AFTER + TTL + SLACK, until=lambda: first.is_leader or
                                second.is_leader)
            return during, state, after

    during, state, after = asyncio.run(scenario())
    assert not any(b for _, _, b in during)  # the standby cannot take what it cannot reach
    # The leader leads no longer than its last renewal's lease, by its own clock, renewed or not.
    stood_down = next((elapsed for elapsed, a, _ in during if not a), None)
    assert stood_down is not None and stood_down <= TTL + 0.05, during[-1]
    assert not during[-1][1] and not state["leader"] and state["leaderSince"] is None
    assert state["error"] == "unavailable"  # the observability document's remote view: no error text
    assert after[-1][1] != after[-1][2], after[-1]  # Redis back: exactly one leads again


def test_a_redis_restarted_empty_gets_a_leader_again(redis_server: Any) -> None:
    async def scenario() -> tuple[bool, bool]:
        async with two_replicas(redis_server.url) as (first, second):
            redis_server.restart()  # the lease's key is gone with the old server
            await watch((first, second), RETRY_AFTER + 2 * TTL, until=lambda: first.is_leader or second.is_leader)
            await asyncio.sleep(TTL)  # and it stays one, renewed
            return first.is_leader, second.is_leader

    first, second = asyncio.run(scenario())
    assert first != second


# -- coach's replicas, through the real `tooloo` -------------------------------------------------


def _coach_pair(url: str) -> Callable[[Config], None]:
    def edit(config: Config) -> None:
        room_for_replicas(config, "coach", 2)
        config.stack.redis_url = url

    return edit


def _statuses(ports: dict[str, int]) -> dict[str, dict[str, Any]]:
    return {name: httpx.get(f"http://127.0.0.1:{port}/api/v1/auto-coach/status", trust_env=False, timeout=5).json()
            for name, port in ports.items()}


def test_two_coach_replicas_drive_rounds_from_the_leader_alone_and_the_other_takes_over_when_it_is_killed(
        tooloo: Callable[..., Tooloo], redis_server: Any) -> None:
    t = tooloo(_coach_pair(redis_server.url))
    result = t("up", "training", "coach")  # named: coach calls training, but `up coach` starts coach alone
    assert result.returncode == 0, result.stdout + result.stderr
    services = t.status()["services"]
    assert services["training"]["ready"] and services["coach.1"]["ready"] and services["coach.2"]["ready"], services
    ports = {name: services[name]["port"] for name in ("coach.1", "coach.2")}
    for port in ports.values():
        started = httpx.post(f"http://127.0.0.1:{port}/api/v1/auto-coach/start", json={"intervalMs": 100},
                             trust_env=False, timeout=5)
        assert started.status_code == 200 and started.json()["active"], started.text

    time.sleep(1.5)
    before = _statuses(ports)
    time.sleep(0.5)
    after = _statuses(ports)
    leaders = [name for name, status in after.items() if status["leader"]]
    assert len(leaders) == 1, after
    (leader,) = leaders
    (standby,) = set(ports) - {leader}
    assert after[leader]["roundsDriven"] > before[leader]["roundsDriven"] > 0, (before, after)
    assert after[leader]["leaderSince"] <= time.time() and after[leader]["failures"] == 0
    assert after[standby]["active"] and not after[standby]["leader"] and after[standby]["leaderSince"] is None
    assert after[standby]["roundsDriven"] == 0  # active, but waiting: its loop drove nothing
    observed = httpx.get(f"http://127.0.0.1:{ports[leader]}/api/v1/system/observability", trust_env=False).json()
    assert observed["leadership"]["leader"] and observed["leadership"]["key"] == "tooloo:lease:coach"
    assert observed["redis"]["state"] == "shared"
    for name, leads in ((leader, 1), (standby, 0)):
        page = httpx.get(f"http://127.0.0.1:{ports[name]}/metrics", trust_env=False).text
        assert f"tooloo_coach_leader {leads}" in page.splitlines(), name

    pid = services[leader]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + LEASE_SECONDS + 1.5
    while time.monotonic() < deadline:
        status = _statuses({standby: ports[standby]})[standby]
        if status["leader"] and status["roundsDriven"] > 0:
            break
        time.sleep(0.05)
    assert status["leader"] and status["roundsDriven"] > 0, status
    assert time.monotonic() - killed <= LEASE_SECONDS + 1.5
    assert not alive(pid)


def test_two_coach_replicas_without_redis_are_refused_naming_redis_url(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo(lambda config: room_for_replicas(config, "coach", 2))
    result = t("up", "coach")
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "services.coach.replicas = 2" in output and "set [stack] redis_url" in output, output
