"""budget (3003): the daily spend ledger, provider status, and cached "burst" prompt calls.

    GET  /api/v1/budget                          today's spend against the daily budget
    GET  /api/v1/providers/status                the provider and its breaker
    POST /api/v1/providers/burst                 {"prompt", "ttlSeconds"?, "criticality"?}
    GET  /api/v1/providers/burst?prompt=…        the same, for a quick curl
    GET  /api/v1/providers/resilience-status     the observability document

A burst call is limited per client (100 tokens, 10/s by default), answered from the
PersistentCache when it can be, and otherwise sent to the provider through the `provider`
breaker, with identical in-flight prompts sharing one call (singleflight). Each provider
call is written to the SQLite ledger in batches by the QueryOptimizer, over the pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import date
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.resilience import CallTimeoutError, CircuitOpenError
from tooloo_cli.services.http import (
    ApiError,
    Field,
    check_fields,
    client_id,
    ok,
    rate_limit_headers,
    rate_limited,
    read_json,
    trace_id_of,
)
from tooloo_cli.services.provider import ProviderError, ProviderRejected, make_provider
from tooloo_cli.services.service import Service, build_app

logger = logging.getLogger("tooloo.services.budget")

BURST_FIELDS = {
    "prompt": Field(str),
    "ttlSeconds": Field(float, required=False, minimum=0.001, maximum=86_400),
    "criticality": Field(str, required=False, choices=("low", "normal", "high")),
}
MAX_PROMPT_CHARS = 32_000
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spend (id INTEGER PRIMARY KEY, day TEXT NOT NULL, provider TEXT NOT NULL, "
    "model TEXT NOT NULL, tokens INTEGER NOT NULL, usd REAL NOT NULL, criticality TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS spend_day ON spend (day)",
)
_RECORD = "INSERT INTO spend (day, provider, model, tokens, usd, criticality, at) VALUES (?, ?, ?, ?, ?, ?, ?)"


class Ledger:
    """Today's spend, kept in memory for the budget check and written to SQLite in batches."""

    def __init__(self, service: Service) -> None:
        assert service.pool is not None and service.optimizer is not None
        self.service = service
        self.pool = service.pool
        self.optimizer = service.optimizer
        self.day = date.today().isoformat()
        self.spent_today = 0.0

    async def open(self) -> None:
        async with self.pool.acquire() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            (spent,) = db.execute("SELECT coalesce(sum(usd), 0) FROM spend WHERE day = ?", (self.day,)).fetchone()
        self.spent_today = spent

    def _roll_over(self) -> None:
        today = date.today().isoformat()
        if today != self.day:
            self.day, self.spent_today = today, 0.0

    def remaining(self, limit: float) -> float:
        self._roll_over()
        return max(limit - self.spent_today, 0.0)

    def record(self, provider: str, model: str, tokens: int, usd: float, criticality: str) -> None:
        """Counts the spend now and queues its ledger row for the next batch."""
        self._roll_over()
        self.spent_today += usd
        written = self.optimizer.submit(_RECORD, (self.day, provider, model, tokens, usd, criticality, time.time()))
        written.add_done_callback(_log_lost_row)

    async def today(self) -> dict[str, Any]:
        await self.optimizer.flush()  # read our own writes
        async with self.pool.acquire() as db:
            rows = await asyncio.to_thread(lambda: db.execute(
                "SELECT provider, count(*), coalesce(sum(usd), 0), coalesce(sum(tokens), 0) "
                "FROM spend WHERE day = ? GROUP BY provider", (self.day,)).fetchall())
        return {
            name: {"calls": calls, "usd": round(usd, 6), "tokens": tokens} for name, calls, usd, tokens in rows
        }


def _log_lost_row(written: asyncio.Future[None]) -> None:
    if not written.cancelled() and written.exception() is not None:
        logger.error("a ledger row could not be written: %s", written.exception())


def create(service: Service) -> ASGIApp:
    settings = service.settings.provider
    assert settings is not None and service.cache is not None and service.limiter is not None
    assert service.optimizer is not None
    provider = make_provider(settings)
    breaker = service.breaker("provider")
    breaker.ignore = (ProviderRejected,)
    ledger = Ledger(service)
    cache, limiter, optimizer, tracer = service.cache, service.limiter, service.optimizer, service.tracer
    service.on_startup(ledger.open)
    service.on_shutdown(provider.close)

    async def call_provider(prompt: str, key: str, ttl: float | None, criticality: str) -> dict[str, Any]:
        """One provider call, shared by every identical prompt in flight: spend, cache, ledger."""
        if ledger.remaining(settings.daily_budget_usd) <= 0:
            raise ApiError(402, f"the daily budget of {settings.daily_budget_usd} USD is spent")
        try:
            completion = await breaker.call(provider.complete, prompt)
        except CircuitOpenError as exc:
            raise ApiError(503, str(exc), breaker="provider", retryAfter=exc.retry_after) from None
        except CallTimeoutError:
            raise ApiError(504, "the provider did not answer in time", breaker="provider") from None
        except (ProviderError, ProviderRejected) as exc:
            raise ApiError(502, str(exc), breaker="provider") from None
        answer = {"text": completion.text, "model": completion.model, "tokens": completion.tokens}
        cache.set(key, answer, ttl)
        usd = completion.tokens / 1000 * settings.usd_per_1k_tokens
        ledger.record(provider.kind, completion.model, completion.tokens, usd, criticality)
        return answer

    async def burst(request: Request) -> Response:
        if request.method == "POST":
            body = await read_json(request, BURST_FIELDS, service.stack.max_body_bytes)
        else:
            body = check_fields(_query_document(request), BURST_FIELDS)
        prompt = body["prompt"]
        if not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
            raise ApiError(422, f"field 'prompt' must hold 1 to {MAX_PROMPT_CHARS} characters", field="prompt")
        decision = limiter.try_acquire(client_id(request.scope, service.trusted_proxies))
        if not decision.allowed:
            return rate_limited(decision, trace_id_of(request.scope))
        headers = rate_limit_headers(decision)
        key = "burst:" + hashlib.sha256(prompt.encode()).hexdigest()
        with tracer.span("cache-lookup") as span:
            cached = cache.get(key)
            span.set("hit", cached is not None)
        if cached is not None:
            return ok({"cached": True, **cached}, request, headers=headers)
        with tracer.span("provider-call"):
            answer = await optimizer.singleflight(
                key, lambda: call_provider(prompt, key, body.get("ttlSeconds"), body.get("criticality", "normal")))
        return ok({"cached": False, **answer}, request, headers=headers)

    async def budget(request: Request) -> Response:
        by_provider = await ledger.today()
        spent = sum(entry["usd"] for entry in by_provider.values())
        return ok({
            "day": ledger.day,
            "limitUsd": settings.daily_budget_usd,
            "spentUsd": round(spent, 6),
            "remainingUsd": round(max(settings.daily_budget_usd - spent, 0.0), 6),
            "calls": sum(entry["calls"] for entry in by_provider.values()),
            "byProvider": by_provider,
        }, request)

    async def providers_status(request: Request) -> Response:
        state = breaker.state
        return ok({"providers": [{
            "name": "provider", "kind": provider.kind, "model": provider.model, "status": state,
            "available": state != "open", "callCount": breaker.call_count, "failureCount": breaker.failure_count,
        }]}, request)

    async def resilience_status(request: Request) -> Response:
        return JSONResponse(service.observability())

    return build_app(service, [
        Route("/api/v1/budget", budget),
        Route("/api/v1/providers/status", providers_status),
        Route("/api/v1/providers/burst", burst, methods=["GET", "POST"]),
        Route("/api/v1/providers/resilience-status", resilience_status),
    ])


def _query_document(request: Request) -> dict[str, Any]:
    """The burst fields from a query string, numbers parsed (422 naming the field when they are not)."""
    document: dict[str, Any] = dict(request.query_params)
    if "ttlSeconds" in document:
        try:
            document["ttlSeconds"] = float(document["ttlSeconds"])
        except ValueError:
            raise ApiError(422, "field 'ttlSeconds' must be a number", field="ttlSeconds") from None
    return document
