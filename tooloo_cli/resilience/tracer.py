"""Distributed tracing with W3C Trace Context (Level 2), parent-based head sampling and request metrics.

Every request is measured (latency percentiles, throughput, error rate); only sampled
traces keep their spans, in a bounded buffer of recent traces. Spans nest through a
context variable, so code deep in a request opens a child span without passing anything.

    tracer = Tracer("budget", sampling_rate=0.1)
    with tracer.trace("POST /api/v1/providers/burst", traceparent=header, tracestate=state) as trace:
        with tracer.span("cache-lookup") as span:
            span.set("hit", False)
        outgoing_headers = {"traceparent": tracer.current_traceparent()}
        if trace.tracestate:                 # "" when the request carried none (or none valid)
            outgoing_headers["tracestate"] = trace.tracestate
    tracer.snapshot().latency.count          # requests measured; stats() is the snapshot's JSON
    tracer.stats()["p99Latency"]

Sampling follows the parent's flag when a valid `traceparent` arrives; otherwise the
decision is a ratio of the trace id, so every service decides the same way for one trace.
A trace is its own root span: its id, parent and duration are the request's. Latencies go
into a histogram over every request since start, and the percentiles are of the last
`latency_window` requests.

The headers, as https://www.w3.org/TR/trace-context-2/ has them:

- `traceparent` (`parse_traceparent`): lowercase hex only, version ff invalid, version 00
  exactly 55 characters; a higher version is read by its first 55 characters when the
  56th is "-" (or there is none), and whatever follows is not looked at. All-zero ids are
  invalid. Of the flags, sampled (01) and random-trace-id (02) are known; every other bit
  is sent as 0, since what goes out is always version 00. An invalid header, or several
  `traceparent` headers on one request (the caller passes None or "" then), starts a new trace.
- random-trace-id: set on the ids tooloo makes (128 random bits); on a received id it
  goes on as it came, set or not.
- `tracestate` (`parse_tracestate`), read only beside a valid `traceparent`: several
  headers are joined with "," in order by the caller. Members are `key=value` with the
  spec's key (`[a-z0-9][a-z0-9_*/@-]{0,255}`, so `tenant@system` too) and value grammar;
  empty members and the optional whitespace around members are dropped, a repeated key
  keeps its first (left-most) member. A malformed member or more than 32 members (the
  grammar counts empty ones too) makes the whole header invalid, and none is passed on. What is passed on is at most 512 characters
  (the least the spec asks be propagated): beyond that, whole members are dropped, those
  over 128 characters first (from the right), then from the end. tooloo adds no member.
"""

from __future__ import annotations

import math
import re
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from random import getrandbits
from time import perf_counter_ns
from typing import Any, NamedTuple

from tooloo_cli.resilience.histogram import LATENCY_BOUNDS, LATENCY_BOUNDS_NS, Histogram

# The first 55 characters of any version's traceparent: version, trace-id, parent-id, flags.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACEPARENT_LENGTH = 55
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_SAMPLED_FLAG = 0x01
_RANDOM_FLAG = 0x02
# One tracestate list-member (OWS around it already stripped): key "=" value.
_TRACESTATE_MEMBER = re.compile(
    r"([a-z0-9][a-z0-9_\-*/@]{0,255})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_TRACESTATE_MEMBERS = 32
_TRACESTATE_LENGTH = 512
_TRACESTATE_LONG_MEMBER = 128
_OWS = " \t"
_THROUGHPUT_WINDOW = 60


class TraceContext(NamedTuple):
    """The parts of a `traceparent` header that tooloo reads."""

    trace_id: str
    parent_id: str
    sampled: bool
    random: bool = False  # the Level 2 random-trace-id flag


def parse_traceparent(header: str | None) -> TraceContext | None:
    """The context in a W3C `traceparent` header, or None when it is absent or invalid.

    >>> parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")
    TraceContext(trace_id='4bf92f3577b34da6a3ce929d0e0e4736', parent_id='00f067aa0ba902b7', sampled=True, random=True)
    """
    fields = _traceparent_fields(header) if header else None
    if fields is None:
        return None
    trace_id, parent_id, flags = fields
    return TraceContext(trace_id, parent_id, flags & _SAMPLED_FLAG == _SAMPLED_FLAG,
                        flags & _RANDOM_FLAG == _RANDOM_FLAG)


def _traceparent_fields(header: str) -> tuple[str, str, int] | None:
    """(trace-id, parent-id, trace-flags) of a non-empty `traceparent`, or None when it is invalid.

    Tracer.trace reads these, not a TraceContext: making the named tuple is a tenth of a trace.
    """
    if len(header) != _TRACEPARENT_LENGTH:  # a valid 55-character header has no optional whitespace to strip
        header = header.strip(_OWS)
    match = _TRACEPARENT.match(header)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    # Version 00 is exactly 55 characters; a later one may add fields, each after a "-".
    if len(header) != _TRACEPARENT_LENGTH and (version == "00" or header[_TRACEPARENT_LENGTH] != "-"):
        return None
    return trace_id, parent_id, int(flags, 16)


def trace_flags(sampled: bool, random: bool) -> int:
    """The trace-flags byte of a trace: sampled (01) and random-trace-id (02), as traceparent carries it."""
    return (_SAMPLED_FLAG if sampled else 0) | (_RANDOM_FLAG if random else 0)


def format_traceparent(trace_id: str, span_id: str, sampled: bool, random: bool = False) -> str:
    """A version-00 `traceparent` header; of the flags, only sampled and random-trace-id can be set."""
    return f"00-{trace_id}-{span_id}-{('03' if sampled else '02') if random else ('01' if sampled else '00')}"


def parse_tracestate(header: str | None) -> str:
    """The `tracestate` to pass on for a received one (several headers joined with ","), "" for none.

    Normalized: valid members only, without whitespace or empty members, one per key, at
    most 512 characters (see the module's docstring). "" when it is malformed as a whole.

    >>> parse_tracestate(" rojo=00f067aa0ba902b7 ,, congo=t61rcWkgMzE,rojo=2")
    'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE'
    """
    # The grammar counts empty members too: counted first, in C, this bounds the loop (a header of
    # 16,000 commas would otherwise cost half a millisecond to skip through).
    if not header or header.count(",") >= _TRACESTATE_MEMBERS:
        return ""
    members: list[str] = []
    keys: set[str] = set()
    for member in header.split(","):
        member = member.strip(_OWS)
        if not member:  # empty and whitespace-only members are allowed: they come of joining headers
            continue
        match = _TRACESTATE_MEMBER.fullmatch(member)
        if match is None:
            return ""
        key = match.group(1)
        if key not in keys:  # the spec lets a vendor drop a repeated key; the left-most is the latest
            keys.add(key)
            members.append(member)
    state = ",".join(members)
    return state if len(state) <= _TRACESTATE_LENGTH else _truncate_tracestate(members)


def _truncate_tracestate(members: list[str]) -> str:
    """`members` cut to `_TRACESTATE_LENGTH` characters joined, by whole members, as the spec orders:
    members over 128 characters go first (right-most first), then members from the end."""
    length = sum(map(len, members)) + len(members) - 1
    for member in [member for member in reversed(members) if len(member) > _TRACESTATE_LONG_MEMBER]:
        if length <= _TRACESTATE_LENGTH:
            break
        members.remove(member)  # keys are unique, and so are the members
        length -= len(member) + 1
    while length > _TRACESTATE_LENGTH:
        length -= len(members.pop()) + 1
    return ",".join(members)


class Span:
    """One timed operation inside a sampled trace; a context manager.

    Ids are kept as integers and formatted as hex only when they leave the process
    (a header, the observability document): formatting is a third of a span's cost.
    """

    __slots__ = ("trace", "name", "id", "parent_id", "start", "end", "status", "attributes", "_token")

    def __init__(self, trace: Trace, name: str, parent_id: int | None) -> None:
        # Tracer.span makes its spans without this (keep the two alike).
        self.trace: Trace | None = trace
        self.name = name
        self.id = getrandbits(64) or 1
        self.parent_id = parent_id
        self.status = "ok"
        self.attributes: dict[str, Any] | None = None

    def set(self, key: str, value: Any) -> None:
        """Records an attribute (`hit=True`, `status=200`) on the span."""
        attributes = self.attributes
        if attributes is None:  # most spans record one attribute: the dict is made with it
            self.attributes = {key: value}
        else:
            attributes[key] = value

    def __enter__(self) -> Span:
        self._token = _current_span.set(self)
        self.start = perf_counter_ns()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.end = perf_counter_ns()
        _current_span.reset(self._token)
        self._token = None  # the token holds the context, and the context the trace
        if exc_type is not None:
            self.status = "error"
            self.set("error", exc_type.__name__)
        trace = self.trace
        if trace is None or trace.finished:  # closed after its trace ended: nothing to record into
            self.trace = None
            return
        if len(trace.spans) < trace.max_spans:
            trace.spans.append(self)
        else:
            trace.dropped_spans += 1

    @property
    def span_id(self) -> str:
        return f"{self.id:016x}"

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "spanId": self.span_id,
            "parentId": None if self.parent_id is None else f"{self.parent_id:016x}",
            "name": self.name,
            "durationMs": self.duration_ms,
            "status": self.status,
            "attributes": self.attributes or {},
        }


class _NoopSpan:
    """Stands in for a span of an unsampled trace: costs nothing, records nothing."""

    __slots__ = ()

    def set(self, key: str, value: Any) -> None:
        return None

    def __enter__(self) -> _NoopSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


_NOOP_SPAN = _NoopSpan()
_new_span = object.__new__


class Trace(Span):
    """One request through this service. A trace is its own root span (one object and one
    context variable per request, which is most of what tracing costs); the spans under it
    are kept when it is sampled.

    `random` is the random-trace-id flag its headers carry; `tracestate` the `tracestate` it
    passes on (the received one, normalized: "" when there is none).
    """

    __slots__ = ("tracer", "trace_id", "sampled", "random", "tracestate", "spans", "max_spans", "dropped_spans",
                 "finished")

    def __init__(self, tracer: Tracer, name: str, trace_id: str, parent_id: int | None, sampled: bool,
                 random: bool = False, tracestate: str = "") -> None:
        # The root's own fields, set here rather than through Span.__init__: a call saved per request.
        # Tracer.trace runs this on an object it made itself (`_init_trace`): one frame, not two.
        self.trace = self
        self.name = name
        self.id = getrandbits(64) or 1
        self.parent_id = parent_id
        self.status = "ok"
        self.attributes = None
        self.tracer = tracer
        self.trace_id = trace_id
        self.sampled = sampled
        self.random = random
        self.tracestate = tracestate
        self.spans: list[Span] = []
        self.max_spans = tracer.max_spans
        self.dropped_spans = 0
        self.finished = False

    @property
    def traceparent(self) -> str:
        """The header for a call made from the current span of this trace."""
        span = _current_span.get()
        span_id = span.id if span is not None and span.trace is self else self.id
        return format_traceparent(self.trace_id, f"{span_id:016x}", self.sampled, self.random)

    def fail(self, reason: str = "error") -> None:
        """Marks the trace as an error (an exception does this by itself)."""
        self.status = "error"
        self.set("error", reason)

    def __enter__(self) -> Trace:
        self.tracer._active += 1
        self._token = _current_span.set(self)
        self.start = perf_counter_ns()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.end = perf_counter_ns()
        _current_span.reset(self._token)
        self._token = None
        self.finished = True
        if exc_type is not None:
            self.status = "error"
            self.set("error", exc_type.__name__)
        # Spans point back at their trace (and the trace at itself) while it runs; cutting
        # that now lets reference counting free every request's trace without the cyclic
        # GC. A span still open keeps its pointer until it closes, and then records nothing.
        self.trace = None
        for span in self.spans:
            span.trace = None
        self.tracer._finish(self)

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "traceId": self.trace_id,
            "name": self.name,
            "startTime": self.tracer.wall_clock(self.start),
            "durationMs": self.duration_ms,
            "status": self.status,
            "droppedSpans": self.dropped_spans,
            "spans": [Span.to_dict(self), *(span.to_dict() for span in self.spans)],
        }
        if self.tracestate:
            document["traceState"] = self.tracestate
        return document


_current_span: ContextVar[Span | None] = ContextVar("tooloo_span", default=None)


# Tracer.trace makes a trace as Trace(...) would, without the class call's extra frame.
_init_trace = Trace.__init__


class Tracer:
    """Traces requests of one service and keeps metrics over every one of them.

    `latency_window` recent latencies feed the percentiles; `max_traces` recent sampled
    traces are kept with at most `max_spans` spans each (the rest are counted as dropped).
    """

    def __init__(
        self,
        service: str,
        sampling_rate: float = 0.1,
        *,
        max_traces: int = 50,
        max_spans: int = 256,
        latency_window: int = 1024,
        clock: Any = time.monotonic,
    ) -> None:
        if not 0.0 <= sampling_rate <= 1.0:
            raise ValueError(f"sampling_rate must be within 0..1, got {sampling_rate}")
        self.service = service
        self.sampling_rate = sampling_rate
        self.max_spans = max_spans
        # A trace is sampled when the low 64 bits of its id fall below this bound.
        self._sample_bound = int(sampling_rate * (1 << 64))
        self._clock = clock
        self._started = clock()
        self._wall_offset = time.time() - perf_counter_ns() / 1e9
        self._active = 0
        self._total = 0
        self._sampled = 0
        self._errors = 0
        # Latencies are kept in integer nanoseconds and turned into ms (or s) only when reported.
        self._latency_sum = 0
        self._latencies: deque[int] = deque(maxlen=latency_window)
        self._latency_buckets = [0] * len(LATENCY_BOUNDS)
        self._recent: deque[Trace] = deque(maxlen=max_traces)
        # Requests per second over the last minute: the current second is counted in
        # `_this_second`, and moved into its ring slot only when the next second begins.
        self._per_second = [0] * _THROUGHPUT_WINDOW
        self._second_of_slot = [-1] * _THROUGHPUT_WINDOW
        self._second = int(self._started)
        self._second_end = self._second + 1
        self._this_second = 0
        # Called with each sampled trace as it finishes (an exporter's queue: it must not block).
        self.on_sampled: Callable[[Trace], None] | None = None

    def wall_clock(self, perf_ns: int) -> float:
        """Epoch seconds of a perf_counter_ns reading (no wall-clock read on the request path)."""
        return self._wall_offset + perf_ns / 1e9

    def trace(self, name: str, traceparent: str | None = None, tracestate: str | None = None) -> Trace:
        """A new trace for one request, continuing `traceparent` (and passing `tracestate` on) when it is valid.

        `tracestate` is the request's `tracestate` headers joined with ","; it is read only
        beside a valid `traceparent`. A request with several `traceparent` headers has none
        valid: pass None (or ""), and a new trace begins.
        """
        trace = _new_span(Trace)
        if traceparent:
            parent = _traceparent_fields(traceparent)
            if parent is not None:
                trace_id, parent_id, flags = parent
                _init_trace(trace, self, name, trace_id, int(parent_id, 16), flags & _SAMPLED_FLAG == _SAMPLED_FLAG,
                            flags & _RANDOM_FLAG == _RANDOM_FLAG, parse_tracestate(tracestate) if tracestate else "")
                return trace
        # 128 random bits: the random-trace-id flag holds for every id made here.
        bits = getrandbits(128) or 1
        _init_trace(trace, self, name, f"{bits:032x}", None, (bits & 0xFFFFFFFFFFFFFFFF) < self._sample_bound,
                    True, "")
        return trace

    def span(self, name: str) -> Span | _NoopSpan:
        """A child of the current span; a no-op outside a trace or in an unsampled one."""
        parent = _current_span.get()
        # A task spawned inside a request inherits its context and may outlive the trace.
        trace = parent.trace if parent is not None else None
        if trace is None or trace.finished or not trace.sampled:
            return _NOOP_SPAN
        # Span.__init__, inlined: a sampled request opens several spans, and a call frame is a
        # tenth of one (`tooloo bench modules`: traced request).
        span = _new_span(Span)
        span.trace = trace
        span.name = name
        span.id = getrandbits(64) or 1
        span.parent_id = parent.id
        span.status = "ok"
        span.attributes = None
        return span

    @staticmethod
    def current() -> Trace | None:
        """The trace of the running request, if any (None once it has finished)."""
        span = _current_span.get()
        trace = span.trace if span is not None else None
        return None if trace is None or trace.finished else trace

    @staticmethod
    def current_traceparent() -> str | None:
        """The `traceparent` to send on an outgoing call, or None outside a (running) trace."""
        trace = Tracer.current()
        return trace.traceparent if trace is not None else None

    def _finish(self, trace: Trace) -> None:
        self._active -= 1
        self._total += 1
        latency = trace.end - trace.start
        self._latency_sum += latency
        self._latencies.append(latency)
        self._latency_buckets[bisect_left(LATENCY_BOUNDS_NS, latency)] += 1
        if trace.status != "ok":
            self._errors += 1
        if trace.sampled:
            self._sampled += 1
            self._recent.append(trace)
            if self.on_sampled is not None:
                self.on_sampled(trace)
        now = self._clock()
        if now >= self._second_end:
            self._next_second(now)
        self._this_second += 1

    def _next_second(self, now: float) -> None:
        """Files the count of the second that ended, and starts counting the one of `now`."""
        slot = self._second % _THROUGHPUT_WINDOW
        self._second_of_slot[slot] = self._second
        self._per_second[slot] = self._this_second
        self._second = int(now)
        self._second_end = self._second + 1
        self._this_second = 0

    def throughput(self) -> float:
        """Requests per second over the last 60 s (over the uptime while it is shorter)."""
        now = self._clock()
        current = int(now)
        recent = sum(
            count
            for count, second in zip(self._per_second, self._second_of_slot)
            if current - _THROUGHPUT_WINDOW < second <= current
        )
        if current - _THROUGHPUT_WINDOW < self._second <= current:
            recent += self._this_second
        window = min(float(_THROUGHPUT_WINDOW), max(now - self._started, 1.0))
        return recent / window

    def snapshot(self, traces: int | None = None) -> TracerSnapshot:
        """The metrics now, with the `traces` most recent sampled traces (all that are kept by default)."""
        ordered = sorted(self._latencies)
        recent = list(self._recent)[-traces:] if traces else list(self._recent)
        total = self._total
        return TracerSnapshot(
            service=self.service, sampling_rate=self.sampling_rate, active=self._active, total=total,
            sampled=self._sampled, errors=self._errors,
            latency=Histogram.from_buckets(self._latency_buckets, self._latency_sum / 1e9),
            avg_latency_ms=self._latency_sum / total / 1e6 if total else 0.0,
            p50_latency_ms=_percentile(ordered, 0.50), p95_latency_ms=_percentile(ordered, 0.95),
            p99_latency_ms=_percentile(ordered, 0.99), throughput=self.throughput(),
            recent=tuple(reversed(recent)),
        )

    def stats(self, traces: int | None = None) -> dict[str, Any]:
        """The snapshot as plain numbers (latencies in ms), with recent sampled traces under `spans`."""
        return self.snapshot(traces).to_dict()


@dataclass(frozen=True, slots=True)
class TracerSnapshot:
    """A Tracer's metrics at one moment; `stats()` is its JSON.

    Counters since start: total (requests), sampled, errors, and `latency`, the histogram
    of every request's latency in seconds. Gauges: active (requests in flight), the
    average latency (of every request) and the percentiles (of the latency window) in ms,
    throughput (requests/s over the last minute). `recent` holds the latest sampled
    traces, newest first.
    """

    service: str
    sampling_rate: float
    active: int
    total: int
    sampled: int
    errors: int
    latency: Histogram
    avg_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    throughput: float
    recent: tuple[Trace, ...]

    @property
    def error_rate(self) -> float:
        return self.errors / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "samplingRate": self.sampling_rate,
            "activeTraces": self.active,
            "totalTraces": self.total,
            "sampledTraces": self.sampled,
            "errorCount": self.errors,
            "avgLatency": self.avg_latency_ms,
            "p50Latency": self.p50_latency_ms,
            "p95Latency": self.p95_latency_ms,
            "p99Latency": self.p99_latency_ms,
            "throughput": self.throughput,
            "errorRate": self.error_rate,
            "spans": [trace.to_dict() for trace in self.recent],
        }


def _percentile(ordered: list[int], fraction: float) -> float:
    """The nearest-rank percentile of sorted nanosecond values, in ms (0.0 for none)."""
    if not ordered:
        return 0.0
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)] / 1e6
