"""Contract tests of the capabilities service: discovery, activation, persistence across restarts."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from contextlib import closing
from typing import Any

import httpx
import pytest
from conftest import service_client

from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.services import create_app
from tooloo_cli.services.capabilities import CATEGORIES, DISCOVERED_METHODS

StackConfig = Callable[..., LoadedConfig]
BASE = "/api/v1/capabilities"


def run_capabilities(loaded: LoadedConfig, scenario: Callable[[httpx.AsyncClient], Any]) -> Any:
    async def main() -> Any:
        async with service_client("capabilities", loaded) as client:
            return await scenario(client)

    return asyncio.run(main())


def test_start_up_discovers_the_built_in_methods(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        status = (await client.get(f"{BASE}/status")).json()
        assert status["ok"] is True
        assert status["discovered"] == len(DISCOVERED_METHODS) and status["active"] == 0
        assert set(status["byCategory"]) == set(CATEGORIES) == {"analysis", "generation", "retrieval", "evaluation"}
        assert sum(c["discovered"] for c in status["byCategory"].values()) == len(DISCOVERED_METHODS)

        methods = (await client.get(f"{BASE}/discovered")).json()["methods"]
        assert sorted(m["name"] for m in methods) == sorted(name for name, _, _ in DISCOVERED_METHODS)
        assert set(methods[0]) == {"name", "category", "description", "active", "activatedAt", "activations"}
        assert all(m["active"] is False and m["activatedAt"] is None and m["activations"] == 0 for m in methods)

        retrieval = (await client.get(f"{BASE}/discovered", params={"category": "retrieval"})).json()["methods"]
        assert retrieval and {m["category"] for m in retrieval} == {"retrieval"}

        unknown = await client.get(f"{BASE}/discovered", params={"category": "astrology"})
        assert unknown.status_code == 422 and unknown.json()["field"] == "category"

        assert (await client.get("/ready")).json()["ok"] is True

    run_capabilities(stack_config(), scenario)


def test_activate_and_deactivate(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        activated = await client.post(f"{BASE}/activate", json={"name": "semantic-search"})
        assert activated.status_code == 200
        method = activated.json()["method"]
        assert activated.json()["changed"] is True
        assert method["name"] == "semantic-search" and method["category"] == "retrieval"
        assert method["active"] is True and method["activations"] == 1 and isinstance(method["activatedAt"], float)

        again = (await client.post(f"{BASE}/activate", json={"name": "semantic-search"})).json()
        assert again["changed"] is False and again["method"] == method

        status = (await client.get(f"{BASE}/status")).json()
        assert status["active"] == 1 and status["byCategory"]["retrieval"] == {"discovered": 3, "active": 1}

        deactivated = (await client.post(f"{BASE}/deactivate", json={"name": "semantic-search"})).json()
        assert deactivated["changed"] is True
        assert deactivated["method"]["active"] is False and deactivated["method"]["activatedAt"] is None
        assert deactivated["method"]["activations"] == 1

        second = (await client.post(f"{BASE}/activate", json={"name": "semantic-search"})).json()
        assert second["method"]["activations"] == 2

    run_capabilities(stack_config(), scenario)


def test_unknown_methods_and_bad_bodies_answer_json_errors(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for action in ("activate", "deactivate"):
            unknown = await client.post(f"{BASE}/{action}", json={"name": "mind-reading"})
            assert unknown.status_code == 404
            assert unknown.json()["ok"] is False and unknown.json()["name"] == "mind-reading"
            assert "mind-reading" in unknown.json()["error"]

        wrong_type = await client.post(f"{BASE}/activate", json={"name": 3})
        assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "name"
        missing = await client.post(f"{BASE}/activate", json={})
        assert missing.status_code == 422 and missing.json()["field"] == "name"
        assert (await client.post(f"{BASE}/activate", content=b"{")).status_code == 400
        assert (await client.get(f"{BASE}/activate")).status_code == 405

    run_capabilities(stack_config(), scenario)


def test_activation_survives_a_restart(stack_config: StackConfig) -> None:
    loaded = stack_config()

    async def activate(client: httpx.AsyncClient) -> dict[str, Any]:
        await client.post(f"{BASE}/activate", json={"name": "code-generation"})
        await client.post(f"{BASE}/activate", json={"name": "answer-grading"})
        await client.post(f"{BASE}/deactivate", json={"name": "answer-grading"})
        return (await client.post(f"{BASE}/activate", json={"name": "answer-grading"})).json()["method"]

    async def read_back(client: httpx.AsyncClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        status = (await client.get(f"{BASE}/status")).json()
        return status, (await client.get(f"{BASE}/discovered")).json()["methods"]

    grading = run_capabilities(loaded, activate)
    status, methods = run_capabilities(loaded, read_back)
    assert status["discovered"] == len(DISCOVERED_METHODS) and status["active"] == 2
    assert {m["name"] for m in methods if m["active"]} == {"code-generation", "answer-grading"}
    assert next(m for m in methods if m["name"] == "answer-grading") == grading
    assert grading["activations"] == 2

    database = loaded.state_path("capabilities.db")
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT COUNT(*) FROM methods WHERE active = 1").fetchone() == (2,)


def test_concurrent_requests_take_turns_on_a_one_connection_pool(stack_config: StackConfig) -> None:
    def one_connection(config: Config) -> None:
        pool = config.services["capabilities"].pool
        assert pool is not None
        pool.min_size, pool.max_size = 1, 1

    async def scenario(client: httpx.AsyncClient) -> tuple[list[httpx.Response], dict[str, Any], dict[str, Any]]:
        names = [name for name, _, _ in DISCOVERED_METHODS]
        answers = await asyncio.gather(*(client.post(f"{BASE}/activate", json={"name": name}) for name in names),
                                       *(client.get(f"{BASE}/status") for _ in range(8)))
        status = (await client.get(f"{BASE}/status")).json()
        return list(answers), status, (await client.get("/api/v1/system/observability")).json()["pool"]

    answers, status, pool = run_capabilities(stack_config(one_connection), scenario)
    assert [answer.status_code for answer in answers] == [200] * len(answers)
    assert status["active"] == len(DISCOVERED_METHODS)
    # Every statement went through the pool and gave its connection back.
    assert pool["size"] == 1 and pool["inUse"] == 0 and pool["acquired"] >= len(answers) + 1
    assert pool["timeouts"] == 0


def test_a_pool_with_no_connection_free_in_time_answers_503_not_500(stack_config: StackConfig) -> None:
    """A pool timeout is the service being busy (ResilienceError): 503 with Retry-After, never a generic 500."""
    def starved(config: Config) -> None:
        pool = config.services["capabilities"].pool
        assert pool is not None
        pool.min_size, pool.max_size, pool.acquire_timeout = 1, 1, 0.0001

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return list(await asyncio.gather(*(client.get(f"{BASE}/status") for _ in range(30))))

    answers = run_capabilities(stack_config(starved), scenario)
    statuses = [answer.status_code for answer in answers]
    refused = [answer for answer in answers if answer.status_code != 200]
    assert set(statuses) <= {200, 503} and 500 not in statuses
    assert refused and all(answer.status_code == 503 for answer in refused)
    assert refused[0].headers["retry-after"] == "1" and "busy" in refused[0].json()["error"]


def test_missing_pool_settings_are_named(stack_config: StackConfig) -> None:
    loaded = stack_config()
    loaded.services["capabilities"].pool = None
    with pytest.raises(RuntimeError, match=r"\[services\.capabilities\.pool\]"):
        create_app("capabilities", loaded)


def test_a_corrupt_database_is_moved_aside_and_rebuilt_with_a_warning(
        stack_config: StackConfig, caplog: pytest.LogCaptureFixture) -> None:
    loaded = stack_config()
    database = loaded.state_path("capabilities.db")
    database.parent.mkdir(parents=True, exist_ok=True)
    database.write_bytes(b"not a database at all" * 200)

    async def scenario(client: httpx.AsyncClient) -> tuple[dict, int]:
        status = (await client.get(f"{BASE}/status")).json()
        return status, (await client.get("/ready")).status_code

    with caplog.at_level(logging.WARNING):
        status, ready = run_capabilities(loaded, scenario)  # before: every start failed, into a crash loop
    assert status["discovered"] == len(DISCOVERED_METHODS) and ready == 200
    aside = [p for p in database.parent.iterdir() if p.name.startswith("capabilities.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")
    assert "was corrupt" in caplog.text and str(aside[0]) in caplog.text


def test_the_database_is_private_even_when_it_was_not(stack_config: StackConfig) -> None:
    loaded = stack_config()
    run_capabilities(loaded, lambda client: client.get(f"{BASE}/status"))
    database = loaded.state_path("capabilities.db")
    assert oct(database.stat().st_mode & 0o777) == "0o600"  # before: 0644
    database.chmod(0o644)
    run_capabilities(loaded, lambda client: client.get(f"{BASE}/status"))
    assert oct(database.stat().st_mode & 0o777) == "0o600"
    assert all(oct(p.stat().st_mode & 0o077) == "0o0" for p in database.parent.glob("capabilities.db*"))
