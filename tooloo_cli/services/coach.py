"""coach (3004): the auto-coach, a background loop that drives training rounds.

    GET  /api/v1/auto-coach/status   active, interval, rounds driven, failures, last round and error
    POST /api/v1/auto-coach/start    {"intervalMs"?: 50..60000, default 2000}; again: updates the interval
    POST /api/v1/auto-coach/stop     stops the loop (idempotent)
    POST /api/v1/auto-coach/boost    {"rounds"?: 1..50, default 5}: that many rounds now, one after another;
                                     409 while another boost runs

    $ curl -s -X POST localhost:3004/api/v1/auto-coach/start -d '{"intervalMs": 500}'
    {"ok": true, "active": true, "alreadyActive": false, "intervalMs": 500, "traceId": "..."}

Every round is a POST to training's /api/v1/training/round through the "training"
breaker. A round that fails (training down, the breaker open, a bad answer) is counted
and remembered in `lastError`; the loop keeps going. Shutdown stops the loop first.
One boost runs at a time, so a client cannot multiply the calls to training by sending
boosts side by side. /ready stays 200 while training is down (the coach itself is fine);
/dependencies is the check that names training.

With [stack] redis_url set, coach may run as several replicas, and only one drives the
loop: the holder of the lease `tooloo:lease:coach` (services/leadership.py). Each replica
keeps its own active flag and interval, and answers start, stop, boost and status itself.
Only an active loop seeks the lease: a replica that was never started (one the supervisor
has just restarted, say) cannot take it from one that would drive rounds. A standby's
loop waits, and drives rounds once it takes the lease over: within about LEASE_SECONDS
(3 s) of the leader's death, at once when the leader is stopped or shut down. So start
the loop on every replica that should stand by, and stop it on each (through the
gateway a request reaches one replica only). A boost is a request, not the loop, and is
played by whichever replica receives it. The status says `"leader": true | false` and
`"leaderSince"` (epoch seconds), both null without Redis; the observability document
has the lease under "leadership".
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.services.http import ApiError, Field, ok, read_json
from tooloo_cli.services.leadership import Lease
from tooloo_cli.services.service import Service, build_app
from tooloo_cli.services.upstream import UpstreamError
from tooloo_cli.stack import callees

(TRAINING,) = callees("coach")
ROUND_PATH = "/api/v1/training/round"
DEFAULT_INTERVAL_MS = 2000.0
DEFAULT_BOOST_ROUNDS = 5


class Coach:
    """The loop's state and the rounds it has driven."""

    def __init__(self, service: Service, lease: Lease | None = None) -> None:
        self.service = service
        self.lease = lease  # None: the only replica, always driving; else held by the loop, driving while it leads
        self.interval_ms = DEFAULT_INTERVAL_MS
        self.rounds_driven = 0
        self.failures = 0
        self.last_round: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._boosting = asyncio.Lock()
        self._leasing = asyncio.Lock()

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _request_round(self) -> dict[str, Any]:
        played = await self.service.upstream.json(TRAINING, "POST", ROUND_PATH, json={})
        if "round" not in played:
            raise UpstreamError(502, f"{TRAINING} answered without a round", breaker=TRAINING)
        return played

    async def drive_round(self) -> dict[str, Any] | None:
        """One round through the breaker: its document, or None after recording why it failed."""
        # Neither the loop nor a boost has anyone to raise to: every failure is counted instead.
        try:
            result = await self._request_round()
        except Exception as exc:
            self.failures += 1
            self.last_error = exc.message if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
            return None
        self.rounds_driven += 1
        self.last_round = result
        return result

    async def boost(self, rounds: int) -> list[dict[str, Any]]:
        """`rounds` rounds one after another, the ones that succeeded; ApiError 409 while another boost runs."""
        # Checked and taken with no await in between: two boosts can never both pass.
        if self._boosting.locked():
            raise ApiError(409, "a boost is already running")
        async with self._boosting:
            played = [await self.drive_round() for _ in range(rounds)]
        return [result for result in played if result is not None]

    async def _loop(self) -> None:
        if self.lease is None:
            await self._drive()
            return
        # One loop at a time holds the lease: one started while the last still hands it over waits for that.
        async with self._leasing:
            await self.lease.start()
            try:
                await self._drive()
            finally:  # stopped, or shut down: an active standby takes over at once
                await self.lease.stop()

    async def _drive(self) -> None:
        # Until `stop` forgets the loop, not only until it is cancelled: the lease's commands go through
        # Python 3.11's asyncio.wait_for (redis-py's), which can lose a cancellation.
        while self._task is asyncio.current_task():
            if self.lease is not None:
                await self.lease.wait_leading()  # a standby waits here, active, until it takes over
            await self.drive_round()
            await asyncio.sleep(self.interval_ms / 1000)

    def start(self, interval_ms: float) -> bool:
        """Starts the loop, or only changes its interval; whether it was already running."""
        self.interval_ms = interval_ms
        if self.active:
            return True
        # A fresh context: the loop's rounds belong to no request's trace, least of all /start's.
        self._task = asyncio.create_task(self._loop(), name="auto-coach", context=contextvars.Context())
        return False

    async def stop(self) -> bool:
        """Cancels the loop and waits until it has ended; whether it was running."""
        task, self._task = self._task, None
        if task is None or task.done():
            return False
        task.cancel()
        await asyncio.wait([task])
        return True

    def status(self) -> dict[str, Any]:
        return {"active": self.active, "intervalMs": self.interval_ms, "roundsDriven": self.rounds_driven,
                "failures": self.failures, "lastRound": self.last_round, "lastError": self.last_error,
                "breaker": self.service.upstream.breaker_state(TRAINING),
                "leader": None if self.lease is None else self.lease.is_leader,
                "leaderSince": None if self.lease is None else self.lease.leader_since}


def _lease(service: Service) -> Lease | None:
    """The replicas' lease on the loop when [stack] redis_url is set (see the module), else None."""
    return None if service.redis is None else Lease(service.redis, service.name)


def create(service: Service) -> ASGIApp:
    lease = _lease(service)
    coach = Coach(service, lease)

    async def stop_on_shutdown() -> None:
        await coach.stop()

    service.on_shutdown(stop_on_shutdown)  # the loop releases its lease as it ends
    if lease is not None:
        service.extra_observability("leadership", lease.state)
        service.extra_metrics(lambda page: page.gauge(
            "tooloo_coach_leader", "1 while this replica holds the lease that lets it drive rounds.",
            [({}, lease.is_leader)]))
    max_body = service.stack.max_body_bytes

    async def status(request: Request) -> Response:
        return ok(coach.status(), request)

    async def start(request: Request) -> Response:
        body = await read_json(request, {"intervalMs": Field(float, required=False, minimum=50, maximum=60_000)},
                               limit=max_body, empty_ok=True)
        already_active = coach.start(float(body.get("intervalMs", DEFAULT_INTERVAL_MS)))
        return ok({"active": True, "alreadyActive": already_active, "intervalMs": coach.interval_ms}, request)

    async def stop(request: Request) -> Response:
        was_active = await coach.stop()
        return ok({"active": False, "wasActive": was_active}, request)

    async def boost(request: Request) -> Response:
        body = await read_json(request, {"rounds": Field(int, required=False, minimum=1, maximum=50)},
                               limit=max_body, empty_ok=True)
        requested: int = body.get("rounds", DEFAULT_BOOST_ROUNDS)
        rounds = await coach.boost(requested)
        return ok({"rounds": rounds, "failed": requested - len(rounds)}, request)

    return build_app(service, [
        Route("/api/v1/auto-coach/status", status),
        Route("/api/v1/auto-coach/start", start, methods=["POST"]),
        Route("/api/v1/auto-coach/stop", stop, methods=["POST"]),
        Route("/api/v1/auto-coach/boost", boost, methods=["POST"]),
    ])
