"""Live stack: the running services honour their contract (health, observability, tracing end to end)."""

from __future__ import annotations

import secrets

import pytest

from tooloo_cli._httpx import httpx
from tooloo_cli.config import BUILTIN_SERVICES, LoadedConfig
from tooloo_cli.observe.poll import check_document
from tooloo_cli.stack import stack_of

MODULES = ("rateLimiter", "cache", "circuitBreakers", "pool", "queryOptimizer")


def _get_each(stack: LoadedConfig, name: str, path: str, **options: object) -> list[httpx.Response]:
    """`path` asked of every replica of service `name`."""
    return [_get_url(name, url + path, **options) for url in stack_of(stack).urls(name)]


def _get(stack: LoadedConfig, name: str, path: str, **options: object) -> httpx.Response:
    return _get_url(name, stack_of(stack).urls(name)[0] + path, **options)


def _get_url(name: str, url: str, **options: object) -> httpx.Response:
    try:
        return httpx.get(url, timeout=2.0, trust_env=False, **options)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        pytest.fail(f"{name} is not reachable at {url} ({type(exc).__name__}); is the stack up? (`tooloo up`)")


@pytest.mark.parametrize("name", BUILTIN_SERVICES)
def test_answers_health(stack: LoadedConfig, name: str) -> None:
    for response in _get_each(stack, name, "/health"):
        document = response.json()
        assert document["ok"] is True and document["service"] == name and isinstance(document["pid"], int)


@pytest.mark.parametrize("name", BUILTIN_SERVICES)
def test_serves_its_observability_document(stack: LoadedConfig, name: str) -> None:
    for response in _get_each(stack, name, "/api/v1/system/observability"):
        assert response.status_code == 200
        document = response.json()
        assert check_document(document) is None, check_document(document)
        assert 0 <= document["tracer"]["errorRate"] <= 1
        for module in MODULES:
            assert module in document, f"{module} missing (null when not embedded)"


def test_one_traced_request_keeps_its_trace_id_end_to_end(stack: LoadedConfig) -> None:
    trace_id = secrets.token_hex(16)
    response = _get(stack, "web", "/api/v1/budget", headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    assert response.status_code == 200, response.text
    assert response.json()["traceId"] == trace_id
    assert response.headers["traceparent"].split("-")[1] == trace_id
    kept = [trace for answer in _get_each(stack, "budget", "/api/v1/system/observability")
            for trace in answer.json()["tracer"]["spans"]]
    assert any(trace["traceId"] == trace_id for trace in kept), "budget did not keep the sampled trace"
