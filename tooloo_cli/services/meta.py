"""meta (3002): meta-learning insights derived from the training service's mastery.

    GET /api/v4/meta-learning/status     analyses so far, when the last ran, the training breaker
    GET /api/v4/meta-learning/insights   strongest/weakest domain, spread, velocity, recommendations
    GET /api/v4/meta-learning/report     status and insights together; never fails when training is down

    $ curl -s localhost:3002/api/v4/meta-learning/insights
    {"ok": true, "strongest": {"name": "algorithms", "mastery": 59.0}, "weakest": {...},
     "spread": 15.0, "averageMastery": 52.71, "learningVelocity": 0.0,
     "recommendations": ["Focus the next rounds on python ...", ...], "traceId": "..."}

Insights come from training's overview, fetched through the "training" breaker: when
training is down, /insights answers the breaker's 502/503/504 and /report answers 200
with `insights: null` and the reason. /ready stays 200 meanwhile (meta itself is fine);
/dependencies is the check that names training.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.services.http import ok
from tooloo_cli.services.service import Service, build_app
from tooloo_cli.services.upstream import UpstreamError
from tooloo_cli.stack import callees

(TRAINING,) = callees("meta")
OVERVIEW_PATH = "/api/v1/training/overview"
BALANCED_SPREAD = 10.0  # mastery points between strongest and weakest still called balanced
ENOUGH_ROUNDS = 5


class MetaLearning:
    """How many analyses ran and when the last one did."""

    def __init__(self) -> None:
        self.analyses = 0
        self.last_analysis_at: float | None = None

    def record_analysis(self) -> None:
        self.analyses += 1
        self.last_analysis_at = time.time()


def _domains_of(overview: Any) -> list[dict[str, Any]]:
    """The overview's domains, or UpstreamError when training answered something else."""
    domains = overview.get("domains") if isinstance(overview, dict) else None
    if (not isinstance(domains, list) or not domains
            or not all(isinstance(d, dict) and isinstance(d.get("name"), str)
                       and isinstance(d.get("mastery"), int | float) for d in domains)
            or not isinstance(overview.get("totalRounds"), int)):
        raise UpstreamError(502, f"{TRAINING} answered an overview without domains", breaker=TRAINING)
    return domains


def derive_insights(overview: Any, analyses: int) -> dict[str, Any]:
    """Insights from training's overview document; `analyses` counts this one too."""
    domains = _domains_of(overview)
    total_rounds: int = overview["totalRounds"]
    # Ties go to the alphabetically first name, so the answer never depends on dict order.
    weakest = min(domains, key=lambda d: (d["mastery"], d["name"]))
    strongest = min(domains, key=lambda d: (-d["mastery"], d["name"]))
    spread = round(strongest["mastery"] - weakest["mastery"], 2)
    average = round(sum(d["mastery"] for d in domains) / len(domains), 2)

    recommendations = []
    if spread > BALANCED_SPREAD:
        recommendations.append(f"Focus the next rounds on {weakest['name']}: {spread} points behind "
                               f"{strongest['name']}")
    else:
        recommendations.append(f"Mastery is balanced (spread {spread}); raise every domain together")
    if total_rounds < ENOUGH_ROUNDS:
        recommendations.append(f"Run more training rounds: {total_rounds} so far, insights firm up after "
                               f"{ENOUGH_ROUNDS}")

    return {
        "strongest": {"name": strongest["name"], "mastery": strongest["mastery"]},
        "weakest": {"name": weakest["name"], "mastery": weakest["mastery"]},
        "spread": spread,
        "averageMastery": average,
        "totalRounds": total_rounds,
        "learningVelocity": round(total_rounds / max(1, analyses), 3),
        "recommendations": recommendations,
    }


def create(service: Service) -> ASGIApp:
    meta = MetaLearning()

    def status_document() -> dict[str, Any]:
        return {"analyses": meta.analyses, "lastAnalysisAt": meta.last_analysis_at,
                "training": service.upstream.breaker_state(TRAINING)}

    async def analyze() -> dict[str, Any]:
        overview = await service.upstream.json(TRAINING, "GET", OVERVIEW_PATH)
        with service.tracer.span("derive-insights"):
            insights = derive_insights(overview, meta.analyses + 1)
        meta.record_analysis()
        return insights

    async def status(request: Request) -> Response:
        return ok(status_document(), request)

    async def insights(request: Request) -> Response:
        return ok(await analyze(), request)

    async def report(request: Request) -> Response:
        try:
            found, error = await analyze(), None
        except UpstreamError as exc:
            found, error = None, exc.message
        return ok({"status": status_document(), "insights": found, "trainingAvailable": found is not None,
                   "error": error}, request)

    return build_app(service, [
        Route("/api/v4/meta-learning/status", status),
        Route("/api/v4/meta-learning/insights", insights),
        Route("/api/v4/meta-learning/report", report),
    ])
