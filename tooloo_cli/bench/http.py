"""`tooloo bench http`: HTTP load against a private stack that it starts on free ports and stops.

    results = run_http_benchmarks(seconds=2.0)
    [(r.name, r.requests_per_s, r.p50_ms) for r in results.scenarios]
    results.figures["proxiedShare"], results.noise["proxiedShare"]

The stack runs the default settings of tooloo.toml, on free ports, with its own state
directory and the rate limits raised out of the way (a benchmark measures the path, not
the denials): figures stay comparable from one machine and one tooloo.toml to another.

Every figure that compares two things (the gateway and the direct route, a service and
its bare Starlette route, sampling 1.0 and 0.0) measures them in paired slices, A B B A
..., and reports the median of the slices' ratios with its noise: the robust standard
error of that median (1.858 × the median absolute deviation / √pairs). Drift on a shared
machine then falls on both sides of a pair alike, and a figure says how far to trust it.
`scrapeCpuMs` is the CPU time budget spends on one GET /metrics (its page is the fullest),
the mean of sequential scrapes after the burst scenarios have filled its figures.
The bare route is the service's own router served without tooloo's middleware
(`bench/bare.py`); the sampling comparison runs two extra training services, at sampling
0.0 and 1.0, loads both at once with both pinned to one processor (the load generator on
the others), and compares what a request costs each in CPU time (its threads' time on a
processor, from /proc/PID/task/*/schedstat, in nanoseconds). A saturated service's
throughput is the inverse of that; measured at the same moments on the same processor,
the two meet the same neighbours, so a few per cent can be told from the noise
(throughput slices one after the other measured ±4-9 % on these machines; this ±0.5-1 %).
With redis-server on PATH and redis-py installed, web and two budget replicas sharing their
limits, cache and spend in a redis-server of the bench's own (`sharedBurstShare`) are
compared with the single-process stack on the same cached burst call, in paired slices.
OTLP export (`exportCost`, `exportDownCost`) is measured as sampling is: three training
services at sampling 1.0 side by side on one processor, not exporting, exporting to a
collector that takes everything (bench/otlp_sink.py), and exporting to a port nobody
listens on; what each request costs each in CPU, the exporting ones against the other.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tooloo_cli.bench import bare
from tooloo_cli.bench.loadgen import LoadResult, RequestFactory, get, load, post_json, run
from tooloo_cli.bench.modules import shared_unavailable
from tooloo_cli.bench.stack import EphemeralStack, room_for_replicas
from tooloo_cli.config import BUILTIN_SERVICES, Config

TARGETS = {
    "proxiedShare": 0.40,  # the gateway keeps ≥ 40 % of the direct route's throughput at 50 connections
    "proxiedP99Ratio": 3.0,  # ... with a p99 ≤ 3 × the direct route's
    "middlewareShare": 0.85,  # a service's route keeps ≥ 85 % of the same route served bare
    "burstHitShare": 0.40,  # a burst cache hit takes ≤ 40 % of a miss's latency
    "samplingCost": 0.03,  # tracing at sampling 1.0 costs ≤ 3 % of a service's capacity against 0.0
    "samplingNoise": 0.01,  # ... measured with a noise well below the 3 % it judges
    "stackPssMb": 250.0,  # the eight services together
    "scrapeCpuMs": 1.0,  # a Prometheus scrape of a service's /metrics costs it ≤ 1 ms of CPU
}
SCRAPES = 200  # sequential GET /metrics of budget (the fullest page), after the burst scenarios

# The same route asked directly and through the gateway (tracing, limit, breaker, access log on).
GATEWAY_CONNECTIONS = 50
DIRECT = f"training status, direct ({GATEWAY_CONNECTIONS} connections)"
PROXIED = f"web → training status ({GATEWAY_CONNECTIONS} connections)"
BARE = "training status, bare Starlette route"
SERVICE = "training status, the service (access log, tracing)"
UNSAMPLED, SAMPLED = "training status, sampling 0.0", "training status, sampling 1.0"
PROXIED_HIT = "web → burst cache hit"
SHARED_HIT = "web → burst cache hit (2 budget replicas, Redis)"
STATUS = get("/api/v1/training/status")


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
    noise: dict[str, float] = field(default_factory=dict)  # a paired figure's standard error
    missing: dict[str, str] = field(default_factory=dict)  # a figure left out -> why
    ratios: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (A, B) -> B/A per pair

    def scenario(self, name: str) -> Scenario:
        return next(s for s in self.scenarios if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": "http",
            "scenarios": [vars(s) for s in self.scenarios],
            "figures": self.figures,
            "noise": self.noise,
            "missing": self.missing,
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


Run = tuple[str, int, RequestFactory]  # label, port, request
CpuPerRequest = dict[str, list[float]]  # label -> the server's CPU seconds per request, slice by slice


def cpu_seconds(pid: int) -> float:
    """The CPU time of every thread of process `pid` so far, in seconds (nanosecond resolution,
    where /proc/PID/stat counts 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
    return total / 1e9


async def _alternate(runs: list[Run], rounds: int, seconds: float,
                     connections: int) -> dict[str, list[LoadResult]]:
    """Each (label, port, request) in turn, `rounds` times, every other round backwards (A B B A):
    drift lands on every label alike, and a slice of one label has a slice of the other beside it."""
    results: dict[str, list[LoadResult]] = {label: [] for label, _, _ in runs}
    for round_ in range(rounds):
        for label, port, make in (runs if round_ % 2 == 0 else runs[::-1]):
            results[label].append(await load("127.0.0.1", port, make, connections=connections, seconds=seconds))
    return results


async def _side_by_side(runs: list[Run], servers: dict[str, int], slices: int, seconds: float,
                        connections: int) -> tuple[dict[str, list[LoadResult]], CpuPerRequest]:
    """Every (label, port, request) loaded at once, `slices` times: each slice's load, and the CPU
    per request of each label's server (`servers`: label -> pid) over that same slice."""
    results: dict[str, list[LoadResult]] = {label: [] for label, _, _ in runs}
    cpu: CpuPerRequest = {label: [] for label, _, _ in runs}
    for _ in range(slices):
        before = {label: cpu_seconds(servers[label]) for label, _, _ in runs}
        loads = await asyncio.gather(*(load("127.0.0.1", port, make, connections=connections, seconds=seconds)
                                       for _, port, make in runs))
        for (label, _, _), result in zip(runs, loads):
            results[label].append(result)
            spent = cpu_seconds(servers[label]) - before[label]
            cpu[label].append(spent / result.requests if result.requests else math.inf)
    return results, cpu


@contextmanager
def _one_processor_for(pids: list[int]) -> Iterator[None]:
    """Runs every thread of `pids` on one processor and this process on the others, until the end of
    the block: the servers then meet the same processor, caches and neighbours at every moment, and
    the load generator is not among them. Nothing is pinned on a machine of one processor."""
    processors = sorted(os.sched_getaffinity(0))
    if len(processors) < 2:
        yield
        return
    servers, ours = {processors[-1]}, set(processors[:-1])
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            with suppress(ProcessLookupError):
                os.sched_setaffinity(int(task), servers)
    os.sched_setaffinity(0, ours)
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(processors))


def _paired(measured: dict[str, list[LoadResult]], a: str, b: str) -> list[float]:
    """B's req/s over A's, slice by slice."""
    return [later.requests_per_s / first.requests_per_s if first.requests_per_s else 0.0
            for first, later in zip(measured[a], measured[b])]


def _paired_capacity(cpu: CpuPerRequest, a: str, b: str) -> list[float]:
    """B's capacity over A's, slice by slice: A's CPU per request over B's (a saturated server's
    req/s is one over its CPU seconds per request)."""
    return [first / later if later else 0.0 for first, later in zip(cpu[a], cpu[b])]


def median_and_noise(ratios: list[float]) -> tuple[float, float]:
    """The median of the ratios and its robust standard error (inf with fewer than two)."""
    middle = statistics.median(ratios)
    if len(ratios) < 2:
        return middle, math.inf
    deviation = statistics.median(abs(ratio - middle) for ratio in ratios)
    return middle, 1.858 * deviation / math.sqrt(len(ratios))


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
    """Starts a private stack, runs every scenario, stops the stack; the measured figures.

    A comparison spends `rounds × seconds` on each side, in `4 × rounds` paired slices.
    """
    note = progress or (lambda _: None)
    results = HttpResults()
    slices, slice_seconds = 4 * rounds, seconds / 4
    measured: dict[str, list[LoadResult]] = {}

    def compare(a: Run, b: Run, connections: int) -> None:
        measured.update(run(_alternate([a, b], slices, slice_seconds, connections)))
        results.ratios[(a[0], b[0])] = _paired(measured, a[0], b[0])

    with tempfile.TemporaryDirectory(prefix="tooloo-bench-http-") as tmp:
        directory = Path(tmp)
        with EphemeralStack(directory, _bench_config) as stack, \
                EphemeralStack(_folder(directory, "bare"), _bench_config) as bare_stack:
            note("starting the eight services, and training's bare router")
            stack.start(*BUILTIN_SERVICES)
            bare_stack.start("training", command=bare.command)
            results.figures["stackPssMb"] = _stack_pss_mb(stack, BUILTIN_SERVICES)
            web, budget, training = _port(stack, "web"), _port(stack, "budget"), _port(stack, "training")
            note("a service's middleware, against its bare route")
            compare((BARE, _port(bare_stack, "training"), STATUS), (SERVICE, training, STATUS), connections)
            note("the gateway against the direct route, at 50 connections")
            compare((DIRECT, training, STATUS), (PROXIED, web, STATUS), GATEWAY_CONNECTIONS)
            note("budget burst: cache hit and miss")
            hit = post_json("/api/v1/providers/burst", lambda: b'{"prompt": "bench: always the same"}')
            counter = itertools.count()
            miss = post_json("/api/v1/providers/burst",
                             lambda: json.dumps({"prompt": f"bench miss {next(counter)}"}).encode())
            measured.update(run(_alternate([("burst cache hit", budget, hit), ("web → burst cache hit", web, hit),
                                            ("burst cache miss", budget, miss)], rounds, seconds, connections)))
            note("a scrape of budget's /metrics: the CPU it costs budget")
            results.figures["scrapeCpuMs"] = _scrape_cpu_ms(stack.processes["budget"].pid, budget, SCRAPES)
            if (why := shared_unavailable()) is None:
                note("budget burst through web: two replicas over Redis, against one on its own")
                with _shared_stack(directory) as shared:
                    compare((PROXIED_HIT, web, hit), (SHARED_HIT, _port(shared, "web"), hit), connections)
            else:
                results.missing["sharedBurstShare"] = why
        note("tracer: sampling 0.0 against 1.0, side by side on one processor")
        with EphemeralStack(_folder(directory, "unsampled"), _bench_config) as unsampled, \
                EphemeralStack(_folder(directory, "sampled"), _bench_config) as sampled:
            for rate, private in ((0.0, unsampled), (1.0, sampled)):
                private.start("training", env={"TOOLOO_SERVICES__TRAINING__TRACER__SAMPLING_RATE": str(rate)})
            servers = {UNSAMPLED: unsampled.processes["training"].pid, SAMPLED: sampled.processes["training"].pid}
            runs = [(UNSAMPLED, _port(unsampled, "training"), STATUS), (SAMPLED, _port(sampled, "training"), STATUS)]
            with _one_processor_for(list(servers.values())):
                # Both at once, so each slice lasts as long as a slice of one side: twice as many in the same time.
                loads, cpu = run(_side_by_side(runs, servers, 2 * slices, slice_seconds, max(connections // 2, 1)))
            measured.update(loads)
            results.ratios[(UNSAMPLED, SAMPLED)] = _paired_capacity(cpu, UNSAMPLED, SAMPLED)
        note("OTLP export at sampling 1.0: off, to a collector, to none, side by side on one processor")
        _export_costs(directory, results, measured, 2 * slices, slice_seconds, max(connections // 2, 1))
    results.scenarios = [Scenario.of(label, runs) for label, runs in measured.items()]
    _derive(results)
    return results


@contextmanager
def _shared_stack(directory: Path) -> Iterator[EphemeralStack]:
    """web and two budget replicas sharing limits, cache and spend in a redis-server of the bench's own."""
    from tooloo_cli.bench.redis_server import RedisServer

    with tempfile.TemporaryDirectory(prefix="tooloo-redis-") as short:  # a socket path is ≤ 107 bytes
        server = RedisServer(Path(short))
        try:
            def edit(config: Config) -> None:
                _bench_config(config)
                room_for_replicas(config, "budget", 2)
                config.stack.redis_url = server.url

            with EphemeralStack(_folder(directory, "redis"), edit) as stack:
                stack.start("web", "budget")
                yield stack
        finally:
            server.end()


def _scrape_cpu_ms(pid: int, port: int, scrapes: int) -> float:
    """The CPU time service `pid` spends on one GET /metrics (parsing, rendering, writing), in ms: the mean
    over `scrapes` asked one after the other on one keep-alive connection, as Prometheus asks."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")  # the first one opens the connection, outside the count
        connection.getresponse().read()
        before = cpu_seconds(pid)
        for _ in range(scrapes):
            connection.request("GET", "/metrics")
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"GET /metrics of budget answered {answer.status}")
        return (cpu_seconds(pid) - before) / scrapes * 1000
    finally:
        connection.close()


# -- what exporting sampled traces over OTLP costs (services/otlp.py) --------------------------------

EXPORT_OFF = "training status, sampling 1.0, export off"
EXPORT_UP = "training status, sampling 1.0, export on (collector up)"
EXPORT_DOWN = "training status, sampling 1.0, export on (collector down)"


def _export_costs(directory: Path, results: HttpResults, measured: dict[str, list[LoadResult]], slices: int,
                  seconds: float, connections: int) -> None:
    """exportCost and exportDownCost: the capacity training loses at sampling 1.0 by exporting each trace
    to a collector that takes everything at once (bench/otlp_sink.py), and to a port nobody listens on,
    against not exporting; the three side by side on one processor, by CPU per request, as samplingCost.
    The counts of exported and dropped spans say the export really ran."""
    import importlib.util

    import httpx

    from tooloo_cli.bench.otlp_sink import OtlpSink
    from tooloo_cli.bench.stack import free_port

    if importlib.util.find_spec("opentelemetry.proto") is None:
        why = "opentelemetry-proto is not installed (pip install 'tooloo[otlp]')"
        results.missing.update({"exportCost": why, "exportDownCost": why})
        return
    sampled = {"TOOLOO_SERVICES__TRAINING__TRACER__SAMPLING_RATE": "1.0"}
    with OtlpSink() as sink, EphemeralStack(_folder(directory, "export-off"), _bench_config) as off, \
            EphemeralStack(_folder(directory, "export-up"), _bench_config) as up, \
            EphemeralStack(_folder(directory, "export-down"), _bench_config) as down:
        off.start("training", env=sampled)
        up.start("training", env=sampled | {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url})
        down.start("training", env=sampled | {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
        stacks = {EXPORT_OFF: off, EXPORT_UP: up, EXPORT_DOWN: down}
        servers = {label: stack.processes["training"].pid for label, stack in stacks.items()}
        runs = [(label, _port(stack, "training"), STATUS) for label, stack in stacks.items()]
        with _one_processor_for(list(servers.values())):
            os.sched_setaffinity(sink.pid, os.sched_getaffinity(0))  # beside the load generator, not the services
            loads, cpu = run(_side_by_side(runs, servers, slices, seconds, connections))
        measured.update(loads)
        exported = {label: httpx.get(stacks[label].url("training") + "/api/v1/system/observability",
                                     timeout=5).json()["traceExport"] for label in (EXPORT_UP, EXPORT_DOWN)}
    for figure, label in (("exportCost", EXPORT_UP), ("exportDownCost", EXPORT_DOWN)):
        ratio, noise = median_and_noise(_paired_capacity(cpu, EXPORT_OFF, label))
        results.figures[figure], results.noise[figure] = 1 - ratio, noise
    results.figures["exportedSpans"] = exported[EXPORT_UP]["exportedSpans"]
    results.figures["exportDroppedSpans"] = (exported[EXPORT_UP]["droppedQueueFullSpans"]
                                             + exported[EXPORT_UP]["droppedFailedSpans"])
    results.figures["exportDownDroppedSpans"] = (exported[EXPORT_DOWN]["droppedQueueFullSpans"]
                                                 + exported[EXPORT_DOWN]["droppedFailedSpans"])


def _folder(directory: Path, name: str) -> Path:
    folder = directory / name
    folder.mkdir()
    return folder


def _derive(results: HttpResults) -> None:
    """The figures the targets speak of, from the scenarios and the paired slices."""
    for figure, pair in (("proxiedShare", (DIRECT, PROXIED)), ("middlewareShare", (BARE, SERVICE)),
                         ("samplingRatio", (UNSAMPLED, SAMPLED)), ("sharedBurstShare", (PROXIED_HIT, SHARED_HIT))):
        if pair in results.ratios:
            results.figures[figure], results.noise[figure] = median_and_noise(results.ratios[pair])
    ratio = results.figures.pop("samplingRatio")
    results.figures["samplingCost"] = 1 - ratio
    results.noise["samplingCost"] = results.figures["samplingNoise"] = results.noise.pop("samplingRatio")
    direct, proxied = results.scenario(DIRECT), results.scenario(PROXIED)
    results.figures["proxiedP99Ratio"] = proxied.p99_ms / direct.p99_ms if direct.p99_ms else 0.0
    hit = results.scenario("burst cache hit").p50_ms
    miss = results.scenario("burst cache miss").p50_ms
    results.figures["burstHitShare"] = hit / miss if miss else 0.0
