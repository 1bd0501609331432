"""The budget's providers: simulated, and OpenAI-compatible against a mocked remote (respx)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
import respx

from conftest import service_client
from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.services.provider import OpenAIProvider, ProviderError, ProviderRejected, SimulatedProvider

REMOTE = "https://llm.example.test/v1"
COMPLETION = {"model": "gpt-test", "choices": [{"message": {"role": "assistant", "content": "Hello there"}}],
              "usage": {"total_tokens": 7}}


def _openai(timeout: float = 5.0) -> OpenAIProvider:
    return OpenAIProvider(REMOTE, "gpt-test", "TOOLOO_TEST_KEY", timeout)


def test_the_simulated_provider_is_deterministic_and_offline() -> None:
    provider = SimulatedProvider(latency_ms=0)
    first = asyncio.run(provider.complete("summarise the ledger"))
    again = asyncio.run(provider.complete("summarise the ledger"))
    other = asyncio.run(provider.complete("something else"))
    assert first == again and first.text != other.text and first.tokens > 0


def test_the_simulated_provider_fails_at_its_configured_rate() -> None:
    with pytest.raises(ProviderError):
        asyncio.run(SimulatedProvider(latency_ms=0, failure_rate=1.0).complete("x"))


@respx.mock(base_url=REMOTE)
def test_a_chat_completion_is_parsed(respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLOO_TEST_KEY", "sk-test")
    route = respx_mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=COMPLETION))
    completion = asyncio.run(_openai().complete("hi"))
    assert (completion.text, completion.tokens, completion.model) == ("Hello there", 7, "gpt-test")
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert b'"content":"hi"' in sent.content.replace(b" ", b"")


@pytest.mark.parametrize("status", [500, 503, 429])
@respx.mock(base_url=REMOTE)
def test_server_errors_and_overload_count_as_failures(respx_mock: respx.MockRouter, status: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLOO_TEST_KEY", "sk-test")
    respx_mock.post("/chat/completions").mock(return_value=httpx.Response(status, json={}))
    with pytest.raises(ProviderError, match=str(status)):
        asyncio.run(_openai().complete("hi"))


@respx.mock(base_url=REMOTE)
def test_a_timeout_counts_as_a_failure(respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLOO_TEST_KEY", "sk-test")
    respx_mock.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderError, match="in time"):
        asyncio.run(_openai().complete("hi"))


@respx.mock(base_url=REMOTE)
def test_a_refusal_is_not_the_providers_fault(respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TOOLOO_TEST_KEY", "sk-bad")
    respx_mock.post("/chat/completions").mock(
        return_value=httpx.Response(401, json={"error": {"message": "Incorrect API key"}}))
    with pytest.raises(ProviderRejected, match="401") as refused:
        asyncio.run(_openai().complete("hi"))
    assert "Incorrect" not in str(refused.value)  # the remote's words are for the log, not for clients
    assert "Incorrect API key" in caplog.text


@respx.mock(base_url=REMOTE)
def test_a_remote_message_echoing_the_key_reaches_neither_the_client_nor_the_log(
        respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-proj-SECRETSECRET1234abcd"
    monkeypatch.setenv("TOOLOO_TEST_KEY", key)
    respx_mock.post("/chat/completions").mock(return_value=httpx.Response(
        401, json={"error": {"message": f"Incorrect API key provided: {key[:8]}*****{key[-4:]} ({key})"}}))
    with pytest.raises(ProviderRejected) as refused:
        asyncio.run(_openai().complete("hi"))
    assert key not in str(refused.value) and key[-4:] not in str(refused.value)
    assert key not in caplog.text and "[redacted]" in caplog.text


def test_the_openai_estimate_bounds_the_prompt_and_the_capped_answer() -> None:
    provider = OpenAIProvider(REMOTE, "gpt-test", "TOOLOO_TEST_KEY", 5.0, max_completion_tokens=100)
    assert provider.estimate_tokens("héllo") == len("héllo".encode()) + 16 + 100


@respx.mock(base_url=REMOTE)
def test_the_answer_is_capped_at_max_completion_tokens(respx_mock: respx.MockRouter,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLOO_TEST_KEY", "sk-test")
    route = respx_mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=COMPLETION))
    asyncio.run(OpenAIProvider(REMOTE, "gpt-test", "TOOLOO_TEST_KEY", 5.0, max_completion_tokens=77).complete("hi"))
    assert b'"max_tokens":77' in route.calls.last.request.content.replace(b" ", b"")


def test_a_missing_key_is_refused_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLOO_TEST_KEY", raising=False)
    with respx.mock(base_url=REMOTE) as mock, pytest.raises(ProviderRejected, match="TOOLOO_TEST_KEY"):
        asyncio.run(_openai().complete("hi"))
    assert not mock.calls


@respx.mock(base_url=REMOTE)
def test_a_malformed_answer_is_a_failure(respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLOO_TEST_KEY", "sk-test")
    respx_mock.post("/chat/completions").mock(return_value=httpx.Response(200, json={"choices": []}))
    with pytest.raises(ProviderError, match="not a chat completion"):
        asyncio.run(_openai().complete("hi"))


def _openai_budget(edit_threshold: int) -> Callable[[Config], None]:
    def edit(config: Config) -> None:
        budget = config.services["budget"]
        assert budget.provider is not None and budget.breaker is not None
        budget.provider.kind = "openai"
        budget.provider.base_url = REMOTE
        budget.provider.api_key_env = "TOOLOO_TEST_KEY"
        budget.breaker.failure_threshold = edit_threshold

    return edit


def test_the_budget_breaker_opens_on_remote_failures_and_answers_503(
        stack_config: Callable[..., LoadedConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLOO_TEST_KEY", "sk-test")
    loaded = stack_config(_openai_budget(2))

    async def scenario() -> list[httpx.Response]:
        with respx.mock(base_url=REMOTE, assert_all_called=False) as mock:
            mock.post("/chat/completions").mock(side_effect=[httpx.Response(502), httpx.ReadTimeout("slow")])
            async with service_client("budget", loaded) as client:
                answers = [await client.post("/api/v1/providers/burst", json={"prompt": f"p{i}"}) for i in range(3)]
                answers.append(await client.get("/api/v1/providers/resilience-status"))
            assert mock.calls.call_count == 2  # the third call never left: the breaker was open
        return answers

    failed_5xx, failed_timeout, rejected, status = asyncio.run(scenario())
    assert failed_5xx.status_code == 502 and failed_timeout.status_code == 502
    assert rejected.status_code == 503 and rejected.json()["breaker"] == "provider"
    breaker = status.json()["circuitBreakers"]["provider"]
    assert breaker["status"] == "open" and breaker["failureCount"] == 2 and breaker["rejectedCount"] == 1


def test_a_remote_refusal_does_not_open_the_budget_breaker(
        stack_config: Callable[..., LoadedConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLOO_TEST_KEY", "sk-test")
    loaded = stack_config(_openai_budget(1))

    async def scenario() -> tuple[httpx.Response, dict]:
        with respx.mock(base_url=REMOTE, assert_all_called=False) as mock:
            mock.post("/chat/completions").mock(return_value=httpx.Response(400, json={"error": {"message": "bad"}}))
            async with service_client("budget", loaded) as client:
                answer = await client.post("/api/v1/providers/burst", json={"prompt": "p"})
                status = (await client.get("/api/v1/providers/resilience-status")).json()
        return answer, status

    answer, status = asyncio.run(scenario())
    assert answer.status_code == 502 and "400" in answer.json()["error"] and "bad" not in answer.json()["error"]
    assert status["circuitBreakers"]["provider"]["status"] == "closed"
