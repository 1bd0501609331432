"""training (3001): mastery per domain, raised by deterministic simulated training rounds.

    GET  /api/v1/training/overview   every domain's mastery and the average
    POST /api/v1/training/round      one round: {"domain"?} (default: the weakest domain)
    GET  /api/v1/training/status     rounds run so far and when the last one ran

    $ curl -s -X POST localhost:3001/api/v1/training/round -d '{"domain": "python"}'
    {"ok": true, "round": 1, "domain": "python", "before": 44.0, "after": 46.8, "gain": 2.8, "traceId": "…"}

A round's gain depends only on the domain and the round number, so a fresh service
always answers the same sequence: tests and benchmarks can rely on it.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.services.http import Field, ok, read_json
from tooloo_cli.services.service import Service, build_app

DOMAINS = ("algorithms", "databases", "distributed-systems", "python", "security", "system-design", "testing")
STARTING_MASTERY = 40.0


@dataclass
class Domain:
    name: str
    mastery: float
    rounds: int = 0


class Training:
    """The state of the training service: a mastery per domain and a round counter."""

    def __init__(self) -> None:
        # Each domain starts a little apart, so "the weakest" is well defined from the start.
        self.domains = {name: Domain(name, STARTING_MASTERY + (zlib.crc32(name.encode()) % 20)) for name in DOMAINS}
        self.rounds = 0
        self.last_round_at: float | None = None

    def run_round(self, domain: str | None = None) -> dict[str, object]:
        target = self.domains[domain] if domain else min(self.domains.values(), key=lambda d: (d.mastery, d.name))
        self.rounds += 1
        target.rounds += 1
        before = target.mastery
        # Gains shrink as mastery grows: 1..5 points scaled by the distance to 100.
        base = 1 + zlib.crc32(f"{target.name}:{self.rounds}".encode()) % 5
        gain = round(base * (100 - before) / 100, 2)
        target.mastery = round(min(before + gain, 100.0), 2)
        self.last_round_at = time.time()
        return {"round": self.rounds, "domain": target.name, "before": before, "after": target.mastery, "gain": gain}

    def overview(self) -> dict[str, object]:
        domains = [{"name": d.name, "mastery": d.mastery, "rounds": d.rounds} for d in self.domains.values()]
        average = sum(d.mastery for d in self.domains.values()) / len(self.domains)
        return {"domains": domains, "averageMastery": round(average, 2), "totalRounds": self.rounds}


def create(service: Service) -> ASGIApp:
    training = Training()

    async def overview(request: Request) -> Response:
        return ok(training.overview(), request)

    async def run_round(request: Request) -> Response:
        body = await read_json(request, {"domain": Field(str, required=False, choices=DOMAINS)},
                               limit=service.stack.max_body_bytes, empty_ok=True)
        with service.tracer.span("training-round"):
            return ok(training.run_round(body.get("domain")), request)

    async def status(request: Request) -> Response:
        return ok({"active": True, "totalRounds": training.rounds, "lastRoundAt": training.last_round_at,
                   "domains": len(training.domains)}, request)

    return build_app(service, [
        Route("/api/v1/training/overview", overview),
        Route("/api/v1/training/round", run_round, methods=["POST"]),
        Route("/api/v1/training/status", status),
    ])
