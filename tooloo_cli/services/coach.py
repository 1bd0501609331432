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
from tooloo_cli.services.service import Service, build_app
from tooloo_cli.services.upstream import UpstreamError
from tooloo_cli.stack import callees

(TRAINING,) = callees("coach")
ROUND_PATH = "/api/v1/training/round"
DEFAULT_INTERVAL_MS = 2000.0
DEFAULT_BOOST_ROUNDS = 5


class Coach:
    """The loop's state and the rounds it has driven."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.interval_ms = DEFAULT_INTERVAL_MS
        self.rounds_driven = 0
        self.failures = 0
        self.last_round: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._boosting = asyncio.Lock()

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
        while True:
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
                "breaker": self.service.upstream.breaker_state(TRAINING)}


def create(service: Service) -> ASGIApp:
    coach = Coach(service)

    async def stop_on_shutdown() -> None:
        await coach.stop()

    service.on_shutdown(stop_on_shutdown)
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
