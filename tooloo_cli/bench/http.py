"""`tooloo bench http`: HTTP load against a private stack that it starts on free ports and stops.

    results = run_http_benchmarks(seconds=3.0)
    [(r.name, r.requests_per_s, r.p50_ms) for r in results.scenarios]

The stack runs the default settings of tooloo.toml, on free ports, with its own state
directory and the rate limits raised out of the way (a benchmark measures the path, not
the denials): figures stay comparable from one machine and one tooloo.toml to another. The
tracer comparison runs two extra training services, at sampling 0.0 and 1.0, measured in
alternating rounds so that drift on a shared machine falls on both alike.
"""

from __future__ import annotations

import itertools
import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tooloo_cli.bench.loadgen import LoadResult, RequestFactory, get, load, post_json, run
from tooloo_cli.bench.stack import EphemeralStack
from tooloo_cli.config import BUILTIN_SERVICES, Config

TARGETS = {
    "proxiedShare": 0.40,  # the gateway keeps ≥ 40 % of the direct route's throughput at 50 connections
    "proxiedP99Ratio": 3.0,  # ... with a p99 ≤ 3 × the direct route's
    "middlewareShare": 0.85,  # a traced /api route keeps ≥ 85 % of a bare route's throughput
    "burstHitShare": 0.40,  # a burst cache hit takes ≤ 40 % of a miss's latency
    "samplingCost": 0.03,  # tracing at sampling 1.0 costs ≤ 3 % throughput against 0.0
    "stackPssMb": 250.0,  # the eight services together
}


# The same route asked directly and through the gateway (tracing, limit, breaker, access log on).
GATEWAY_CONNECTIONS = 50
DIRECT = f"training status, direct ({GATEWAY_CONNECTIONS} connections)"
PROXIED = f"web → training status ({GATEWAY_CONNECTIONS} connections)"


@dataclass
class Scenario:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int

    @classmethod
    def of(cls, name: str, results: list[LoadResult]) -> Scenario:
        latencies = [latency for result in results for latency in result.latencies_ms]
        merged = LoadResult(seconds=sum(r.seconds for r in results), latencies_ms=latencies)
        return cls(name, statistics.median(r.requests_per_s for r in results), merged.percentile(0.50),
                   merged.percentile(0.99), merged.requests, sum(r.errors for r in results))


@dataclass
class HttpResults:
    scenarios: list[Scenario] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def scenario(self, name: str) -> Scenario:
        return next(s for s in self.scenarios if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": "http",
            "scenarios": [vars(s) for s in self.scenarios],
            "figures": self.figures,
            "targets": TARGETS,
        }


def _bench_config(config: Config) -> None:
    """Limits out of the way of the load; everything else as configured."""
    for settings in config.services.values():
        if settings.rate_limiter is not None:
            settings.rate_limiter.capacity = 1_000_000_000
            settings.rate_limiter.refill_rate = 1_000_000_000.0


def _port(stack: EphemeralStack, name: str) -> int:
    return stack.loaded.services[name].port


async def _alternate(runs: list[tuple[str, int, RequestFactory]], rounds: int, seconds: float,
                     connections: int) -> dict[str, list[LoadResult]]:
    """Each (label, port, request) in turn, `rounds` times: drift lands on every label alike."""
    results: dict[str, list[LoadResult]] = {label: [] for label, _, _ in runs}
    for _ in range(rounds):
        for label, port, make in runs:
            results[label].append(await load("127.0.0.1", port, make, connections=connections, seconds=seconds))
    return results


def _stack_pss_mb(stack: EphemeralStack, names: tuple[str, ...]) -> float:
    import psutil

    total = 0
    for name in names:
        process = psutil.Process(stack.processes[name].pid)
        for member in (process, *process.children(recursive=True)):
            total += member.memory_full_info().pss
    return total / 1024 / 1024


def run_http_benchmarks(seconds: float = 2.0, rounds: int = 3, connections: int = 8,
                        progress: Callable[[str], None] | None = None) -> HttpResults:
    """Starts a private stack, runs every scenario, stops the stack; the measured figures."""
    note = progress or (lambda _: None)
    results = HttpResults()
    with tempfile.TemporaryDirectory(prefix="tooloo-bench-http-") as tmp:
        directory = Path(tmp)
        with EphemeralStack(directory, _bench_config) as stack:
            note("starting the eight services")
            stack.start(*BUILTIN_SERVICES)
            results.figures["stackPssMb"] = _stack_pss_mb(stack, BUILTIN_SERVICES)
            web, budget, training = _port(stack, "web"), _port(stack, "budget"), _port(stack, "training")
            note("a service's middleware, and the gateway's proxied route")
            # Training's /ready has nothing to check: outside /api (no trace) but access-logged like
            # its /api status route, a document of the same size and cost, so the two differ by the
            # tracing middleware and nothing else.
            runs = [("training /ready (bare)", training, get("/ready")),
                    ("training /api/v1/training/status (traced)", training, get("/api/v1/training/status")),
                    ("web → training (proxied)", web, get("/api/v1/training/status"))]
            measured = run(_alternate(runs, rounds, seconds, connections))
            note("the gateway against the direct route, at 50 connections")
            status = get("/api/v1/training/status")
            measured.update(run(_alternate([(DIRECT, training, status), (PROXIED, web, status)], rounds, seconds,
                                           GATEWAY_CONNECTIONS)))
            note("budget burst: cache hit and miss")
            hit = post_json("/api/v1/providers/burst", lambda: b'{"prompt": "bench: always the same"}')
            counter = itertools.count()
            miss = post_json("/api/v1/providers/burst",
                             lambda: json.dumps({"prompt": f"bench miss {next(counter)}"}).encode())
            measured.update(run(_alternate([("burst cache hit", budget, hit), ("burst cache miss", budget, miss)],
                                            rounds, seconds, connections)))
            results.scenarios = [Scenario.of(label, runs_) for label, runs_ in measured.items()]
        note("tracer: sampling 0.0 against 1.0")
        results.scenarios += _sampling_scenarios(directory, seconds, rounds, connections)
    _derive(results)
    return results


def _sampling_scenarios(directory: Path, seconds: float, rounds: int, connections: int) -> list[Scenario]:
    scenarios = []
    measured: dict[str, list[LoadResult]] = {}
    stacks = []
    try:
        for rate in (0.0, 1.0):
            folder = directory / f"sampling-{rate}"
            folder.mkdir()
            stack = EphemeralStack(folder, _bench_config)
            stacks.append(stack)
            stack.start("training", env={"TOOLOO_SERVICES__TRAINING__TRACER__SAMPLING_RATE": str(rate)})
        runs = [(f"training status, sampling {rate}", _port(stack, "training"), get("/api/v1/training/status"))
                for rate, stack in zip((0.0, 1.0), stacks)]
        measured = run(_alternate(runs, rounds, seconds, connections))
    finally:
        for stack in stacks:
            stack.stop_all()
    for label, runs_ in measured.items():
        scenarios.append(Scenario.of(label, runs_))
    return scenarios


def _derive(results: HttpResults) -> None:
    """The figures the targets speak of, from the scenarios."""
    direct, proxied = results.scenario(DIRECT), results.scenario(PROXIED)
    results.figures["proxiedShare"] = proxied.requests_per_s / direct.requests_per_s if direct.requests_per_s else 0.0
    results.figures["proxiedP99Ratio"] = proxied.p99_ms / direct.p99_ms if direct.p99_ms else 0.0
    bare = results.scenario("training /ready (bare)").requests_per_s
    middleware = results.scenario("training /api/v1/training/status (traced)").requests_per_s
    results.figures["middlewareShare"] = middleware / bare if bare else 0.0
    hit = results.scenario("burst cache hit").p50_ms
    miss = results.scenario("burst cache miss").p50_ms
    results.figures["burstHitShare"] = hit / miss if miss else 0.0
    unsampled = results.scenario("training status, sampling 0.0").requests_per_s
    sampled = results.scenario("training status, sampling 1.0").requests_per_s
    results.figures["samplingCost"] = 1 - sampled / unsampled if unsampled else 0.0
