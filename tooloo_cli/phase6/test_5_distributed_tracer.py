"""DistributedTracer: W3C context, sampling really applied, metrics over every request."""

from __future__ import annotations

import asyncio
import math

import pytest

from tooloo_cli.phase6.support import ManualClock, run
from tooloo_cli.resilience import Tracer, format_traceparent, parse_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def test_traceparent_is_parsed_and_emitted_per_w3c() -> None:
    header = format_traceparent(TRACE_ID, PARENT_ID, True)
    assert header == f"00-{TRACE_ID}-{PARENT_ID}-01"
    context = parse_traceparent(header)
    assert context is not None and (context.trace_id, context.parent_id, context.sampled) == (TRACE_ID, PARENT_ID, True)
    for bad in ("", "garbage", f"00-{'0' * 32}-{PARENT_ID}-01", f"00-{TRACE_ID}-{'0' * 16}-01",
                f"ff-{TRACE_ID}-{PARENT_ID}-01", f"00-{TRACE_ID.upper()}-{PARENT_ID}-01"):
        assert parse_traceparent(bad) is None, bad


def test_sampling_rate_is_really_applied() -> None:
    tracer = Tracer("svc", sampling_rate=0.2)
    for _ in range(5000):
        with tracer.trace("GET /x"):
            pass
    stats = tracer.stats()
    assert stats["totalTraces"] == 5000
    assert 0.15 <= stats["sampledTraces"] / 5000 <= 0.25


def test_an_incoming_sampled_flag_is_honoured() -> None:
    never, always = Tracer("a", sampling_rate=0.0), Tracer("b", sampling_rate=1.0)
    with never.trace("in", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01") as trace:
        assert trace.sampled and trace.trace_id == TRACE_ID
    with always.trace("in", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-00") as trace:
        assert not trace.sampled
    assert never.stats()["sampledTraces"] == 1 and always.stats()["sampledTraces"] == 0


def test_nested_spans_follow_the_context_across_awaits() -> None:
    tracer = Tracer("svc", sampling_rate=1.0)

    async def handler() -> None:
        with tracer.trace("GET /report"):
            with tracer.span("fetch-services"):
                await asyncio.gather(fetch("training"), fetch("budget"))
            with tracer.span("analyze-data"):
                await asyncio.sleep(0)

    async def fetch(name: str) -> None:
        with tracer.span(f"fetch-{name}"):
            await asyncio.sleep(0)

    run(handler())
    (trace,) = tracer.stats()["spans"]
    spans = {span["name"]: span for span in trace["spans"]}
    assert spans["fetch-training"]["parentId"] == spans["fetch-services"]["spanId"]
    assert spans["fetch-budget"]["parentId"] == spans["fetch-services"]["spanId"]
    assert spans["fetch-services"]["parentId"] == spans["GET /report"]["spanId"]
    assert spans["analyze-data"]["parentId"] == spans["GET /report"]["spanId"]


def test_latency_percentiles_are_computed_from_every_request() -> None:
    tracer = Tracer("svc", sampling_rate=1.0, max_traces=200)
    for i in range(200):
        with tracer.trace("GET /x"):
            sum(range(i * 200))  # a spread of latencies
    stats = tracer.stats()
    latencies = sorted(trace["durationMs"] for trace in stats["spans"])
    assert stats["p99Latency"] == latencies[math.ceil(0.99 * 200) - 1]
    assert stats["p95Latency"] == latencies[math.ceil(0.95 * 200) - 1]
    assert 0 < stats["p50Latency"] <= stats["p95Latency"] <= stats["p99Latency"]
    assert stats["avgLatency"] == pytest.approx(sum(latencies) / 200)


def test_throughput_is_measured_and_error_rate_stays_a_fraction() -> None:
    clock = ManualClock()
    tracer = Tracer("svc", sampling_rate=0.0, clock=clock)
    clock.advance(60)
    for i in range(120):
        try:
            with tracer.trace("GET /x") as trace:
                if i % 4 == 0:
                    trace.fail("HTTP 500")
                if i % 4 == 1:
                    raise RuntimeError("boom")
        except RuntimeError:
            pass
    stats = tracer.stats()
    assert stats["throughput"] == 120 / 60
    assert stats["errorRate"] == 0.5
    clock.advance(61)  # the requests leave the 60 s window
    assert tracer.stats()["throughput"] == 0.0


def test_every_request_counts_but_only_sampled_ones_keep_spans() -> None:
    tracer = Tracer("svc", sampling_rate=0.1, max_traces=1000)
    for _ in range(1000):
        with tracer.trace("GET /x"):
            with tracer.span("work"):
                pass
    stats = tracer.stats()
    assert stats["totalTraces"] == 1000 and stats["activeTraces"] == 0
    assert len(stats["spans"]) == stats["sampledTraces"] < 1000
    assert all(len(trace["spans"]) == 2 for trace in stats["spans"])
