"""reports: a comprehensive report that degrades to nulls and insights, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conftest import service_client
from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.services.reports import SECTIONS, analyze


def test_with_every_sibling_down_the_report_is_all_nulls_and_says_why(
        stack_config: Callable[..., LoadedConfig]) -> None:
    def sample_everything(config: Config) -> None:
        config.services["reports"].tracer.sampling_rate = 1.0

    async def scenario() -> tuple[dict, dict, dict]:
        async with service_client("reports", stack_config(sample_everything)) as client:
            first = (await client.get("/api/v1/reports/comprehensive")).json()
            second = (await client.get("/api/v1/reports/comprehensive")).json()
            observed = (await client.get("/api/v1/system/observability")).json()
        return first, second, observed

    first, second, observed = asyncio.run(scenario())
    assert first["ok"] is True and first["available"] == 0
    assert all(first["sections"][name] is None for name in SECTIONS)
    assert sum(insight.endswith("its section is null") for insight in first["insights"]) == len(SECTIONS)
    assert second["cached"] is False  # a partial report is not kept
    assert set(observed["circuitBreakers"]) == set(SECTIONS)
    assert observed["cache"] is not None and observed["rateLimiter"] is None
    spans = {span["name"] for trace in observed["tracer"]["spans"] for span in trace["spans"]}
    assert {"fetch-services", "analyze-data", "GET training/api/v1/training/overview"} <= spans


def test_insights_are_derived_from_the_sections_that_arrived() -> None:
    sections = {
        "training": {"domains": [{"name": "python", "mastery": 44.0}, {"name": "security", "mastery": 70.0}],
                     "averageMastery": 57.0},
        "budget": {"spentUsd": 1.0, "limitUsd": 4.0, "calls": 12},
        "coach": {"active": True},
        "capabilities": {"active": 3, "discovered": 12},
    }
    insights = analyze(sections, {"meta": "meta is unreachable: ConnectError"})
    assert insights[0].startswith("meta is unavailable")
    assert any("weakest is python" in insight for insight in insights)
    assert any(insight.startswith("25.0% of today's budget") for insight in insights)
    assert "The auto-coach is running" in insights and "3 of 12 capabilities are active" in insights
