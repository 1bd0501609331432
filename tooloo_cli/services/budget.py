"""budget (3003): the daily spend ledger, provider status, and cached "burst" prompt calls.

    GET  /api/v1/budget                          today's spend against the daily budget
    GET  /api/v1/providers/status                the provider and its breaker
    POST /api/v1/providers/burst                 {"prompt", "ttlSeconds"?, "criticality"?}
    GET  /api/v1/providers/burst?prompt=…        the same, for a quick curl
    GET  /api/v1/providers/resilience-status     the observability document

    $ curl -s -X POST localhost:3003/api/v1/providers/burst -d '{"prompt": "hello"}'
    {"ok": true, "cached": false, "text": "On “hello”: …", "model": "tooloo-sim-1", "tokens": 15, "traceId": "…"}

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
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.services.http import (
    ApiError,
    Field,
    call_through,
    check_fields,
    client_id,
    ok,
    rate_limit_headers,
    rate_limited,
    read_json,
    trace_id_of,
)
from tooloo_cli.services.provider import ProviderError, ProviderRejected, make_provider
from tooloo_cli.services.service import Service, build_app, observability_route

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
        assert service.pool is not None and service.optimizer is not None  # checked by create()
        self.pool = service.pool
        self.optimizer = service.optimizer
        self.day = date.today().isoformat()
        self.spent_today = 0.0

    async def open(self) -> None:
        self.spent_today = await self.pool.run(_create_and_sum, self.day)

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
        """Today's spend per provider, read back from the ledger (pending rows first written)."""
        self._roll_over()
        await self.optimizer.flush()
        rows = await self.pool.run(_spend_by_provider, self.day)
        return {name: {"calls": calls, "usd": round(usd, 6), "tokens": tokens} for name, calls, usd, tokens in rows}


def _create_and_sum(db: Any, day: str) -> float:
    for statement in _SCHEMA:
        db.execute(statement)
    (spent,) = db.execute("SELECT coalesce(sum(usd), 0) FROM spend WHERE day = ?", (day,)).fetchone()
    return float(spent)


def _spend_by_provider(db: Any, day: str) -> list[tuple[str, int, float, int]]:
    return db.execute("SELECT provider, count(*), coalesce(sum(usd), 0), coalesce(sum(tokens), 0) "
                      "FROM spend WHERE day = ? GROUP BY provider", (day,)).fetchall()


def _log_lost_row(written: asyncio.Future[None]) -> None:
    if not written.cancelled() and written.exception() is not None:
        logger.error("a ledger row could not be written: %s", written.exception())


def create(service: Service) -> ASGIApp:
    settings, cache, limiter, optimizer = (service.settings.provider, service.cache, service.limiter,
                                           service.optimizer)
    if settings is None or cache is None or limiter is None or optimizer is None:
        raise RuntimeError("the budget service needs its provider, cache, rate_limiter, pool and "
                           "query_optimizer settings")
    tracer = service.tracer
    provider = make_provider(settings)
    breaker = service.breaker("provider")
    breaker.ignore = (ProviderRejected,)  # the remote refusing a request is not the remote failing
    ledger = Ledger(service)
    service.on_startup(ledger.open)
    service.on_shutdown(provider.close)

    async def provider_ready() -> None:
        if breaker.state == "open":
            raise RuntimeError("the provider breaker is open")

    service.ready_check("provider", provider_ready)

    async def call_provider(prompt: str, key: str, ttl: float | None, criticality: str) -> dict[str, Any]:
        """One provider call, shared by every identical prompt in flight: spend, cache, ledger."""
        if ledger.remaining(settings.daily_budget_usd) <= 0:
            raise ApiError(402, f"the daily budget of {settings.daily_budget_usd} USD is spent")
        completion = await call_through(breaker, "the provider", provider.complete, prompt,
                                        failures=(ProviderError, ProviderRejected))
        answer = {"text": completion.text, "model": completion.model, "tokens": completion.tokens}
        cache.set(key, answer, ttl)
        usd = completion.tokens / 1000 * settings.usd_per_1k_tokens
        ledger.record(provider.kind, completion.model, completion.tokens, usd, criticality)
        return answer

    async def answer_burst(request: Request) -> dict[str, Any]:
        if request.method == "POST":
            body = await read_json(request, BURST_FIELDS, limit=service.stack.max_body_bytes)
        else:
            body = check_fields(_query_document(request), BURST_FIELDS)
        prompt = body["prompt"]
        if not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
            raise ApiError(422, f"field 'prompt' must hold 1 to {MAX_PROMPT_CHARS} characters", field="prompt")
        key = "burst:" + hashlib.sha256(prompt.encode()).hexdigest()
        with tracer.span("cache-lookup") as span:
            cached = cache.get(key)
            span.set("hit", cached is not None)
        if cached is not None:
            return {"cached": True, **cached}
        with tracer.span("provider-call"):
            answer = await optimizer.singleflight(
                key, lambda: call_provider(prompt, key, body.get("ttlSeconds"), body.get("criticality", "normal")))
        return {"cached": False, **answer}

    async def burst(request: Request) -> Response:
        # The token is taken before the body is even read: a flood of bad requests is limited too,
        # and every answer after this point, errors included, carries the limiter's headers.
        decision = limiter.try_acquire(client_id(request.scope, service.trusted_proxies))
        if not decision.allowed:
            return rate_limited(decision, trace_id_of(request.scope))
        headers = rate_limit_headers(decision)
        try:
            return ok(await answer_burst(request), request, headers=headers)
        except ApiError as exc:
            exc.headers.update(headers)
            raise

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

    return build_app(service, [
        Route("/api/v1/budget", budget),
        Route("/api/v1/providers/status", providers_status),
        Route("/api/v1/providers/burst", burst, methods=["GET", "POST"]),
        observability_route(service, "/api/v1/providers/resilience-status"),
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
