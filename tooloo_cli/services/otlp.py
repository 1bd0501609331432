"""OTLP/HTTP export of a service's sampled traces: protobuf, batched in the background, bounded.

    settings = export_settings(stack.otlp_endpoint, os.environ, service="budget", instance="budget")
    if settings is not None:                     # None: no endpoint anywhere, no export
        exporter = TraceExporter(settings, tracer)  # ImportError without opentelemetry-proto
        tracer.on_sampled = exporter.offer       # called as each sampled trace finishes
        await exporter.start()                   # on the service's loop (a startup hook)
        exporter.snapshot().exported_spans       # the counters, for the observability document and /metrics
        await exporter.close()                   # a shutdown hook: flushes what is queued, bounded in time

Where to: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given; else OTEL_EXPORTER_OTLP_ENDPOINT, or
else `[stack] otlp_endpoint`, with /v1/traces added to its path. The environment wins over
the file, as TOOLOO_* settings do: the deployment that starts the stack knows its collector.
OTEL_EXPORTER_OTLP_(TRACES_)HEADERS are sent with every export (`name=value,…`, values
percent-encoded); they may hold credentials, so no log, error or document ever shows them.
OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT bounds one batch's export, retries included (ms, 10 s by
default); OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE names the CA file an https:// collector is
checked against (the system's CAs by default). A signal-specific variable wins over the
general one. OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn export off whatever the
endpoint; an exporter other than otlp, or a protocol other than http/protobuf
(OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: grpc, http/json), is refused rather than sent in the
wrong form. A value that cannot be used stops the service (exit 2) with a line that says so.

What is sent: one ResourceSpans per batch, its resource `service.name` (the service's name
unless OTEL_SERVICE_NAME or `service.name` in OTEL_RESOURCE_ATTRIBUTES says otherwise; the
first wins), `service.instance.id` (replica@host), `service.version` and the telemetry.sdk.*
attributes, then what OTEL_RESOURCE_ATTRIBUTES adds. A trace's root is its SERVER span,
named "{http.request.method} {http.route}" when the middleware recorded both; a child span
that records `http.request.method` is a call to a sibling (upstream.py), a CLIENT span named
by its method; every other span is INTERNAL. Ids, parents, times, attributes and the trace's
`tracestate` are the tracer's own, so a trace stays linked across services; `flags` carry
the trace flags and whether the parent is remote (a root's, from its traceparent). A span that
failed has status ERROR (a CLIENT span also for a 4xx answer), with `error.type`.

Contract for the request path: `offer` only appends to a bounded queue (2048 spans); a trace
that does not fit is dropped whole and counted. One background task on the service's loop
takes batches (512 spans, or what came within 1 s), encodes them in slices that give the
loop back between them, and POSTs each as application/x-protobuf, one at a time, within the
timeout. 429, 502, 503, 504 and a connection that fails are tried again, 3 attempts at most,
with backoff (Retry-After honoured within the deadline); then, or on any other answer, the
batch is dropped and counted, and the next batch waits 1 s (doubled while batches keep
failing, up to 30 s, while the full queue drops what comes by count). Nothing of the collector's ever raises into the service or
waits on a request: a dead or hanging collector costs spans, by count, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from tooloo_cli import __version__
from tooloo_cli.config.loader import otlp_endpoint_problem
from tooloo_cli.exposition import Exposition
from tooloo_cli.resilience.tracer import trace_flags
from tooloo_cli.services.wire import _FORBIDDEN_IN_VALUE as FORBIDDEN_IN_VALUE
from tooloo_cli.services.wire import _TOKEN as HEADER_NAME
from tooloo_cli.services.wire import WireClient, WireError

if TYPE_CHECKING:
    from tooloo_cli.resilience import Span, Trace, Tracer

logger = logging.getLogger("tooloo.services.otlp")

TRACES_PATH = "/v1/traces"
# Span.flags (trace.proto's SpanFlags): the W3C trace flags in the low byte, then whether the parent is remote.
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
DEFAULT_TIMEOUT = 10.0  # seconds: OTEL_EXPORTER_OTLP_TIMEOUT's default
QUEUE_SPANS = 2048  # the queue's bound, as the OpenTelemetry SDK's batch processor's
BATCH_SPANS = 512  # at most this many spans in one export
BATCH_SECONDS = 1.0  # a span waits at most this long for its batch to fill
SLICE_SPANS = 64  # spans encoded between two yields to the loop: no request waits for a whole batch
ATTEMPTS = 3  # tries of one batch, within its timeout
BACKOFF_SECONDS = 0.25  # before the second try; doubled for each further one
PAUSE_SECONDS = 1.0  # after a batch the collector failed, before the next; doubled while they keep failing
MAX_PAUSE_SECONDS = 30.0
SHUTDOWN_SECONDS = 1.0  # what a service's exit may spend sending what is left
RETRYABLE = frozenset({429, 502, 503, 504})  # the OTLP specification's
WITHHELD = "unavailable"  # what a remote reader sees instead of an address or an error's text


class ExportConfigError(ValueError):
    """An OTEL_* variable (or the endpoint) that cannot be used; the text never holds a header's value."""


@dataclass(frozen=True)
class ExportSettings:
    """Where and how one service exports: resolved from the environment and [stack] otlp_endpoint."""

    url: str  # the traces endpoint, shown in the observability document
    source: str  # the variable or setting it came from
    host: str
    port: int
    target: bytes  # the request target: path (and nothing else: no query)
    tls: bool
    headers: tuple[tuple[bytes, bytes], ...] = field(repr=False)  # may hold credentials
    timeout: float
    certificate: str | None
    resource: dict[str, str | int | float | bool]


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """(name, value) of the first of `names` set to something in `environ`."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def traces_endpoint(stack_endpoint: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(URL, where it came from) of the traces endpoint, or None when nothing asks for export."""
    if (given := _first(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) is not None:
        name, url = given
        if (problem := otlp_endpoint_problem(url)) is not None:
            raise ExportConfigError(f"{name} {problem}")
        return url, name
    given = _first(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
    name, base = given if given is not None else ("[stack] otlp_endpoint", stack_endpoint.strip())
    if not base:
        return None
    if (problem := otlp_endpoint_problem(base)) is not None:
        raise ExportConfigError(f"{name} {problem}")
    return base.rstrip("/") + TRACES_PATH, name


def parse_pairs(text: str, variable: str, *, secret: bool) -> list[tuple[str, str]]:
    """The `key=value,…` pairs of an OTEL_* list variable, values percent-decoded (W3C Baggage's form).

    A malformed entry is an ExportConfigError naming its position; a secret's text is never repeated.
    """
    pairs = []
    for position, entry in enumerate(text.split(","), 1):
        if not entry.strip():
            continue
        key, equals, value = entry.partition("=")
        key = key.strip()
        if not equals or not key:
            shown = "" if secret else f" ({entry.strip()!r})"
            raise ExportConfigError(f"{variable}: entry {position}{shown} is not key=value")
        pairs.append((key, unquote(value.strip())))
    return pairs


def _headers(environ: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """The headers to send, checked as the services' client would check them at each export."""
    given = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    if given is None:
        return ()
    variable, text = given
    headers = []
    for position, (name, value) in enumerate(parse_pairs(text, variable, secret=True), 1):
        raw_name, raw_value = name.lower().encode("latin-1", "replace"), value.encode("utf-8")
        if not HEADER_NAME.fullmatch(raw_name) or FORBIDDEN_IN_VALUE.search(raw_value):
            raise ExportConfigError(f"{variable}: header {position} is not a header name and value "
                                    "(a token, then no CR, LF or NUL)")
        headers.append((raw_name, raw_value))
    return tuple(headers)


def _timeout(environ: Mapping[str, str]) -> float:
    given = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    if given is None:
        return DEFAULT_TIMEOUT
    variable, text = given
    try:
        milliseconds = float(text)
    except ValueError:
        milliseconds = -1.0
    if not 0 < milliseconds <= 600_000:  # NaN fails this too
        raise ExportConfigError(f"{variable} is {text!r}: milliseconds, more than 0 and at most 600000")
    return milliseconds / 1000


def resource_attributes(environ: Mapping[str, str], service: str, instance: str) -> dict[str, str]:
    """The resource's attributes: tooloo's, then OTEL_RESOURCE_ATTRIBUTES', then OTEL_SERVICE_NAME."""
    attributes = {"service.name": service, "service.instance.id": f"{instance}@{socket.gethostname()}",
                  "service.version": __version__, "telemetry.sdk.name": "tooloo",
                  "telemetry.sdk.language": "python", "telemetry.sdk.version": __version__}
    given = environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    attributes.update(parse_pairs(given, "OTEL_RESOURCE_ATTRIBUTES", secret=False))
    if name := environ.get("OTEL_SERVICE_NAME", "").strip():
        attributes["service.name"] = name
    return attributes


def export_settings(stack_endpoint: str, environ: Mapping[str, str], *, service: str,
                    instance: str) -> ExportSettings | None:
    """What service `service` (replica `instance`) exports to, None for no export; ExportConfigError."""
    if not _export_wanted(environ):
        return None
    found = traces_endpoint(stack_endpoint, environ)
    if found is None:
        return None
    url, source = found
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    certificate = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")
    return ExportSettings(
        url=url, source=source, host=parts.hostname or "", port=parts.port or (443 if tls else 80),
        target=(parts.path or "/").encode("utf-8"), tls=tls, headers=_headers(environ), timeout=_timeout(environ),
        certificate=certificate[1] if certificate is not None and tls else None,
        resource=dict(resource_attributes(environ, service, instance)))


def _export_wanted(environ: Mapping[str, str]) -> bool:
    """False when the environment turns tracing off (OTEL_SDK_DISABLED=true, OTEL_TRACES_EXPORTER=none);
    ExportConfigError for an exporter or a protocol tooloo does not speak, rather than exporting otherwise."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    given = _first(environ, "OTEL_TRACES_EXPORTER")
    if given is not None:
        exporters = {name.strip().lower() for name in given[1].split(",")} - {""}
        if exporters == {"none"}:
            return False
        if exporters != {"otlp"}:
            raise ExportConfigError(f"OTEL_TRACES_EXPORTER is {given[1]!r}; tooloo's services export over OTLP "
                                    "only: otlp (the default), or none for no export")
    protocol = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol is not None and protocol[1].lower() != "http/protobuf":
        raise ExportConfigError(f"{protocol[0]} is {protocol[1]!r}; tooloo's services send OTLP over HTTP as "
                                "protobuf only: http/protobuf (the default), to the collector's HTTP port (4318)")
    return True


def _tls_context(settings: ExportSettings) -> Any:
    """The client side of TLS to the collector: the system's CAs, or the one file the settings name."""
    import ssl

    try:
        return ssl.create_default_context(cafile=settings.certificate)
    except (OSError, ssl.SSLError) as exc:
        raise ExportConfigError(f"the CA file {settings.certificate} cannot be used: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None


@dataclass(frozen=True, slots=True)
class ExportSnapshot:
    """The exporter's counters at one moment (the observability document's `traceExport`, and /metrics).

    Counters since start, in spans: exported_spans (the collector took them), dropped_queue_full_spans
    (no room in the queue when their trace finished), dropped_failed_spans (their batch was refused,
    timed out or failed every attempt, or the collector rejected them). In batches: exported_batches,
    failed_batches, and retries (attempts after a batch's first). Gauges: queued_spans, queue_capacity.
    last_error (and when, epoch seconds) is the latest failure's reason, None before any.
    """

    endpoint: str
    exported_spans: int
    dropped_queue_full_spans: int
    dropped_failed_spans: int
    exported_batches: int
    failed_batches: int
    retries: int
    queued_spans: int
    queue_capacity: int
    last_error: str | None
    last_error_time: float | None
    last_export_time: float | None

    def to_dict(self, detail: bool = True) -> dict[str, Any]:
        """JSON field names; without `detail` (a remote reader), neither the endpoint nor the error's text."""
        return {
            "endpoint": self.endpoint if detail else WITHHELD,
            "exportedSpans": self.exported_spans,
            "droppedQueueFullSpans": self.dropped_queue_full_spans,
            "droppedFailedSpans": self.dropped_failed_spans,
            "exportedBatches": self.exported_batches,
            "failedBatches": self.failed_batches,
            "retries": self.retries,
            "queuedSpans": self.queued_spans,
            "queueCapacity": self.queue_capacity,
            "lastError": self.last_error if detail or self.last_error is None else WITHHELD,
            "lastErrorTime": self.last_error_time,
            "lastExportTime": self.last_export_time,
        }


class _Failed(Exception):
    """One attempt at a batch that did not take; `retryable` when another may, `after` a hint in seconds."""

    def __init__(self, reason: str, retryable: bool, after: float | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.after = after


# An OTLP answer is a few bytes (a partial success at most): a collector, or whatever listens at the
# endpoint, answering more is not believed, nor held in memory.
MAX_ANSWER_BYTES = 64 * 1024


class _Encoder:
    """Traces to ExportTraceServiceRequest bytes, with opentelemetry-proto's messages (imported here)."""

    def __init__(self, settings: ExportSettings, tracer: Tracer) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2

        self._request = trace_service_pb2.ExportTraceServiceRequest
        self.response = trace_service_pb2.ExportTraceServiceResponse
        self._resource = resource_pb2.Resource()
        for key, value in settings.resource.items():
            _set_attribute(self._resource.attributes.add(), key, value)
        self._scope = common_pb2.InstrumentationScope(name="tooloo", version=__version__)
        self._error = trace_pb2.Status.STATUS_CODE_ERROR
        self._server, self._client = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT
        self._internal = trace_pb2.Span.SPAN_KIND_INTERNAL
        # perf_counter_ns readings to epoch nanoseconds, by one integer sum (the tracer's offset is fixed).
        self._epoch_ns = round(tracer.wall_clock(0) * 1e9)

    async def encode(self, batch: list[Trace]) -> bytes:
        """The request's bytes; gives the loop back every SLICE_SPANS spans."""
        request = self._request()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(self._resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.CopyFrom(self._scope)
        spans = scope_spans.spans
        done = 0
        for trace in batch:
            trace_id = bytes.fromhex(trace.trace_id)
            state = trace.tracestate
            # The trace flags (every exported trace is sampled; random-trace-id as the tracer has it) and
            # whether the parent is remote: the root's came in a traceparent, every other span's is here.
            flags = trace_flags(True, trace.random) | _HAS_IS_REMOTE
            self._add(spans, trace, trace_id, state, self._server,
                      flags | _IS_REMOTE if trace.parent_id is not None else flags)
            for span in trace.spans:
                attributes = span.attributes
                kind = self._client if attributes is not None and "http.request.method" in attributes \
                    else self._internal
                self._add(spans, span, trace_id, state, kind, flags)
            done += 1 + len(trace.spans)
            if done >= SLICE_SPANS:
                done = 0
                await asyncio.sleep(0)
        return request.SerializeToString()

    def _add(self, spans: Any, span: Span, trace_id: bytes, state: str, kind: int, flags: int) -> None:
        attributes = span.attributes or {}
        method = attributes.get("http.request.method")
        if kind == self._server:
            route = attributes.get("http.route")
            # "{method} {route}", or the method alone without a route ("HTTP" for one outside HTTP's own).
            shown = "HTTP" if method == "_OTHER" else method
            name = f"{shown} {route}" if method and route else str(shown) if method else span.name
        elif kind == self._client:
            name = str(method)
        else:
            name = span.name
        out = spans.add()
        out.trace_id = trace_id
        out.span_id = span.id.to_bytes(8, "big")
        out.name = name
        out.kind = kind
        out.flags = flags
        if state:
            out.trace_state = state
        out.start_time_unix_nano = self._epoch_ns + span.start
        out.end_time_unix_nano = self._epoch_ns + span.end
        if span.parent_id is not None:
            out.parent_span_id = span.parent_id.to_bytes(8, "big")
        added = out.attributes.add  # filled in place: a message's constructor costs twice as much
        for key, value in attributes.items():
            _set_attribute(added(), key, value)
        status = attributes.get("http.response.status_code")
        failed = span.status == "error" or (kind == self._client and isinstance(status, int) and status >= 400)
        if failed:
            out.status.code = self._error
            reason = attributes.get("error")
            if reason is not None:
                out.status.message = str(reason)
            if "error.type" not in attributes:  # the semantic conventions' name for what failed
                error_type = str(status) if isinstance(status, int) and status >= 400 else str(reason or "_OTHER")
                _set_attribute(added(), "error.type", error_type)


def _set_attribute(pair: Any, key: str, value: Any) -> None:
    """Fills a KeyValue message: bool, int (64-bit), float and str as themselves, anything else as its str."""
    pair.key = key
    kind = value.__class__
    if kind is str:
        pair.value.string_value = value
    elif kind is bool:
        pair.value.bool_value = value
    elif kind is int and -(1 << 63) <= value < (1 << 63):
        pair.value.int_value = value
    elif kind is float:
        pair.value.double_value = value
    else:
        pair.value.string_value = str(value)


class TraceExporter:
    """Sends one service's sampled traces to an OTLP/HTTP collector (see the module's contract)."""

    def __init__(self, settings: ExportSettings, tracer: Tracer, *, queue_spans: int = QUEUE_SPANS,
                 batch_spans: int = BATCH_SPANS, batch_seconds: float = BATCH_SECONDS) -> None:
        self.settings = settings
        self._encoder = _Encoder(settings, tracer)  # ImportError without opentelemetry-proto
        self._client = WireClient(max_connections=1, tls=_tls_context(settings) if settings.tls else None,
                                  max_response_bytes=MAX_ANSWER_BYTES)
        self._headers = [(b"content-type", b"application/x-protobuf"),
                         (b"user-agent", f"tooloo/{__version__}".encode()), *settings.headers]
        self.queue_capacity = queue_spans
        self.batch_spans = batch_spans
        self.batch_seconds = batch_seconds
        self._queue: deque[Trace] = deque()
        self._queued_spans = 0
        self._pending = asyncio.Event()  # set while the queue holds anything
        self._full = asyncio.Event()  # set while it holds a batch's worth
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # cleared while the task sends a batch: close() lets it arrive
        self._idle.set()
        self._retry_hint: float | None = None  # the last failed batch's Retry-After, for the next one's wait
        self._exported_spans = self._dropped_full = self._dropped_failed = 0
        self._exported_batches = self._failed_batches = self._retries = 0
        self._last_error: str | None = None
        self._last_error_time: float | None = None
        self._last_export_time: float | None = None

    # -- the request path ------------------------------------------------------------------------

    def offer(self, trace: Trace) -> None:
        """Queues a finished sampled trace, or counts its spans as dropped when there is no room."""
        spans = 1 + len(trace.spans)
        if self._queued_spans + spans > self.queue_capacity:
            self._dropped_full += spans
            return
        self._queue.append(trace)
        self._queued_spans += spans
        self._pending.set()
        if self._queued_spans >= self.batch_spans:
            self._full.set()

    # -- the background ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the background task on the running loop (a startup hook)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="otlp-export")

    async def _run(self) -> None:
        pause = 0.0
        while True:
            await self._pending.wait()
            if self._queued_spans < self.batch_spans:  # gather: until a batch's worth, or batch_seconds
                try:
                    await asyncio.wait_for(self._full.wait(), self.batch_seconds)
                except asyncio.TimeoutError:
                    pass
            batch, spans = self._take()
            self._idle.clear()
            try:
                sent = await self._export(batch, spans, time.monotonic() + self.settings.timeout)
            finally:
                self._idle.set()
            if sent:
                pause = 0.0
            else:
                # A collector that failed a whole batch is given time before the next one (at least what its
                # Retry-After asked), rather than have batch after batch encoded and lost: meanwhile the full
                # queue drops by count, for nothing.
                pause = min(max(2 * pause, PAUSE_SECONDS, self._retry_hint or 0.0), MAX_PAUSE_SECONDS)
                self._retry_hint = None
                await asyncio.sleep(pause)

    def _take(self) -> tuple[list[Trace], int]:
        """The oldest traces, up to batch_spans spans (one trace at least), out of the queue."""
        batch: list[Trace] = []
        spans = 0
        queue = self._queue
        while queue and (not batch or spans + 1 + len(queue[0].spans) <= self.batch_spans):
            trace = queue.popleft()
            batch.append(trace)
            spans += 1 + len(trace.spans)
        self._queued_spans -= spans
        if not queue:
            self._pending.clear()
        if self._queued_spans < self.batch_spans:
            self._full.clear()
        return batch, spans

    async def _export(self, batch: list[Trace], spans: int, deadline: float) -> bool:
        """Sends one batch, trying again while it may; counts how it went, and says whether the collector took
        it. Raises nothing but cancellation (and then counts the batch as failed)."""
        try:
            body = await self._encoder.encode(batch)
            for attempt in range(ATTEMPTS):
                left = deadline - time.monotonic()
                try:
                    if left <= 0:
                        raise _Failed(f"no answer within {self.settings.timeout:g} s", retryable=False)
                    rejected = await self._post(body, left)
                except _Failed as failure:
                    pause = failure.after if failure.after is not None else \
                        BACKOFF_SECONDS * 2 ** attempt * random.uniform(0.5, 1.0)
                    if failure.retryable and attempt + 1 < ATTEMPTS and time.monotonic() + pause < deadline:
                        self._retries += 1
                        await asyncio.sleep(pause)
                        continue
                    self._retry_hint = failure.after
                    self._fail(str(failure), spans, batches=1)
                    return False
                rejected = min(max(rejected, 0), spans)  # what a collector says cannot make a counter go down
                self._exported_batches += 1
                self._exported_spans += spans - rejected
                self._last_export_time = time.time()
                if rejected:
                    self._fail(f"the collector rejected {rejected} of {spans} spans", rejected, batches=0)
                return True
        except asyncio.CancelledError:
            self._fail("the service stopped while the batch was being sent", spans, batches=1)
            raise
        except Exception as exc:  # a defect of ours in encoding must cost the batch, never the service
            logger.exception("%s: a batch of %d spans could not be encoded", self.settings.resource["service.name"],
                             spans)
            self._fail(f"the batch could not be encoded: {type(exc).__name__}", spans, batches=1)
        return False

    async def _post(self, body: bytes, timeout: float) -> int:
        """One attempt: the count of spans the collector said it rejected, or _Failed."""
        settings = self.settings
        try:
            response = await self._client.request(settings.host, settings.port, "POST", settings.target,
                                                  self._headers, body, timeout)
        except WireError as exc:
            raise _Failed(f"{type(exc).__name__}: {exc}", retryable=True) from None
        status = response.status_code
        if 200 <= status < 300:
            try:
                answer = self._encoder.response.FromString(response.content)
            except Exception:  # an answer that is not the response message: the spans were taken all the same
                return 0
            return answer.partial_success.rejected_spans if answer.HasField("partial_success") else 0
        raise _Failed(f"the collector answered {status}", retryable=status in RETRYABLE,
                      after=_retry_after(response.header(b"retry-after")))

    def _fail(self, reason: str, spans: int, batches: int) -> None:
        self._dropped_failed += spans
        self._failed_batches += batches
        self._last_error = reason
        self._last_error_time = time.time()

    async def close(self) -> None:
        """Stops the background task and sends what is queued, within SHUTDOWN_SECONDS (a shutdown hook);
        a batch on its way when it is called is let arrive first, within the same time."""
        deadline = time.monotonic() + min(SHUTDOWN_SECONDS, self.settings.timeout)
        if self._task is not None:
            if not self._idle.is_set():
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._idle.wait()), max(deadline - time.monotonic(), 0.001))
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue and time.monotonic() < deadline:
            batch, spans = self._take()
            try:
                await asyncio.wait_for(self._export(batch, spans, deadline), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                break  # _export counted the batch when it was cancelled
        if self._queue:
            left = self._queued_spans
            self._queue.clear()
            self._queued_spans = 0
            self._fail(f"the service stopped with {left} spans not sent", left, batches=0)
        if self._dropped_failed:
            logger.warning("%s: %d spans were not exported to %s (last: %s)", self.settings.resource["service.name"],
                           self._dropped_failed, self.settings.url, self._last_error)
        await self._client.close()

    # -- what it says of itself ----------------------------------------------------------------

    def snapshot(self) -> ExportSnapshot:
        return ExportSnapshot(
            endpoint=self.settings.url, exported_spans=self._exported_spans,
            dropped_queue_full_spans=self._dropped_full, dropped_failed_spans=self._dropped_failed,
            exported_batches=self._exported_batches, failed_batches=self._failed_batches, retries=self._retries,
            queued_spans=self._queued_spans, queue_capacity=self.queue_capacity, last_error=self._last_error,
            last_error_time=self._last_error_time, last_export_time=self._last_export_time)

    def section(self, detail: bool) -> dict[str, Any]:
        """The observability document's `traceExport` (`Service.extra_observability`)."""
        return self.snapshot().to_dict(detail)

    def metrics(self, page: Exposition) -> None:
        """The trace_export families of /metrics (`Service.extra_metrics`), from the same snapshot."""
        snapshot = self.snapshot()
        page.counter("tooloo_trace_export_spans_total", "Spans of sampled traces, by what became of them.",
                     [({"outcome": "exported"}, snapshot.exported_spans),
                      ({"outcome": "dropped_queue_full"}, snapshot.dropped_queue_full_spans),
                      ({"outcome": "dropped_failed"}, snapshot.dropped_failed_spans)])
        page.counter("tooloo_trace_export_batches_total", "Batches sent to the collector, by outcome.",
                     [({"outcome": "exported"}, snapshot.exported_batches),
                      ({"outcome": "failed"}, snapshot.failed_batches)])
        page.counter("tooloo_trace_export_retries_total", "Attempts after a batch's first.", [({}, snapshot.retries)])
        page.gauge("tooloo_trace_export_queued_spans", "Spans waiting to be sent.", [({}, snapshot.queued_spans)])
        page.gauge("tooloo_trace_export_queue_capacity_spans", "The most spans the queue holds.",
                   [({}, snapshot.queue_capacity)])


def _retry_after(value: bytes | None) -> float | None:
    """A Retry-After header's seconds (its HTTP-date form is not worth parsing for a hint)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value)
