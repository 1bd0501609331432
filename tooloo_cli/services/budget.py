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
breaker, with identical in-flight prompts sharing one call (singleflight).

The spend ledger (SQLite, over the pool, written in batches by the QueryOptimizer) never
lets the budget fail open. Before the provider is asked, the call's worst-case cost is
reserved: counted against `daily_budget_usd` (402 when it would not fit) and committed
(fsync'd: `synchronous=FULL`). After the call, its real cost is committed in its place,
before the answer goes out. A crash at any point leaves at least what was spent in the
ledger; a ledger that cannot be written answers 503 before any money is spent.
Concurrent calls share their commits (the optimizer's batches); none is deferred past
its answer. A corrupt ledger is never replaced: budget refuses to start, saying how to
recover it. /ready is the ledger's: an open provider breaker shows in /dependencies.

Replicas share the ledger file (SQLite's locking keeps the rows whole). Without Redis,
each checks the daily budget against what it has counted itself (and what the file held
when it started), and has its own rate limit and cache: N replicas may together spend up
to N × `daily_budget_usd`. With [stack] redis_url, the day's spend is one counter in
Redis (services/shared.py): each reservation is checked and counted there in one atomic
step, so the budget stops every replica at the same total, across restarts (a counter
Redis lost starts again from the ledger's total); the burst limit and the cache are the
replicas' together too. While Redis is away, a replica counts alone (redis_fallback =
"local": what it spent meanwhile is added to the counter when Redis answers again) or
makes no provider call (503, "deny").
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import date
from typing import Any, NoReturn

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
from tooloo_cli.config.schema import ProviderSettings
from tooloo_cli.exposition import Exposition
from tooloo_cli.services.provider import ProviderError, ProviderRejected, make_provider
from tooloo_cli.services.service import Service, build_app, observability_route
from tooloo_cli.services.shared import RedisSpend, RedisUnavailable

logger = logging.getLogger("tooloo.services.budget")

BURST_FIELDS = {
    "prompt": Field(str),
    "ttlSeconds": Field(float, required=False, minimum=0.001, maximum=86_400),
    "criticality": Field(str, required=False, choices=("low", "normal", "high")),
}
MAX_PROMPT_CHARS = 32_000
LEDGER_RETRY_AFTER = 5  # seconds a client is asked to wait when the ledger cannot be written
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spend (id INTEGER PRIMARY KEY, day TEXT NOT NULL, provider TEXT NOT NULL, "
    "model TEXT NOT NULL, tokens INTEGER NOT NULL, usd REAL NOT NULL, criticality TEXT NOT NULL, at REAL NOT NULL, "
    "status TEXT NOT NULL DEFAULT 'settled')",
    "CREATE INDEX IF NOT EXISTS spend_day ON spend (day)",
    "CREATE TABLE IF NOT EXISTS ledger_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
)
# Each day's totals per provider, kept by triggers in the very transaction that writes a row, so
# that reading the day's spend never scans the day's rows (300k of them took ~190 ms) and can
# never disagree with them. A failed row counts for nothing; a settled one replaces its reservation.
_TOTALS_TABLE = ("CREATE TABLE spend_totals (day TEXT NOT NULL, provider TEXT NOT NULL, calls INTEGER NOT NULL, "
                 "usd REAL NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (day, provider)) WITHOUT ROWID")
_ADD_TO_TOTALS = ("INSERT INTO spend_totals SELECT NEW.day, NEW.provider, 1, NEW.usd, NEW.tokens "
                  "WHERE NEW.status != 'failed' ON CONFLICT (day, provider) DO UPDATE SET calls = calls + 1, "
                  "usd = usd + excluded.usd, tokens = tokens + excluded.tokens;")
_TAKE_FROM_TOTALS = ("UPDATE spend_totals SET calls = calls - 1, usd = usd - OLD.usd, tokens = tokens - OLD.tokens "
                     "WHERE OLD.status != 'failed' AND day = OLD.day AND provider = OLD.provider;")
_TOTALS_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS spend_totals_insert AFTER INSERT ON spend BEGIN {_ADD_TO_TOTALS} END",
    f"CREATE TRIGGER IF NOT EXISTS spend_totals_update AFTER UPDATE ON spend BEGIN {_TAKE_FROM_TOTALS} "
    f"{_ADD_TO_TOTALS} END",
    f"CREATE TRIGGER IF NOT EXISTS spend_totals_delete AFTER DELETE ON spend BEGIN {_TAKE_FROM_TOTALS} END",
)
# reserved: asked, outcome not known yet (a crash leaves it so: its worst case stays counted);
# settled: the real cost; failed: the provider refused or failed, nothing spent;
# unknown: the call timed out, so it may have been charged: its worst case stays counted.
_RESERVE = ("INSERT INTO spend (id, day, provider, model, tokens, usd, criticality, at, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'reserved')")
_SETTLE = "UPDATE spend SET model = ?, tokens = ?, usd = ?, status = ? WHERE id = ?"


@dataclass(frozen=True)
class Reservation:
    row: int
    day: str
    usd: float


class ProviderCalls:
    """This replica's provider calls since it started: by outcome, and the tokens and USD the answered ones
    cost. The observability document's `provider` section and the provider families of /metrics."""

    OUTCOMES = ("ok", "failed", "timeout", "rejected")  # rejected: by the open breaker, before any call

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.outcomes = dict.fromkeys(self.OUTCOMES, 0)
        self.tokens = 0
        self.usd = 0.0

    def answered(self, tokens: int, usd: float) -> None:
        self.outcomes["ok"] += 1
        self.tokens += tokens
        self.usd += usd

    def to_dict(self, ledger: Ledger, settings: ProviderSettings) -> dict[str, Any]:
        return {"kind": self.provider, "calls": dict(self.outcomes), "tokens": self.tokens,
                "spentUsd": round(self.usd, 6), "spentTodayUsd": round(ledger.spent_today, 6),
                "dailyBudgetUsd": settings.daily_budget_usd}

    def write(self, page: Exposition, ledger: Ledger, settings: ProviderSettings) -> None:
        labels = {"provider": self.provider}
        page.counter("tooloo_provider_calls_total", "Provider calls of this replica, by outcome (rejected: refused by the open breaker).",
                     [({**labels, "outcome": outcome}, count) for outcome, count in self.outcomes.items()])
        page.counter("tooloo_provider_tokens_total", "Tokens the answered provider calls used.", [(labels, self.tokens)])
        page.counter("tooloo_provider_spend_usd_total", "What the answered provider calls cost, in USD.",
                     [(labels, self.usd)])
        page.gauge("tooloo_budget_spent_today_usd", "Today's spend as this replica counts it (reservations "
                   "included; every replica's with Redis), in USD.", [(labels, ledger.spent_today)])
        page.gauge("tooloo_budget_daily_limit_usd", "The daily budget, in USD.", [(labels, settings.daily_budget_usd)])


class Ledger:
    """Today's spend: reserved before each provider call, settled after it, durable before any answer."""

    def __init__(self, service: Service, provider: str, settings: ProviderSettings) -> None:
        assert service.pool is not None and service.optimizer is not None  # checked by create()
        self.pool = service.pool
        self.optimizer = service.optimizer
        self.provider = provider
        self.settings = settings
        self.day = date.today().isoformat()
        self.spent_today = 0.0  # settled and reserved, so concurrent calls see each other at once
        self.write_error: str | None = None  # why the last write failed, until one succeeds
        # With Redis ([stack] redis_url), the day's spend is every replica's (services/shared.py);
        # `spent_today` is then the last total Redis said plus what this replica counted alone since.
        self.shared: RedisSpend | None = None
        self.fallback = service.stack.redis_fallback
        # Rows whose cost changed while Redis was away: row -> (its cost now, what Redis's total holds of
        # it if Redis has no such row), set there when it answers again (idempotent: see RedisSpend).
        self.unsynced: dict[int, tuple[float, float]] = {}
        if service.redis is not None:
            self.shared = RedisSpend(service.redis, provider)

    async def open(self) -> None:
        self.spent_today = await self.pool.run(_create_and_sum, self.day)

    def _roll_over(self) -> None:
        today = date.today().isoformat()
        if today != self.day:
            self.day, self.spent_today = today, 0.0
            self.unsynced.clear()  # yesterday's rows: the ledger has them

    def cost(self, tokens: int) -> float:
        return tokens / 1000 * self.settings.usd_per_1k_tokens

    async def reserve(self, model: str, tokens: int, criticality: str) -> Reservation:
        """Counts and commits a call's worst case; ApiError 402 past the budget, 503 when it cannot be written
        (or, with Redis away and redis_fallback = "deny", counted)."""
        self._roll_over()
        usd = self.cost(tokens)
        limit = self.settings.daily_budget_usd
        reservation = Reservation(secrets.randbits(63), self.day, usd)
        if not await self._reserved_shared(reservation, limit):
            if self.spent_today + usd > limit:
                self._refuse(usd, limit)
            self.spent_today += usd  # before any await: a concurrent call sees this reservation
            if self.shared is not None:
                self.unsynced[reservation.row] = (usd, 0.0)
        try:
            await self.optimizer.execute(_RESERVE, (reservation.row, self.day, self.provider, model, tokens, usd,
                                                    criticality, time.time()))
        except Exception as exc:
            await self._set(reservation, 0.0, usd)
            self.write_error = str(exc)
            logger.error("the spend ledger cannot be written (%s); refusing the call before it is made", exc)
            raise ApiError(503, "the spend ledger cannot be written, so no provider call was made; retry later",
                           headers={"Retry-After": str(LEDGER_RETRY_AFTER)}, retryAfter=LEDGER_RETRY_AFTER) from None
        self.write_error = None
        return reservation

    def _refuse(self, usd: float, limit: float) -> NoReturn:
        raise ApiError(402, f"the daily budget of {limit} USD is spent (a call may cost up to {usd:.6f} USD, "
                            f"{max(limit - self.spent_today, 0.0):.6f} USD remain)")

    async def _reserved_shared(self, reservation: Reservation, limit: float) -> bool:
        """Reserves the call in Redis for every replica (402 when it does not fit); False when there is no
        Redis to count in, or it is away and the fallback is "local" (this replica counts alone meanwhile)."""
        if self.shared is None:
            return False
        day, usd = reservation.day, reservation.usd
        try:
            await self._sync()
            reserved, total = await self.shared.reserve(day, reservation.row, usd, limit)
            if reserved is None:  # the day is not counted there (a first call, a Redis that lost it)
                await self.shared.seed(day, await self._ledger_total(day))
                reserved, total = await self.shared.reserve(day, reservation.row, usd, limit)
        except RedisUnavailable:
            if self.fallback == "deny":
                # It may have been reserved all the same (an answer too late): given back once Redis answers.
                self.unsynced[reservation.row] = (0.0, 0.0)
                raise ApiError(503, "the day's spend is counted in Redis, which cannot be reached, so no provider "
                                    "call was made; retry later", headers={"Retry-After": "1"}, retryAfter=1) from None
            return False
        if day == self.day:
            self.spent_today = total
        if not reserved:
            self._refuse(usd, limit)
        return True

    async def _ledger_total(self, day: str) -> float:
        """Where Redis starts counting `day`: what the ledger holds of it for this provider (every replica's
        rows on this host), or what this replica counts, if more (its last rows may wait in the
        optimizer's batch: not flushed here, as a call in flight, which flush would wait for, asks)."""
        committed = await self.pool.run(_provider_total, day, self.provider)
        return max(committed, self.spent_today if day == self.day else 0.0)

    async def _sync(self) -> None:
        """Sets in Redis what changed here while it was away (RedisUnavailable while it still is)."""
        assert self.shared is not None
        for row, (usd, counted) in list(self.unsynced.items()):
            await self.shared.set(self.day, row, usd, counted)
            if self.unsynced.get(row) == (usd, counted):  # unless it changed again meanwhile
                del self.unsynced[row]

    async def settle(self, reservation: Reservation, model: str, tokens: int, usd: float) -> None:
        """Commits the real cost in place of the reservation (kept, and counted, if this fails)."""
        await self._set(reservation, usd, reservation.usd)
        await self._write(reservation, (model, tokens, usd, "settled", reservation.row), usd)

    async def release(self, reservation: Reservation, timed_out: bool) -> None:
        """A failed call: nothing spent, unless it timed out (it may have been charged: the worst case stays)."""
        if timed_out:
            await self._write(reservation, (self.provider, 0, reservation.usd, "unknown", reservation.row),
                              reservation.usd)
            return
        await self._set(reservation, 0.0, reservation.usd)
        await self._write(reservation, (self.provider, 0, 0.0, "failed", reservation.row), 0.0)

    async def _write(self, reservation: Reservation, row: tuple[Any, ...], cost: float) -> None:
        """Commits `row` (the call's `cost` now); if that fails, the reserved worst case is what counts."""
        try:
            await self.optimizer.execute(_SETTLE, row)
        except Exception as exc:
            # The reservation is committed: its worst case stays counted, which is safe.
            self.write_error = str(exc)
            await self._set(reservation, reservation.usd, cost)
            logger.error("ledger row %d could not be settled (%s); its reserved %.6f USD stays counted",
                         reservation.row, exc, reservation.usd)

    async def _set(self, reservation: Reservation, usd: float, before: float) -> None:
        """The call of `reservation` costs `usd` now, `before` until now: counted here, and in Redis (or
        once it answers: set then, as an absolute value, so a change sent twice counts once)."""
        if reservation.day != self.day or usd == before:
            return
        self.spent_today = max(self.spent_today + usd - before, 0.0)
        if self.shared is None:
            return
        # What Redis's total holds of the row if it has no such row: its reservation, unless it was
        # reserved while Redis was away (then nothing; if Redis lost the day and started it again from
        # the ledger meanwhile, the row is counted twice: too much, the safe side of a budget).
        pending = self.unsynced.get(reservation.row)
        counted = pending[1] if pending is not None else reservation.usd
        try:
            await self._sync()
            total = await self.shared.set(self.day, reservation.row, usd, counted)
        except RedisUnavailable:
            self.unsynced[reservation.row] = (usd, counted)
            return
        if total is not None and reservation.day == self.day:
            self.spent_today = total

    async def check_writable(self) -> None:
        """For /ready: raises while the last write failed and a probe write fails too (a full disk)."""
        if self.write_error is None:
            return
        try:
            await self.pool.run(_probe_write)
        except Exception as exc:
            self.write_error = str(exc)
            raise RuntimeError(f"the spend ledger cannot be written: {exc}") from None
        self.write_error = None

    async def today(self) -> dict[str, Any]:
        """Today's spend per provider, read back from the ledger (pending rows first written)."""
        self._roll_over()
        await self.optimizer.flush()
        rows = await self.pool.run(_spend_by_provider, self.day)
        return {name: {"calls": calls, "usd": round(usd, 6), "tokens": tokens} for name, calls, usd, tokens in rows}


def _create_and_sum(db: Any, day: str) -> float:
    # One transaction, taken for writing at once: two replicas opening one ledger migrate it once.
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(spend)")}
        if "status" not in columns:  # a ledger from before reservations: every row in it is settled
            db.execute("ALTER TABLE spend ADD COLUMN status TEXT NOT NULL DEFAULT 'settled'")
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'spend_totals'").fetchone() is None:
            db.execute(_TOTALS_TABLE)  # a ledger from before day totals: summed once, here
            db.execute("INSERT INTO spend_totals SELECT day, provider, count(*), sum(usd), sum(tokens) FROM spend "
                       "WHERE status != 'failed' GROUP BY day, provider")
        for trigger in _TOTALS_TRIGGERS:
            db.execute(trigger)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    (spent,) = db.execute("SELECT coalesce(sum(usd), 0) FROM spend_totals WHERE day = ?", (day,)).fetchone()
    return float(spent)


def _probe_write(db: Any) -> None:
    """One real commit (a page written to the WAL): what a full disk refuses."""
    db.execute("INSERT OR REPLACE INTO ledger_probe (id, at) VALUES (1, ?)", (time.time(),))


def _provider_total(db: Any, day: str, provider: str) -> float:
    (spent,) = db.execute("SELECT coalesce(sum(usd), 0) FROM spend_totals WHERE day = ? AND provider = ?",
                          (day, provider)).fetchone()
    return float(spent)


def _spend_by_provider(db: Any, day: str) -> list[tuple[str, int, float, int]]:
    """The day's totals per provider (kept by the triggers: a lookup, not a scan of the day's rows)."""
    return db.execute("SELECT provider, calls, usd, tokens FROM spend_totals WHERE day = ? AND calls > 0 "
                      "ORDER BY provider", (day,)).fetchall()


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
    service.corrupt_database = "refuse"  # the ledger is money: never replaced by an empty one
    service.database_synchronous = "FULL"  # an acknowledged call's row survives a power cut too
    ledger = Ledger(service, provider.kind, settings)
    service.on_startup(ledger.open)
    service.on_shutdown(provider.close)

    # Ready is the ledger only: the provider's breaker being open is /dependencies' news.
    service.ready_check("ledger", ledger.check_writable)

    calls = ProviderCalls(provider.kind)
    service.extra_observability("provider", lambda detail: calls.to_dict(ledger, settings))
    service.extra_metrics(lambda page: calls.write(page, ledger, settings))

    async def call_provider(prompt: str, key: str, ttl: float | None, criticality: str) -> dict[str, Any]:
        """One provider call, shared by every identical prompt in flight: reserve, call, cache, settle."""
        reservation = await ledger.reserve(provider.model, provider.estimate_tokens(prompt), criticality)
        try:
            completion = await call_through(breaker, "the provider", provider.complete, prompt,
                                            failures=(ProviderError, ProviderRejected))
        except ApiError as exc:
            # 503: the breaker refused, and no call was made.
            calls.outcomes["rejected" if exc.status == 503 else "timeout" if exc.status == 504 else "failed"] += 1
            await ledger.release(reservation, timed_out=exc.status == 504)
            raise
        answer = {"text": completion.text, "model": completion.model, "tokens": completion.tokens}
        await cache.aset(key, answer, ttl)
        cost = ledger.cost(completion.tokens)
        calls.answered(completion.tokens, cost)
        await ledger.settle(reservation, completion.model, completion.tokens, cost)
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
            cached = await cache.aget(key)
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
        decision = await limiter.check(client_id(request.scope, service.trusted_proxies))
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
