"""LLM providers for the budget service: a simulated one (the default) and an OpenAI-compatible one.

    provider = make_provider(settings)             # from [services.budget.provider]
    completion = await provider.complete("Summarise the ledger")
    completion.text, completion.tokens

Failures the provider's breaker should count (timeouts, refused connections, 5xx, 429)
raise ProviderError; a request the remote refuses for its own reasons (4xx: a bad key, a
bad model) raises ProviderRejected, which the breaker lets through uncounted.

`estimate_tokens(prompt)` is an upper bound of what a call may cost, reserved in the
ledger before the call. The messages of both errors are fixed texts, safe to show a
client: what the remote said (which may echo the key) goes to the log only, with the key
redacted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Protocol

from tooloo_cli.config.schema import ProviderSettings

logger = logging.getLogger("tooloo.services.budget")
# What a chat completion adds to the prompt's tokens (role markers, the reply's priming).
CHAT_OVERHEAD_TOKENS = 16

_VOCABULARY = (
    "resilient", "cache", "latency", "budget", "trace", "signal", "insight", "pattern", "stable", "throughput",
    "circuit", "bounded", "token", "window", "sample", "healthy", "degrade", "recover", "measure", "steady",
    "ledger", "probe", "burst", "fallback", "queue", "batch", "percentile", "observe", "limit", "refill",
)


class ProviderError(Exception):
    """The provider failed in a way that counts against its circuit breaker."""


class ProviderRejected(Exception):
    """The provider refused the request (4xx): not its health's fault, so not a breaker failure."""


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int
    model: str


class Provider(Protocol):
    kind: str
    model: str

    def estimate_tokens(self, prompt: str) -> int:
        """At least as many tokens as a call with `prompt` will be billed for."""
        ...

    async def complete(self, prompt: str) -> Completion: ...

    async def close(self) -> None: ...


class SimulatedProvider:
    """Deterministic text from the prompt after `latency_ms`; fails at `failure_rate` (0 by default)."""

    kind = "simulated"

    def __init__(self, latency_ms: float = 50.0, failure_rate: float = 0.0, model: str = "tooloo-sim-1",
                 rng: random.Random | None = None) -> None:
        self.latency = latency_ms / 1000
        self.failure_rate = failure_rate
        self.model = model
        self._rng = rng or random.Random()

    ANSWER_WORDS = 12

    def estimate_tokens(self, prompt: str) -> int:
        return len(prompt.split()) + self.ANSWER_WORDS + 2  # exact: the answer's length is fixed

    async def complete(self, prompt: str) -> Completion:
        await asyncio.sleep(self.latency)
        if self.failure_rate and self._rng.random() < self.failure_rate:
            raise ProviderError("simulated provider failure")
        digest = hashlib.sha256(prompt.encode()).digest()
        words = [_VOCABULARY[byte % len(_VOCABULARY)] for byte in digest[:self.ANSWER_WORDS]]
        text = f"On \u201c{prompt[:60]}\u201d: {' '.join(words)}."
        return Completion(text, tokens=self.estimate_tokens(prompt), model=self.model)

    async def close(self) -> None:
        return None


class OpenAIProvider:
    """Chat completions against an OpenAI-compatible endpoint; the key comes from an environment variable."""

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str, timeout: float,
                 max_completion_tokens: int = 1024) -> None:
        from tooloo_cli._httpx import httpx

        self.model = model
        self.api_key_env = api_key_env
        self.max_completion_tokens = max_completion_tokens
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)

    def estimate_tokens(self, prompt: str) -> int:
        # A token covers at least one byte of UTF-8, and the answer is capped by max_tokens.
        return len(prompt.encode("utf-8")) + CHAT_OVERHEAD_TOKENS + self.max_completion_tokens

    async def complete(self, prompt: str) -> Completion:
        from tooloo_cli._httpx import httpx

        key = os.environ.get(self.api_key_env)
        if not key:
            raise ProviderRejected(f"the environment variable {self.api_key_env} holds no API key")
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                   "max_tokens": self.max_completion_tokens}
        try:
            response = await self._client.post("/chat/completions", json=payload,
                                               headers={"Authorization": f"Bearer {key}"})
        except httpx.TimeoutException:
            raise ProviderError("the provider did not answer in time") from None
        except httpx.TransportError as exc:
            raise ProviderError(f"the provider is unreachable: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code == 429:
            self._log_refusal(response, key)
            raise ProviderError(f"the provider answered {response.status_code}")
        if response.status_code >= 400:
            self._log_refusal(response, key)
            raise ProviderRejected(f"the provider refused the request ({response.status_code}); "
                                   "the budget service's log says why")
        try:
            document = response.json()
            text = document["choices"][0]["message"]["content"]
            tokens = int(document.get("usage", {}).get("total_tokens", 0))
        except (ValueError, KeyError, IndexError, TypeError):
            raise ProviderError("the provider answered something that is not a chat completion") from None
        return Completion(text, tokens=tokens, model=document.get("model", self.model))

    def _log_refusal(self, response: Any, key: str) -> None:
        logger.warning("the provider answered %d: %s", response.status_code, redact(_reason(response), key))

    async def close(self) -> None:
        await self._client.aclose()


def redact(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` (and of its tail, as remotes quote keys) masked."""
    if not secret:
        return text
    text = text.replace(secret, "[redacted]")
    tail = secret[-8:]
    return text.replace(tail, "[redacted]") if len(tail) >= 4 else text


def _reason(response: Any) -> str:
    try:
        return str(response.json()["error"]["message"])[:500]
    except (ValueError, KeyError, TypeError):
        return response.text[:500]


def make_provider(settings: ProviderSettings) -> Provider:
    if settings.kind == "openai":
        return OpenAIProvider(settings.base_url, settings.model, settings.api_key_env, settings.timeout,
                              settings.max_completion_tokens)
    return SimulatedProvider(settings.latency_ms, settings.failure_rate)
