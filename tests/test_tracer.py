"""Tracer: traceparent and tracestate parsing (W3C Trace Context Level 2), parent-based and ratio sampling,
span nesting, metrics and memory hygiene."""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tooloo_cli.resilience import tracer as tracer_module
from tooloo_cli.resilience.tracer import (
    Span,
    Trace,
    TraceContext,
    Tracer,
    _percentile,
    format_traceparent,
    parse_traceparent,
    parse_tracestate,
)
from tooloo_cli.phase6.support import ManualClock, run

T = TypeVar("T")

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


# -- helpers ------------------------------------------------------------------------------


class FakeNanoClock:
    """Stands in for `perf_counter_ns` so that span durations are exact."""

    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, milliseconds: float) -> None:
        self.now += int(milliseconds * 1_000_000)


@pytest.fixture
def nanoclock(monkeypatch: pytest.MonkeyPatch) -> FakeNanoClock:
    """Replaces the tracer's `perf_counter_ns` with a manual clock."""
    clock = FakeNanoClock()
    monkeypatch.setattr(tracer_module, "perf_counter_ns", clock)
    return clock


def request(tracer: Tracer, name: str = "GET /", *, fail: bool = False, raises: bool = False) -> Trace:
    """Runs one traced request and returns its (finished) trace."""
    try:
        with tracer.trace(name) as trace:
            if fail:
                trace.fail("bad upstream")
            if raises:
                raise ValueError("boom")
    except ValueError:
        pass
    return trace


def hex_id(bits: int) -> st.SearchStrategy[str]:
    """Lower-case hex ids of `bits` bits, never all zero."""
    return st.integers(min_value=1, max_value=(1 << bits) - 1).map(lambda n: f"{n:0{bits // 4}x}")


# -- parse_traceparent ----------------------------------------------------------------------


def test_parse_accepts_a_valid_header() -> None:
    assert parse_traceparent(VALID) == TraceContext(TRACE_ID, PARENT_ID, True)
    assert parse_traceparent(VALID[:-2] + "00") == TraceContext(TRACE_ID, PARENT_ID, False)
    assert parse_traceparent(f" \t{VALID}\t ") == TraceContext(TRACE_ID, PARENT_ID, True)  # OWS around it


@pytest.mark.parametrize(("flags", "sampled", "random"), [
    ("00", False, False), ("01", True, False), ("02", False, True), ("03", True, True),
    ("fc", False, False), ("fd", True, False), ("ff", True, True),  # unknown bits: valid, and not read
])
def test_parse_reads_the_sampled_and_random_bits_of_the_flags(flags: str, sampled: bool, random: bool) -> None:
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-{flags}") == TraceContext(TRACE_ID, PARENT_ID, sampled, random)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "garbage",
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",  # trace id too short
        f"00-{TRACE_ID}a-{PARENT_ID}-01",  # trace id too long
        f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01",  # parent id too short
        f"00-{TRACE_ID}-{PARENT_ID}0-01",  # parent id too long
        f"0-{TRACE_ID}-{PARENT_ID}-01",  # version too short
        f"000-{TRACE_ID}-{PARENT_ID}-01",  # version too long
        f"00-{TRACE_ID}-{PARENT_ID}-1",  # flags too short
        f"00-{TRACE_ID}-{PARENT_ID}-001",  # flags too long
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper-case trace id
        f"00-{TRACE_ID}-{PARENT_ID.upper()}-01",  # upper-case parent id
        f"0A-{TRACE_ID}-{PARENT_ID}-01",  # upper-case version
        f"00-{TRACE_ID}-{PARENT_ID}-0A",  # upper-case flags
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # forbidden version
        f"ff-{TRACE_ID}-{PARENT_ID}-01-future",
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 is exactly 55 characters
        f"00-{TRACE_ID}-{PARENT_ID}-01-",
        f"00-{TRACE_ID}-{PARENT_ID}-01x",
        f"00-{TRACE_ID}-{PARENT_ID}-01.",
        f"cc-{TRACE_ID}-{PARENT_ID}-01.what-the-future-will-be-like",  # a later version: a "-" after the flags
        f"cc-{TRACE_ID}-{PARENT_ID}-0",  # a later version shorter than 55 characters
        f"cc-{TRACE_ID}-{'0' * 16}-01-future",  # a later version's ids are checked alike
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",  # not hex
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f"00-{TRACE_ID}-{PARENT_ID}-01,00-{TRACE_ID}-{PARENT_ID}-01",  # two headers joined into one field
        f"00-{TRACE_ID}-{PARENT_ID}-01\n",  # a line feed is not optional whitespace
    ],
)
def test_parse_rejects_invalid_headers(header: str | None) -> None:
    assert parse_traceparent(header) is None


def test_parse_reads_a_later_version_by_its_first_55_characters() -> None:
    assert parse_traceparent(f"01-{TRACE_ID}-{PARENT_ID}-01-future-stuff") == TraceContext(TRACE_ID, PARENT_ID, True)
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-00") == TraceContext(TRACE_ID, PARENT_ID, False)
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-03-what-the-future-will-be-like") == TraceContext(
        TRACE_ID, PARENT_ID, True, True)
    assert parse_traceparent(f"fe-{TRACE_ID}-{PARENT_ID}-01-") == TraceContext(TRACE_ID, PARENT_ID, True)


def test_format_traceparent_writes_version_00_with_only_the_known_flags() -> None:
    assert format_traceparent(TRACE_ID, PARENT_ID, True) == VALID
    assert format_traceparent(TRACE_ID, PARENT_ID, False) == VALID[:-2] + "00"
    assert format_traceparent(TRACE_ID, PARENT_ID, False, True) == VALID[:-2] + "02"
    assert format_traceparent(TRACE_ID, PARENT_ID, True, True) == VALID[:-2] + "03"


@settings(max_examples=300, deadline=None)
@given(trace_id=hex_id(128), span_id=hex_id(64), sampled=st.booleans(), random=st.booleans())
def test_format_then_parse_round_trips(trace_id: str, span_id: str, sampled: bool, random: bool) -> None:
    header = format_traceparent(trace_id, span_id, sampled, random)
    assert len(header) == 55
    assert parse_traceparent(header) == TraceContext(trace_id, span_id, sampled, random)


@settings(max_examples=300, deadline=None)
@given(trace_id=hex_id(128), span_id=hex_id(64), flags=st.integers(0, 255), version=st.integers(0, 254))
def test_parse_then_format_round_trips_any_version_and_flags(trace_id: str, span_id: str, flags: int,
                                                             version: int) -> None:
    later = "-future" if version else ""
    parsed = parse_traceparent(f"{version:02x}-{trace_id}-{span_id}-{flags:02x}{later}")
    assert parsed == TraceContext(trace_id, span_id, bool(flags & 1), bool(flags & 2))
    out = format_traceparent(*parsed)
    assert out == f"00-{trace_id}-{span_id}-{flags & 3:02x}"  # downgraded to 00, unknown flags zero
    assert parse_traceparent(out) == parsed


@settings(max_examples=500, deadline=None)
@given(header=st.one_of(st.text(max_size=80), st.text(alphabet="0123456789abcdefABF- \t", max_size=70)))
def test_parse_never_raises(header: str) -> None:
    parsed = parse_traceparent(header)
    assert parsed is None or parse_traceparent(format_traceparent(*parsed)) == parsed


# -- parse_tracestate ------------------------------------------------------------------------


def _members(count: int, width: int = 1) -> list[str]:
    return [f"k{n:02d}={str(n % 10) * width}" for n in range(count)]


@pytest.mark.parametrize(("header", "passed_on"), [
    (None, ""),
    ("", ""),
    ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    ("foo=1 \t , \t bar=2, \t baz=3", "foo=1,bar=2,baz=3"),  # OWS around members
    ("\t foo=1 \t", "foo=1"),
    ("foo=  1", "foo=  1"),  # a value's leading spaces are the value's
    (",, ,\t,foo=1,,", "foo=1"),  # empty and whitespace-only members
    (" , ", ""),
    ("foo=1,foo=2,bar=3,foo=4", "foo=1,bar=3"),  # a repeated key: the first (left-most) is kept
    ("tenant@system=1,foo@=2,foo@@bar=3,foo@bar@baz=4,t@" + "v" * 15 + "=5",
     "tenant@system=1,foo@=2,foo@@bar=3,foo@bar@baz=4,t@" + "v" * 15 + "=5"),
    ("1vendor=x,a_-*/@z=y", "1vendor=x,a_-*/@z=y"),
    ("z" * 256 + "=1", "z" * 256 + "=1"),
    ("foo=" + "v" * 256, "foo=" + "v" * 256),
    (",".join(_members(32)), ",".join(_members(32))),
])
def test_tracestate_is_validated_and_normalized(header: str | None, passed_on: str) -> None:
    assert parse_tracestate(header) == passed_on


@pytest.mark.parametrize("header", [
    "foo =1", "FOO=1", "foo.bar=1", "@foo=1,bar=2", "_foo=1", "foo=bar=baz", "foo=,bar=3", "=1", "foo",
    "foo=1\tx", "foo=caf\xe9", "foo= ", "z" * 257 + "=1", "foo=" + "v" * 257, "foo=1;bar=2",
    ",".join(_members(33)), ",".join(_members(32) + ["k00=again"]),  # 33 members, one of them a repeat
    ",".join(_members(31)) + ",",  # 32 members and an empty one: the grammar counts empty members too
    "," * 16_000,
])
def test_a_malformed_tracestate_is_discarded_as_a_whole(header: str) -> None:
    assert parse_tracestate(f"ok=1,{header}") == ""
    assert parse_tracestate("ok=1") == "ok=1"


def test_all_allowed_characters_pass() -> None:
    key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/"
    value = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")
    assert parse_tracestate(f"{key}={value}") == f"{key}={value}"


def test_a_long_tracestate_is_cut_to_512_characters_long_members_first_then_from_the_end() -> None:
    short = _members(14, width=20)  # 24 characters each: 349 joined
    long_early, long_late = "early=" + "e" * 150, "late=" + "l" * 150  # 156 and 155
    header = ",".join([short[0], long_early, *short[1:7], long_late, *short[7:]])
    assert len(header) == 662
    kept = parse_tracestate(header).split(",")
    # the right-most long member went first; that was enough for the rest to fit
    assert kept == [short[0], long_early, *short[1:]] and len(",".join(kept)) <= 512

    many = ",".join([long_early, *_members(30, width=20)])  # long member + 30 x 24 characters: 877
    kept = parse_tracestate(many).split(",")
    assert long_early not in kept and kept == _members(30, width=20)[:len(kept)]  # then from the end
    assert len(",".join(kept)) <= 512 < len(",".join(_members(30, width=20)[:len(kept) + 1]))

    assert parse_tracestate("a=" + "x" * 256 + ",b=" + "y" * 256) == "a=" + "x" * 256
    assert parse_tracestate("a" * 256 + "=" + "x" * 256) == ""  # one member of 513: nothing fits


def test_at_least_512_characters_are_passed_on() -> None:
    header = ",".join(["k=" + "v" * 254, "j=" + "w" * 253])  # 256 + 1 + 255 = 512
    assert len(header) == 512 and parse_tracestate(header) == header


_KEY = st.from_regex(r"[a-z0-9][a-z0-9_\-*/@]{0,20}", fullmatch=True)
_VALUE = st.from_regex(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,20}[\x21-\x2b\x2d-\x3c\x3e-\x7e]", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(members=st.dictionaries(_KEY, _VALUE, max_size=32), ows=st.sampled_from(["", " ", "\t", " \t "]),
       empties=st.integers(0, 3))
def test_a_valid_tracestate_round_trips(members: dict[str, str], ows: str, empties: int) -> None:
    normal = ",".join(f"{key}={value}" for key, value in members.items())
    spaced = f"{ows},{ows}" * empties + f"{ows},{ows}".join(f"{key}={value}" for key, value in members.items())
    expected = normal if len(normal) <= 512 else parse_tracestate(normal)
    assert parse_tracestate(normal) == expected
    assert len(expected) <= 512 and normal.startswith(expected)  # cut only from the end: no long members here
    # the empty members count among the 32 the grammar allows
    assert parse_tracestate(spaced) == (expected if spaced.count(",") < 32 else "")


@settings(max_examples=500, deadline=None)
@given(header=st.one_of(st.text(max_size=120), st.text(alphabet="ab=,@ \t1", max_size=120)))
def test_parse_tracestate_never_raises_and_its_result_is_a_fixed_point(header: str) -> None:
    state = parse_tracestate(header)
    assert len(state) <= 512 and len(state.split(",")) <= 32
    assert parse_tracestate(state) == state


# -- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [-0.1, 1.01])
def test_sampling_rate_outside_0_to_1_is_rejected(rate: float) -> None:
    with pytest.raises(ValueError, match="sampling_rate"):
        Tracer("svc", sampling_rate=rate)


def test_incoming_sampled_flag_is_honoured_at_rate_zero() -> None:
    tracer = Tracer("svc", sampling_rate=0.0)
    with tracer.trace("GET /", traceparent=VALID) as trace:
        assert trace.sampled
        assert trace.trace_id == TRACE_ID
        assert trace.parent_id == int(PARENT_ID, 16)
        assert isinstance(tracer.span("child"), Span)
    stats = tracer.stats()
    assert stats["sampledTraces"] == 1 and len(stats["spans"]) == 1
    assert stats["spans"][0]["traceId"] == TRACE_ID
    root = next(s for s in stats["spans"][0]["spans"] if s["name"] == "GET /")
    assert root["parentId"] == PARENT_ID


def test_incoming_unsampled_flag_is_honoured_at_rate_one() -> None:
    tracer = Tracer("svc", sampling_rate=1.0)
    with tracer.trace("GET /", traceparent=VALID[:-2] + "00") as trace:
        assert not trace.sampled and trace.trace_id == TRACE_ID
        assert not isinstance(tracer.span("child"), Span)
    stats = tracer.stats()
    assert stats["totalTraces"] == 1 and stats["sampledTraces"] == 0 and stats["spans"] == []


def test_an_invalid_traceparent_starts_a_new_root_trace() -> None:
    tracer = Tracer("svc", sampling_rate=1.0)
    with tracer.trace("GET /", traceparent=VALID.upper()) as trace:
        assert trace.trace_id != TRACE_ID.upper() and trace.trace_id != TRACE_ID
        assert trace.parent_id is None
        assert parse_traceparent(trace.traceparent) is not None


@pytest.mark.parametrize(("rate", "low", "high"), [(0.25, 0.18, 0.32), (0.5, 0.43, 0.57), (0.1, 0.06, 0.14)])
def test_root_sampling_follows_the_rate(rate: float, low: float, high: float) -> None:
    tracer = Tracer("svc", sampling_rate=rate, max_traces=10)
    sampled = sum(tracer.trace("GET /").sampled for _ in range(4000))
    assert low <= sampled / 4000 <= high


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 2000)])
def test_rate_zero_samples_none_and_rate_one_samples_all(rate: float, expected: int) -> None:
    tracer = Tracer("svc", sampling_rate=rate)
    for _ in range(2000):
        request(tracer)
    stats = tracer.stats()
    assert stats["sampledTraces"] == expected and stats["totalTraces"] == 2000


def test_root_sampling_decision_is_a_function_of_the_trace_id() -> None:
    rate = 0.3
    tracer = Tracer("svc", sampling_rate=rate)
    bound = int(rate * (1 << 64))
    for _ in range(500):
        trace = tracer.trace("GET /")
        assert len(trace.trace_id) == 32 and int(trace.trace_id, 16) != 0
        assert trace.sampled == ((int(trace.trace_id, 16) & ((1 << 64) - 1)) < bound)


# -- spans and context ------------------------------------------------------------------------


def test_nested_spans_get_the_right_parents() -> None:
    tracer = Tracer("svc", sampling_rate=1.0)
    with tracer.trace("GET /") as trace:
        assert Tracer.current() is trace
        with tracer.span("child") as child:
            with tracer.span("grandchild") as grandchild:
                grandchild.set("hit", True)
            with tracer.span("second-grandchild") as second:
                pass
        with tracer.span("sibling") as sibling:
            pass
    assert isinstance(child, Span) and isinstance(grandchild, Span)
    assert child.parent_id == trace.id
    assert grandchild.parent_id == child.id
    assert second.parent_id == child.id
    assert sibling.parent_id == trace.id
    assert Tracer.current() is None
    exported = {s["name"]: s for s in tracer.stats()["spans"][0]["spans"]}
    assert exported["GET /"]["parentId"] is None
    assert exported["child"]["parentId"] == trace.span_id
    assert exported["grandchild"]["parentId"] == child.span_id
    assert exported["grandchild"]["attributes"] == {"hit": True}
    assert len({s["spanId"] for s in exported.values()}) == 5


def test_spans_nest_across_await_in_concurrent_tasks() -> None:
    async def scenario() -> None:
        tracer = Tracer("svc", sampling_rate=1.0)

        async def worker(name: str) -> tuple[Any, Any, Any]:
            with tracer.span(name) as outer:
                await asyncio.sleep(0)
                with tracer.span(f"{name}-inner") as inner:
                    await asyncio.sleep(0)
                    assert Tracer.current() is trace
                await asyncio.sleep(0)
                with tracer.span(f"{name}-after") as after:
                    pass
            return outer, inner, after

        with tracer.trace("GET /") as trace:
            await asyncio.sleep(0)
            results = await asyncio.gather(*(worker(f"w{n}") for n in range(4)))
            with tracer.span("tail") as tail:
                pass
        for outer, inner, after in results:
            assert outer.parent_id == trace.id
            assert inner.parent_id == outer.id
            assert after.parent_id == outer.id
        assert tail.parent_id == trace.id
        names = [s["name"] for s in tracer.stats()["spans"][0]["spans"]]
        assert sorted(names) == sorted(["GET /", "tail"] + [f"w{n}{sfx}" for n in range(4) for sfx in ("", "-inner", "-after")])

    run(scenario())


def test_concurrent_traces_in_tasks_do_not_mix() -> None:
    async def scenario() -> None:
        tracer = Tracer("svc", sampling_rate=1.0)

        async def handle(name: str) -> tuple[Trace, Any]:
            with tracer.trace(name) as trace:
                await asyncio.sleep(0)
                with tracer.span("work") as span:
                    await asyncio.sleep(0)
                    assert Tracer.current() is trace
            return trace, span

        pairs = await asyncio.gather(*(handle(f"req{n}") for n in range(5)))
        assert len({trace.trace_id for trace, _ in pairs}) == 5
        for trace, span in pairs:
            assert span.parent_id == trace.id
        assert tracer.stats()["totalTraces"] == 5 and tracer.stats()["activeTraces"] == 0

    run(scenario())


def test_span_outside_any_trace_is_a_no_op() -> None:
    tracer = Tracer("svc", sampling_rate=1.0)
    span = tracer.span("orphan")
    assert not isinstance(span, Span)
    with span as entered:
        entered.set("key", "value")
    assert Tracer.current() is None and Tracer.current_traceparent() is None


def test_an_error_inside_a_span_marks_the_span_not_the_trace() -> None:
    tracer = Tracer("svc", sampling_rate=1.0)
    with tracer.trace("GET /") as trace:
        with pytest.raises(KeyError):
            with tracer.span("lookup"):
                raise KeyError("missing")
    exported = {s["name"]: s for s in tracer.stats()["spans"][0]["spans"]}
    assert exported["lookup"]["status"] == "error" and exported["lookup"]["attributes"] == {"error": "KeyError"}
    assert trace.status == "ok" and tracer.stats()["errorCount"] == 0


def test_unsampled_traces_record_no_spans_but_are_counted() -> None:
    tracer = Tracer("svc", sampling_rate=0.0)
    for _ in range(3):
        with tracer.trace("GET /") as trace:
            assert not trace.sampled
            span = tracer.span("child")
            assert not isinstance(span, Span)
            with span as entered:
                entered.set("ignored", 1)
                with tracer.span("grandchild"):
                    pass
        assert trace.spans == []  # no child spans: the trace itself (its root span) measures the request
    stats = tracer.stats()
    assert stats["totalTraces"] == 3 and stats["sampledTraces"] == 0 and stats["spans"] == []


def test_traceparent_uses_the_current_span_and_keeps_the_trace_id() -> None:
    tracer = Tracer("svc", sampling_rate=0.0)
    with tracer.trace("GET /", traceparent=VALID) as trace:
        root_header = trace.traceparent
        assert root_header == f"00-{TRACE_ID}-{trace.span_id}-01"
        assert Tracer.current_traceparent() == root_header
        with tracer.span("call-upstream") as span:
            header = trace.traceparent
            assert header == f"00-{TRACE_ID}-{span.span_id}-01"
            assert Tracer.current_traceparent() == header
            parsed = parse_traceparent(header)
            assert parsed is not None and parsed.trace_id == TRACE_ID and parsed.parent_id == span.span_id
        assert trace.traceparent == root_header
    assert Tracer.current_traceparent() is None


def test_an_id_tooloo_makes_carries_the_random_flag_sampled_or_not() -> None:
    for rate, flags in ((0.0, "02"), (1.0, "03")):
        with Tracer("svc", sampling_rate=rate).trace("GET /") as trace:
            assert trace.random and trace.traceparent == f"00-{trace.trace_id}-{trace.span_id}-{flags}"
            parsed = parse_traceparent(trace.traceparent)
            assert parsed == TraceContext(trace.trace_id, trace.span_id, rate == 1.0, True)


@pytest.mark.parametrize(("received", "sent"), [("00", "00"), ("01", "01"), ("02", "02"), ("03", "03"),
                                                ("ff", "03"), ("fc", "00"), ("06", "02")])
def test_a_received_id_keeps_its_random_flag_and_unknown_flags_go_out_as_zero(received: str, sent: str) -> None:
    tracer = Tracer("svc", sampling_rate=0.5)
    with tracer.trace("GET /", f"00-{TRACE_ID}-{PARENT_ID}-{received}") as trace:
        assert trace.trace_id == TRACE_ID and Tracer.current_traceparent() == f"00-{TRACE_ID}-{trace.span_id}-{sent}"
    with tracer.trace("GET /", f"cc-{TRACE_ID}-{PARENT_ID}-{received}-later-fields") as trace:  # a later version
        assert trace.traceparent == f"00-{TRACE_ID}-{trace.span_id}-{sent}"


def test_tracestate_is_passed_on_only_beside_a_valid_traceparent() -> None:
    tracer = Tracer("svc", sampling_rate=1.0)
    with tracer.trace("GET /", VALID, " congo=t61rcWkgMzE ,rojo=00f067aa0ba902b7") as trace:
        assert trace.tracestate == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    assert tracer.trace("GET /", VALID).tracestate == ""
    assert tracer.trace("GET /", VALID, "Bad=1").tracestate == ""  # malformed: not passed on, the trace goes on
    assert tracer.trace("GET /", VALID, "Bad=1").trace_id == TRACE_ID
    for invalid in (None, "", VALID.upper(), f"ff{VALID[2:]}"):  # no valid traceparent: a new trace, no tracestate
        restarted = tracer.trace("GET /", invalid, "congo=t61rcWkgMzE")
        assert restarted.trace_id != TRACE_ID and restarted.tracestate == ""


def test_the_trace_document_shows_tracestate_only_when_there_is_one() -> None:
    tracer = Tracer("svc", sampling_rate=1.0)
    with tracer.trace("GET /with", VALID, "congo=t61rcWkgMzE"):
        pass
    with tracer.trace("GET /without", VALID):
        pass
    without, with_state = tracer.stats()["spans"]
    assert with_state["traceState"] == "congo=t61rcWkgMzE" and "traceState" not in without
    assert set(with_state) - {"traceState"} == set(without) == {
        "traceId", "name", "startTime", "durationMs", "status", "droppedSpans", "spans"}


def test_a_downstream_service_continues_the_trace() -> None:
    front = Tracer("front", sampling_rate=1.0)
    back = Tracer("back", sampling_rate=0.0)
    with front.trace("GET /") as trace:
        with front.span("call-back") as call:
            header = Tracer.current_traceparent()
        with back.trace("POST /work", traceparent=header) as downstream:
            assert downstream.trace_id == trace.trace_id
            assert downstream.parent_id == call.id
            assert downstream.sampled


# -- errors and latency metrics -----------------------------------------------------------------


def test_exceptions_and_fail_count_as_errors_and_error_rate_stays_in_range() -> None:
    tracer = Tracer("svc", sampling_rate=1.0)
    assert tracer.stats()["errorRate"] == 0.0
    raised = request(tracer, raises=True)
    failed = request(tracer, fail=True)
    request(tracer)
    request(tracer)
    assert raised.status == "error" and failed.status == "error"
    stats = tracer.stats()
    assert stats["errorCount"] == 2 and stats["totalTraces"] == 4
    assert stats["errorRate"] == pytest.approx(0.5)
    by_name = [t["status"] for t in stats["spans"]]
    assert by_name.count("error") == 2
    failed_root = next(s for s in failed.to_dict()["spans"] if s["name"] == "GET /")
    assert failed_root["status"] == "error" and failed_root["attributes"] == {"error": "bad upstream"}
    for _ in range(20):
        request(tracer, fail=True, raises=True)  # both on one trace count once
    stats = tracer.stats()
    assert stats["errorCount"] == 22 and 0.0 <= stats["errorRate"] <= 1.0
    assert stats["errorRate"] == pytest.approx(22 / 24)


def test_percentile_uses_the_nearest_rank() -> None:
    """Latencies are kept in nanoseconds and reported in milliseconds."""
    values = [n * 1_000_000 for n in range(1, 101)]
    assert _percentile(values, 0.50) == 50.0
    assert _percentile(values, 0.95) == 95.0
    assert _percentile(values, 0.99) == 99.0
    assert _percentile(values, 1.0) == 100.0
    assert _percentile(values, 0.0) == 1.0
    assert _percentile([1_000_000, 2_000_000, 3_000_000, 4_000_000], 0.5) == 2.0
    assert _percentile([1_000_000, 2_000_000, 3_000_000, 4_000_000], 0.95) == 4.0
    assert _percentile([7_500_000], 0.99) == 7.5
    assert _percentile([], 0.5) == 0.0


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.integers(0, 10**12), min_size=1, max_size=200), fraction=st.floats(0.0, 1.0))
def test_percentile_is_a_member_with_the_nearest_rank_property(values: list[int], fraction: float) -> None:
    ordered = sorted(values)
    result = _percentile(ordered, fraction)
    in_ms = [v / 1e6 for v in ordered]
    assert result in in_ms
    rank = max(math.ceil(fraction * len(ordered)), 1)
    assert sum(v <= result for v in in_ms) >= rank
    assert sum(v < result for v in in_ms) < rank
    assert _percentile(ordered, 0.5) <= _percentile(ordered, 0.95) <= _percentile(ordered, 0.99)


def test_stats_percentiles_match_known_latencies(nanoclock: FakeNanoClock) -> None:
    tracer = Tracer("svc", sampling_rate=0.0)
    latencies = [float(n) for n in range(1, 101)]
    for latency in reversed(latencies):
        with tracer.trace("GET /"):
            nanoclock.advance_ms(latency)
    stats = tracer.stats()
    assert stats["p50Latency"] == pytest.approx(50.0)
    assert stats["p95Latency"] == pytest.approx(95.0)
    assert stats["p99Latency"] == pytest.approx(99.0)
    assert stats["avgLatency"] == pytest.approx(50.5)


def test_percentiles_use_only_the_latency_window(nanoclock: FakeNanoClock) -> None:
    tracer = Tracer("svc", sampling_rate=0.0, latency_window=10)
    for latency in [1000.0] * 50 + [5.0] * 10:
        with tracer.trace("GET /"):
            nanoclock.advance_ms(latency)
    stats = tracer.stats()
    assert stats["p50Latency"] == stats["p99Latency"] == pytest.approx(5.0)
    assert stats["avgLatency"] == pytest.approx((50 * 1000 + 50) / 60)  # the average covers every request


def test_span_durations_are_exported_in_milliseconds(nanoclock: FakeNanoClock) -> None:
    tracer = Tracer("svc", sampling_rate=1.0)
    with tracer.trace("GET /"):
        with tracer.span("db"):
            nanoclock.advance_ms(12.5)
        nanoclock.advance_ms(2.5)
    exported = tracer.stats()["spans"][0]
    spans = {s["name"]: s for s in exported["spans"]}
    assert spans["db"]["durationMs"] == pytest.approx(12.5)
    assert spans["GET /"]["durationMs"] == pytest.approx(15.0)
    assert exported["durationMs"] == pytest.approx(15.0)


def test_latency_percentiles_from_real_requests_are_ordered() -> None:
    tracer = Tracer("svc", sampling_rate=0.5)
    for n in range(300):
        with tracer.trace("GET /"):
            sum(range(n * 10))  # a little real work of varying size
    stats = tracer.stats()
    assert 0.0 <= stats["p50Latency"] <= stats["p95Latency"] <= stats["p99Latency"]
    assert stats["avgLatency"] > 0.0


def test_empty_stats_are_zero() -> None:
    stats = Tracer("svc", sampling_rate=0.1).stats()
    assert stats["totalTraces"] == 0 and stats["avgLatency"] == 0.0 and stats["errorRate"] == 0.0
    assert stats["p50Latency"] == stats["p95Latency"] == stats["p99Latency"] == 0.0
    assert stats["throughput"] == 0.0 and stats["spans"] == [] and stats["samplingRate"] == 0.1


def test_active_traces_counts_open_traces() -> None:
    tracer = Tracer("svc")
    with tracer.trace("a"):
        with tracer.trace("b"):
            assert tracer.stats()["activeTraces"] == 2
        assert tracer.stats()["activeTraces"] == 1
    assert tracer.stats()["activeTraces"] == 0


# -- throughput -------------------------------------------------------------------------------------


def test_throughput_counts_recent_requests_on_the_injected_clock() -> None:
    clock = ManualClock(1_000.0)
    tracer = Tracer("svc", sampling_rate=0.0, clock=clock)
    for _ in range(30):
        request(tracer)
    assert tracer.throughput() == pytest.approx(30.0)  # uptime under 1 s counts as 1 s
    clock.advance(10.0)
    assert tracer.throughput() == pytest.approx(3.0)
    clock.advance(49.0)  # 59 s later: still inside the window
    assert tracer.throughput() == pytest.approx(30 / 59)
    clock.advance(2.0)  # 61 s later: gone
    assert tracer.throughput() == 0.0
    assert tracer.stats()["throughput"] == 0.0


def test_throughput_window_is_sixty_seconds_of_recent_requests() -> None:
    clock = ManualClock(2_000.0)
    tracer = Tracer("svc", sampling_rate=0.0, clock=clock)
    for second in range(120):
        for _ in range(2 if second < 60 else 5):
            request(tracer)
        clock.advance(1.0)
    # The last 60 seconds held 5 requests each; the older ones dropped out.
    assert tracer.throughput() == pytest.approx(5 * 59 / 60, rel=0.05)
    assert tracer.stats()["throughput"] > 0


# -- bounds ---------------------------------------------------------------------------------------


def test_max_traces_bounds_the_recent_buffer_newest_first() -> None:
    tracer = Tracer("svc", sampling_rate=1.0, max_traces=5)
    for n in range(12):
        request(tracer, f"req{n}")
    stats = tracer.stats()
    assert stats["sampledTraces"] == 12
    assert [t["name"] for t in stats["spans"]] == ["req11", "req10", "req9", "req8", "req7"]
    assert [t["name"] for t in tracer.stats(traces=2)["spans"]] == ["req11", "req10"]


def test_max_spans_caps_spans_per_trace_and_counts_the_rest_as_dropped() -> None:
    tracer = Tracer("svc", sampling_rate=1.0, max_spans=3)
    with tracer.trace("GET /") as trace:
        for n in range(10):
            with tracer.span(f"s{n}"):
                pass
    assert len(trace.spans) == 3
    assert trace.dropped_spans == 7  # ten children, three kept; the root is never dropped
    exported = tracer.stats()["spans"][0]
    assert len(exported["spans"]) == 4 and exported["droppedSpans"] == 7
    assert [span["name"] for span in exported["spans"]] == ["GET /", "s0", "s1", "s2"]


# -- tasks that outlive their trace ------------------------------------------------------------------


def test_a_span_opened_in_a_task_that_outlives_its_trace_is_a_no_op() -> None:
    async def scenario() -> None:
        tracer = Tracer("svc", sampling_rate=1.0)
        trace_done = asyncio.Event()
        opened: list[Any] = []

        async def background() -> None:
            await trace_done.wait()
            with tracer.span("late") as span:
                span.set("x", 1)
                opened.append(span)

        with tracer.trace("GET /") as trace:
            task = asyncio.create_task(background())
            await asyncio.sleep(0)
        spans_before = len(trace.spans)
        trace_done.set()
        await task
        assert len(opened) == 1 and not isinstance(opened[0], Span)
        assert len(trace.spans) == spans_before
        assert tracer.stats()["totalTraces"] == 1

    run(scenario())


def test_a_span_still_open_when_its_trace_ends_is_not_recorded_into_the_finished_trace() -> None:
    async def scenario() -> None:
        tracer = Tracer("svc", sampling_rate=1.0)
        trace_done = asyncio.Event()

        async def background() -> None:
            with tracer.span("outlives"):
                await trace_done.wait()

        with tracer.trace("GET /") as trace:
            task = asyncio.create_task(background())
            await asyncio.sleep(0)
        exported_before = tracer.stats()["spans"][0]
        trace_done.set()
        await task  # must not crash
        assert tracer.stats()["spans"][0] == exported_before  # a finished trace does not change
        assert all(span.trace is None for span in trace.spans)  # and points at nothing (no cycle)

    run(scenario())


def test_a_child_span_opened_after_the_trace_ended_under_a_still_open_span_is_a_no_op() -> None:
    async def scenario() -> None:
        tracer = Tracer("svc", sampling_rate=1.0)
        trace_done = asyncio.Event()
        late: list[Any] = []

        async def background() -> None:
            with tracer.span("outlives"):
                await trace_done.wait()
                with tracer.span("opened-after-the-end") as span:
                    late.append(span)

        with tracer.trace("GET /"):
            task = asyncio.create_task(background())
            await asyncio.sleep(0)
        trace_done.set()
        await task
        assert len(late) == 1 and not isinstance(late[0], Span)

    run(scenario())


# -- memory ------------------------------------------------------------------------------------------


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disables the cyclic GC and keeps whatever it would collect in gc.garbage for inspection."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
        gc.collect()


def _live(kind: type) -> int:
    """How many instances of `kind` the GC can see right now."""
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


def _traffic(tracer: Tracer, count: int) -> None:
    """Requests of every shape: plain, with nested spans, failed, raising."""
    for n in range(count):
        try:
            with tracer.trace(f"req{n}") as trace:
                with tracer.span("outer") as outer:
                    outer.set("n", n)
                    with tracer.span("inner"):
                        pass
                _ = trace.traceparent
                if n % 3 == 0:
                    trace.fail()
                if n % 5 == 0:
                    raise ValueError("boom")
        except ValueError:
            pass


@pytest.mark.parametrize("rate", [0.0, 1.0], ids=["unsampled", "sampled"])
def test_finished_traces_are_freed_by_reference_counting(rate: float) -> None:
    with gc_paused():
        baseline_traces, baseline_spans = _live(Trace), _live(Span)
        tracer = Tracer("svc", sampling_rate=rate, max_traces=3)
        _traffic(tracer, 200)
        kept = len(tracer._recent)
        assert kept == (3 if rate else 0)
        # Nothing but the traces the tracer keeps on purpose is still alive, without any GC run.
        assert _live(Trace) - baseline_traces == kept
        assert _live(Span) - baseline_spans == kept * 2  # outer and inner of each kept trace (a trace is its own root)
        gc.collect()
        leaked = [obj for obj in gc.garbage if isinstance(obj, (Trace, Span))]
        assert leaked == []


@pytest.mark.parametrize("rate", [0.0, 1.0], ids=["unsampled", "sampled"])
def test_finished_traces_with_spans_in_child_tasks_are_freed_by_reference_counting(rate: float) -> None:
    """A request that fans out with asyncio.gather/create_task must not leave a cycle behind."""

    async def scenario(tracer: Tracer) -> None:
        async def worker() -> None:
            with tracer.span("task-span"):
                await asyncio.sleep(0)

        for _ in range(50):
            with tracer.trace("GET /"):
                await asyncio.gather(worker(), worker())
                await asyncio.create_task(worker())

    with gc_paused():
        baseline_traces, baseline_spans = _live(Trace), _live(Span)
        tracer = Tracer("svc", sampling_rate=rate, max_traces=2)
        run(scenario(tracer))
        kept = len(tracer._recent)
        assert _live(Trace) - baseline_traces == kept
        assert _live(Span) - baseline_spans == kept * 3  # three task spans per kept trace (a trace is its own root)
        gc.collect()
        leaked = [obj for obj in gc.garbage if isinstance(obj, (Trace, Span))]
        assert leaked == [], f"{len(leaked)} traces/spans were only freeable by the cyclic GC"


def test_the_tracer_makes_its_spans_and_traces_as_their_constructors_would() -> None:
    """Tracer.span and Tracer.trace build their objects without calling the classes (a frame saved
    per span): every field the constructor sets is set, to the same value."""

    def fields(obj: object, cls: type) -> dict[str, Any]:
        names = [name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())
                 if name not in ("id", "start", "end", "_token", "trace", "spans")]
        return {name: getattr(obj, name) for name in names if hasattr(obj, name)}

    tracer = Tracer("t", sampling_rate=1.0)
    trace = tracer.trace("GET /", None)
    made = Trace(tracer, "GET /", trace.trace_id, trace.parent_id, trace.sampled, trace.random, trace.tracestate)
    assert fields(trace, Trace) == fields(made, Trace) and set(fields(made, Trace)) >= {"status", "tracer"}
    continued = tracer.trace("GET /", VALID, "congo=1")
    made = Trace(tracer, "GET /", TRACE_ID, int(PARENT_ID, 16), True, False, "congo=1")
    assert fields(continued, Trace) == fields(made, Trace)
    assert trace.trace is trace and trace.spans == [] and made.spans == []
    with trace:
        span = tracer.span("op")
        assert isinstance(span, Span)
        built = Span(trace, "op", trace.id)
        assert fields(span, Span) == fields(built, Span) and span.trace is built.trace is trace
        with span:
            span.set("hit", True)
            span.set("size", 3)
    assert trace.to_dict()["spans"][1]["attributes"] == {"hit": True, "size": 3}
