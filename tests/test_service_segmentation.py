"""Contract tests of the segmentation service: segments, topics, traits, validation, status."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import service_client

from tooloo_cli.config import LoadedConfig
from tooloo_cli.services import segmentation

StackConfig = Callable[..., LoadedConfig]
ANALYZE = "/api/v1/segmentation/analyze"

CONVERSATION = [
    {"role": "user", "content": "Fix the failing test in the python api"},
    {"role": "assistant", "content": "The function raises an error: the bug is in the test fixture."},
    {"role": "user", "content": "What is on the roadmap? Which milestone has the nearest deadline?"},
    {"role": "assistant", "content": "The plan puts the deadline of milestone two first."},
    {"role": "user", "content": "Explain how to learn this; is there a course to study?"},
    {"role": "assistant", "content": "Thanks, great question."},
    {"role": "user", "content": "Our server latency spiked during the outage, monitor it"},
]


def run_segmentation(loaded: LoadedConfig, scenario: Callable[[httpx.AsyncClient], Any]) -> Any:
    async def main() -> Any:
        async with service_client("segmentation", loaded) as client:
            return await scenario(client)

    return asyncio.run(main())


def test_a_conversation_splits_into_topic_segments_with_traits(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> dict[str, Any]:
        response = await client.post(ANALYZE, json={"messages": CONVERSATION})
        assert response.status_code == 200
        return response.json()

    body = run_segmentation(stack_config(), scenario)
    assert body["ok"] is True and body["messageCount"] == 7
    assert body["segments"] == [
        {"start": 0, "end": 1, "topic": "code", "messages": 2},
        {"start": 2, "end": 3, "topic": "planning", "messages": 2},
        {"start": 4, "end": 4, "topic": "learning", "messages": 1},
        {"start": 5, "end": 5, "topic": "general", "messages": 1},
        {"start": 6, "end": 6, "topic": "operations", "messages": 1},
    ]
    assert body["topics"] == ["code", "planning", "learning", "general", "operations"]
    traits = body["traits"]
    assert set(traits) == {"curiosity", "verbosity", "technicality", "positivity", "directness"}
    assert all(0 <= value <= 1 and value == round(value, 3) for value in traits.values())
    assert traits["curiosity"] == round(2 / 7, 3)
    # Two of four user messages start with an imperative ("fix", "explain").
    assert traits["directness"] == 0.5
    # "thanks" and "great" against "failing".
    assert traits["positivity"] == round(0.5 + 0.5 * (2 - 1) / 3, 3)


def test_the_same_conversation_always_gives_the_same_answer(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[dict[str, Any]]:
        answers = [(await client.post(ANALYZE, json={"messages": CONVERSATION})).json() for _ in range(2)]
        return [{key: value for key, value in answer.items() if key != "traceId"} for answer in answers]

    first, second = run_segmentation(stack_config(), scenario)
    assert first == second


def test_traits_at_their_extremes(stack_config: StackConfig) -> None:
    terse = [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "sure"}]
    technical = [{"role": "user", "content": "deploy the api server " * 30}]

    async def scenario(client: httpx.AsyncClient) -> tuple[dict[str, float], dict[str, float]]:
        plain = (await client.post(ANALYZE, json={"messages": terse})).json()
        heavy = (await client.post(ANALYZE, json={"messages": technical})).json()
        return plain["traits"], heavy["traits"]

    plain, heavy = run_segmentation(stack_config(), scenario)
    assert plain == {"curiosity": 0.0, "verbosity": 0.02, "technicality": 0.0, "positivity": 0.5,
                     "directness": 0.0}
    assert heavy["verbosity"] == 1.0 and heavy["technicality"] == 1.0 and heavy["directness"] == 1.0


@pytest.mark.parametrize(("body", "field"), [
    ({}, "messages"),
    ({"messages": "hello"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}] * 1001}, "messages"),
    ({"messages": [{"role": "user", "content": "a"}] * 3 + ["not an object"]}, "messages[3]"),
    ({"messages": [{"role": "user", "content": "a"}] * 3 + [{"role": 5, "content": "x"}]}, "messages[3].role"),
    ({"messages": [{"role": "user", "content": "a"}] * 3 + [{"role": "robot", "content": "x"}]},
     "messages[3].role"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "a"}] * 2 + [{"role": "user", "content": 7}]}, "messages[2].content"),
])
def test_invalid_messages_answer_422_naming_the_field(stack_config: StackConfig, body: dict[str, Any],
                                                      field: str) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(ANALYZE, json=body)

    response = run_segmentation(stack_config(), scenario)
    assert response.status_code == 422
    assert response.json()["ok"] is False and response.json()["field"] == field
    assert field in response.json()["error"]


def test_malformed_json_wrong_method_and_status(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.post(ANALYZE, content=b"[1,")).status_code == 400
        assert (await client.get(ANALYZE)).status_code == 405

        before = (await client.get("/api/v1/segmentation/status")).json()
        assert before["analyses"] == 0 and before["messagesAnalyzed"] == 0 and before["lastAnalysisAt"] is None
        await client.post(ANALYZE, json={"messages": CONVERSATION})
        await client.post(ANALYZE, json={"messages": CONVERSATION[:2]})
        after = (await client.get("/api/v1/segmentation/status")).json()
        assert after["analyses"] == 2 and after["messagesAnalyzed"] == 9
        assert isinstance(after["lastAnalysisAt"], float)

    run_segmentation(stack_config(), scenario)


def test_analysis_is_traced_in_a_segment_span(stack_config: StackConfig) -> None:
    def always_sample(config: Any) -> None:
        config.services["segmentation"].tracer.sampling_rate = 1.0

    async def scenario(client: httpx.AsyncClient) -> dict[str, Any]:
        await client.post(ANALYZE, json={"messages": CONVERSATION})
        return (await client.get("/api/v1/system/observability")).json()

    document = run_segmentation(stack_config(always_sample), scenario)
    trace = next(t for t in document["tracer"]["spans"] if t["name"] == f"POST {ANALYZE}")
    assert "segment" in [span["name"] for span in trace["spans"]]


def test_error_messages_name_the_nested_field_in_full(stack_config: StackConfig) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[str]:
        bodies = [{"messages": [{"role": "user", "content": "a"}, {"content": "x"}]},
                  {"messages": [{"role": "robot", "content": "x"}]},
                  {"messages": [{"role": "user", "content": ["x"]}]}]
        return [(await client.post(ANALYZE, json=body)).json()["error"] for body in bodies]

    missing, unknown_role, not_text = run_segmentation(stack_config(), scenario)
    assert missing == "field 'messages[1].role' is required"
    assert unknown_role == "field 'messages[0].role' must be one of user, assistant, system"
    assert not_text == "field 'messages[0].content' must be a string"


def test_the_analysis_runs_off_the_event_loop(stack_config: StackConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []

    def analyze_and_note_the_thread(messages: list[segmentation.Message]) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return real_analyze(messages)

    real_analyze = segmentation.analyze
    monkeypatch.setattr(segmentation, "analyze", analyze_and_note_the_thread)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(ANALYZE, json={"messages": CONVERSATION})

    assert run_segmentation(stack_config(), scenario).json()["messageCount"] == 7
    assert threads and threads[0] != threading.main_thread().name
