"""GET /metrics of the services (services/metrics.py): valid for promtool, bounded, and the same figures
as the observability document."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from typing import Any

import pytest

from conftest import promtool_check_metrics, service_client
from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.stack import ROLES

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(name, labels): value} of every sample on a metrics page."""
    found = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            match = _SAMPLE.fullmatch(line)
            assert match is not None, line
            name, labels, value = match.groups()
            found[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return found


def value(page: str, name: str, **labels: str) -> float:
    return samples(page)[(name, frozenset(labels.items()))]


# Something each service answers, so that its page has requests, and its modules' figures, to show.
_TRAFFIC = {
    "web": "/api/v1/system/status",
    "training": "/api/v1/training/overview",
    "meta": "/api/v4/meta-learning/insights",
    "budget": "/api/v1/providers/burst?prompt=hello",
    "coach": "/api/v1/auto-coach/status",
    "segmentation": "/api/v1/segmentation/status",
    "reports": "/api/v1/reports/comprehensive",
    "capabilities": "/api/v1/capabilities/status",
}


@pytest.mark.parametrize("name", list(ROLES))
def test_every_service_serves_a_page_promtool_finds_nothing_wrong_with(
        name: str, stack_config: Callable[..., LoadedConfig]) -> None:
    def sample_everything(config: Config) -> None:
        config.services[name].tracer.sampling_rate = 1.0

    async def scenario() -> Any:
        async with service_client(name, stack_config(sample_everything)) as client:
            await client.get(_TRAFFIC[name])  # a 502 where siblings are called: none runs here
            return await client.get("/metrics")

    page = asyncio.run(scenario())
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert promtool_check_metrics(page.text) == ""
    assert value(page.text, "tooloo_service_info", version=_version()) == 1
    assert sum(count for (metric, _), count in samples(page.text).items() if metric == "tooloo_http_requests_total") >= 1


def _version() -> str:
    from tooloo_cli import __version__

    return __version__


def test_labels_stay_bounded_whatever_paths_and_methods_clients_send(stack_config: Callable[..., LoadedConfig]) -> None:
    async def scenario() -> str:
        async with service_client("training", stack_config()) as client:
            for number in range(40):
                await client.get(f"/api/v1/no-such-route/{number}")
                await client.request(f"BREW{number}", "/api/v1/training/overview")
            await client.get("/api/v1/training/overview")
            return (await client.get("/metrics")).text

    page = asyncio.run(scenario())
    series = {dict(labels)["route"] + " " + dict(labels)["method"] + " " + dict(labels)["status_class"]
              for (metric, labels) in samples(page) if metric == "tooloo_http_requests_total"}
    assert series == {"unmatched GET 4xx", "/api/v1/training/overview _OTHER 4xx", "/api/v1/training/overview GET 2xx"}
    assert value(page, "tooloo_http_requests_total", method="GET", route="unmatched", status_class="4xx") == 40
    assert value(page, "tooloo_http_request_duration_seconds_count", method="_OTHER",
                 route="/api/v1/training/overview", status_class="4xx") == 40


def test_a_route_with_parameters_is_counted_under_its_template(stack_config: Callable[..., LoadedConfig]) -> None:
    async def scenario() -> str:
        async with service_client("web", stack_config()) as client:
            for version in ("v7", "v8", "v9"):  # owned by no service: web's catch-all answers 404
                assert (await client.get(f"/api/{version}/anything")).status_code == 404
            return (await client.get("/metrics")).text

    routes = {dict(labels)["route"] for (metric, labels) in samples(asyncio.run(scenario()))
              if metric == "tooloo_http_requests_total"}
    assert routes == {"/api/{path:path}"}


def test_scrapes_and_health_probes_are_not_logged_traced_or_counted(stack_config: Callable[..., LoadedConfig]) -> None:
    log = io.StringIO()

    async def scenario() -> str:
        async with service_client("training", stack_config(), access_log=log) as client:
            for _ in range(3):
                await client.get("/metrics")
                await client.get("/health")
                await client.get("/api/v1/system/observability")
            return (await client.get("/metrics")).text

    page = asyncio.run(scenario())
    assert log.getvalue().count("/metrics") == 0 and log.getvalue().count("/health") == 0
    assert value(page, "tooloo_traces_total") == 0
    assert not [labels for (metric, labels) in samples(page) if metric == "tooloo_http_requests_total"]


def test_the_page_and_the_observability_document_tell_the_same_figures(
        stack_config: Callable[..., LoadedConfig]) -> None:
    async def scenario() -> tuple[str, dict[str, Any]]:
        async with service_client("budget", stack_config()) as client:
            for prompt in ("one", "two", "one", "one"):
                assert (await client.get("/api/v1/providers/burst", params={"prompt": prompt})).status_code == 200
            page = (await client.get("/metrics")).text
            document = (await client.get("/api/v1/system/observability")).json()
            return page, document

    page, document = asyncio.run(scenario())
    cache, limiter, breaker = document["cache"], document["rateLimiter"], document["circuitBreakers"]["provider"]
    assert value(page, "tooloo_cache_hits_total", layer="memory") == cache["memoryHits"] == 2
    assert value(page, "tooloo_cache_misses_total") == cache["misses"] == 2
    assert value(page, "tooloo_cache_items", layer="shared") == cache["diskItems"] == 2
    assert value(page, "tooloo_rate_limit_decisions_total", decision="allowed") == limiter["allowedRequests"] == 4
    assert value(page, "tooloo_breaker_calls_total", breaker="provider") == breaker["callCount"] == 2
    assert value(page, "tooloo_breaker_state", breaker="provider", state="closed") == 1
    provider = document["provider"]
    assert value(page, "tooloo_provider_calls_total", provider="simulated", outcome="ok") == provider["calls"]["ok"] == 2
    assert value(page, "tooloo_provider_spend_usd_total", provider="simulated") == pytest.approx(provider["spentUsd"])
    assert value(page, "tooloo_pool_acquires_total", pool="budget-db") == document["pool"]["acquired"]
    assert value(page, "tooloo_query_batched_rows_total") == document["queryOptimizer"]["batchedQueries"]
    assert value(page, "tooloo_http_requests_total", method="GET", route="/api/v1/providers/burst",
                 status_class="2xx") == 4
