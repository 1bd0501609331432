"""OTLP/HTTP trace export (services/otlp.py): a real decoder receives what real services send.

The receiver is a small HTTP server of the test's own on a free 127.0.0.1 port, decoding each
POST with opentelemetry-proto's ExportTraceServiceRequest; a collector that is down is a free
port with nothing on it, one that hangs is a socket that listens and never answers.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from conftest import Tooloo, promtool_check_metrics, unavailable
from test_metrics import value
from tooloo_cli.bench.stack import EphemeralStack, free_port, write_ephemeral_config
from tooloo_cli.config import Config, ConfigError, load_config
from tooloo_cli.resilience import Tracer
from tooloo_cli.services.otlp import ExportConfigError, TraceExporter, export_settings

OBSERVABILITY = "/api/v1/system/observability"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


# -- the receiver ----------------------------------------------------------------------------------


class Receiver:
    """An OTLP/HTTP collector on a free port: every request decoded, answered `statuses` in turn (then 200)."""

    def __init__(self, statuses: list[int] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
        self.statuses = list(statuses or [])
        self.delay = 0.0  # seconds before each answer: a slow collector
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(receiver.delay)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status == 200:
                        receiver.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                                  ExportTraceServiceRequest.FromString(body)))
                answer = ExportTraceServiceResponse().SerializeToString() if status == 200 else b""
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[tuple[dict[str, Any], ProtoSpan]]:
        """(resource attributes, span) of everything received so far."""
        with self.lock:
            return [({a.key: _value(a.value) for a in resource_spans.resource.attributes}, span)
                    for _, request in self.requests for resource_spans in request.resource_spans
                    for scope_spans in resource_spans.scope_spans for span in scope_spans.spans]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, Any], ProtoSpan]]:
        deadline = time.monotonic() + timeout
        while len(spans := self.spans()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return spans

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


def _attributes(span: ProtoSpan) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in span.attributes}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@contextmanager
def hanging_collector() -> Iterator[int]:
    """A port whose socket listens (the kernel completes each connection) and never reads or answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def _sampled(*names: str, endpoint: str = "") -> Callable[[Config], None]:
    def edit(config: Config) -> None:
        for name in names:
            config.services[name].tracer.sampling_rate = 1.0
        config.stack.otlp_endpoint = endpoint

    return edit


def _observed(stack: EphemeralStack, name: str) -> dict[str, Any]:
    return httpx.get(stack.url(name) + OBSERVABILITY, timeout=5).json()


# -- across services -------------------------------------------------------------------------------


def test_one_request_through_web_reaches_the_collector_as_linked_spans_of_web_and_budget(
        tmp_path: Path, receiver: Receiver) -> None:
    with EphemeralStack(tmp_path, _sampled("web", "budget", endpoint=receiver.base)) as stack:
        stack.start("web", "budget")
        headers = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01", "tracestate": TRACESTATE}
        response = httpx.get(stack.url("web") + "/api/v1/budget", headers=headers, timeout=10)
        assert response.status_code == 200
        spans = receiver.wait_for(3)
        budget_port = stack.loaded.services["budget"].port
        exported = _wait_for_export(stack, "web", lambda e: e["exportedSpans"] >= 2)
    assert exported["exportedBatches"] >= 1 and exported["endpoint"] == receiver.base + "/v1/traces"
    assert exported["droppedQueueFullSpans"] == exported["droppedFailedSpans"] == 0 and exported["lastError"] is None
    by_kind = {(resource["service.name"], span.kind): span for resource, span in spans}
    assert len(spans) == 3 and len(by_kind) == 3, [(r["service.name"], s.name) for r, s in spans]
    web_server = by_kind[("web", ProtoSpan.SPAN_KIND_SERVER)]
    web_client = by_kind[("web", ProtoSpan.SPAN_KIND_CLIENT)]
    budget_server = by_kind[("budget", ProtoSpan.SPAN_KIND_SERVER)]
    assert {span.trace_id.hex() for _, span in spans} == {TRACE_ID}
    assert web_server.parent_span_id.hex() == CALLER_SPAN
    assert web_client.parent_span_id == web_server.span_id
    assert budget_server.parent_span_id == web_client.span_id  # the link across the two processes
    assert {span.trace_state for _, span in spans} == {TRACESTATE}
    # Sampled (the caller's id is not known random), and whether the parent is remote: each root's is.
    assert (web_server.flags, web_client.flags, budget_server.flags) == (0x301, 0x101, 0x301)
    served = _attributes(web_server)
    assert served["http.request.method"] == "GET" and served["url.path"] == "/api/v1/budget"
    assert served["http.route"].startswith("/api/v1/budget") and served["http.response.status_code"] == 200
    assert web_server.name == f"GET {served['http.route']}"
    assert _attributes(budget_server).items() >= {"http.route": "/api/v1/budget", "http.response.status_code": 200}.items()
    assert budget_server.name == "GET /api/v1/budget"
    called = _attributes(web_client)
    assert called == {"http.request.method": "GET", "server.address": "127.0.0.1", "server.port": budget_port,
                      "url.full": f"http://127.0.0.1:{budget_port}/api/v1/budget", "http.response.status_code": 200}
    assert web_client.name == "GET"
    for resource, span in spans:
        assert resource["service.instance.id"].startswith(f"{resource['service.name']}@")
        assert resource["service.version"] and resource["telemetry.sdk.name"] == "tooloo"
        assert span.status.code == Status.STATUS_CODE_UNSET
        assert span.start_time_unix_nano < span.end_time_unix_nano
        assert abs(span.start_time_unix_nano / 1e9 - time.time()) < 60
    # The client span lies within its server span, and budget's within the client's, on one clock.
    assert web_server.start_time_unix_nano <= web_client.start_time_unix_nano <= web_client.end_time_unix_nano \
        <= web_server.end_time_unix_nano


def _wait_for_export(stack: EphemeralStack, name: str, done: Callable[[dict[str, Any]], bool],
                     timeout: float = 10.0) -> dict[str, Any]:
    """The `traceExport` section of `name`'s observability document, once `done` holds (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while not done(exported := _observed(stack, name)["traceExport"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return exported


@pytest.mark.parametrize("collector", ["down", "hanging"])
def test_a_dead_or_hanging_collector_costs_requests_nothing_and_its_spans_are_counted_as_dropped(
        tmp_path: Path, collector: str) -> None:
    with hanging_collector() as hanging:
        port = free_port() if collector == "down" else hanging
        with EphemeralStack(tmp_path, _sampled("web", "budget")) as stack:
            # The endpoint and the timeout reach the services as the supervisor hands them on.
            stack.start("web", "budget", env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                                              "OTEL_EXPORTER_OTLP_TIMEOUT": "300"})
            latencies, statuses = [], []
            with httpx.Client(base_url=stack.url("web"), timeout=5) as client:
                deadline = time.monotonic() + 20
                for _ in range(150):  # bounded in count and in time
                    if time.monotonic() > deadline:
                        break
                    started = time.perf_counter()
                    statuses.append(client.get("/api/v1/budget").status_code)
                    latencies.append(time.perf_counter() - started)
            exported = _wait_for_export(stack, "web", lambda e: e["droppedFailedSpans"] > 0 and e["failedBatches"] > 0)
            budget = _wait_for_export(stack, "budget", lambda e: e["droppedFailedSpans"] > 0)
            page = httpx.get(f"{stack.url('web')}/metrics", timeout=5).text
    assert promtool_check_metrics(page) == ""
    assert value(page, "tooloo_trace_export_spans_total", outcome="dropped_failed") >= exported["droppedFailedSpans"]
    assert value(page, "tooloo_trace_export_spans_total", outcome="exported") == 0
    assert set(statuses) == {200} and len(statuses) >= 100
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.05 and latencies[-1] < 1.0, latencies[-5:]  # the export timeout is 0.3 s
    assert exported["exportedSpans"] == 0 and exported["lastError"] is not None
    assert budget["exportedSpans"] == 0
    expected = ("ConnectFailed",) if collector == "down" else ("ResponseTimeout", "no answer")
    assert any(reason in exported["lastError"] for reason in expected), exported["lastError"]


# -- the exporter in this process ------------------------------------------------------------------


def _traces(tracer: Tracer, count: int, children: int = 0) -> list[Any]:
    """`count` finished sampled traces of `tracer`, each with `children` spans."""
    made: list[Any] = []
    tracer.on_sampled = made.append
    for number in range(count):
        with tracer.trace(f"GET /api/v1/thing/{number}"):
            for _ in range(children):
                with tracer.span("step"):
                    pass
    tracer.on_sampled = None
    return made


def _exporter(base: str, tracer: Tracer, environ: dict[str, str] | None = None, **options: Any) -> TraceExporter:
    settings = export_settings(base, environ or {}, service="svc", instance="svc.2")
    assert settings is not None
    return TraceExporter(settings, tracer, **options)


def test_the_queue_is_bounded_in_spans_and_what_does_not_fit_is_counted_whole() -> None:
    tracer = Tracer("svc", 1.0)
    exporter = _exporter("http://127.0.0.1:9", tracer, queue_spans=10)
    for trace in _traces(tracer, 4, children=2):  # three spans each: three traces fit in ten, the fourth not
        exporter.offer(trace)
    snapshot = exporter.snapshot()
    assert snapshot.queued_spans == 9 and snapshot.queue_capacity == 10
    assert snapshot.dropped_queue_full_spans == 3 and snapshot.exported_spans == 0


def test_retryable_answers_are_tried_again_and_others_drop_the_batch() -> None:
    tracer = Tracer("svc", 1.0)
    receiver = Receiver(statuses=[503, 429, 200, 400])
    try:
        async def scenario() -> tuple[Any, Any]:
            exporter = _exporter(receiver.base, tracer, batch_seconds=0.01)
            await exporter.start()
            for trace in _traces(tracer, 2, children=1):
                exporter.offer(trace)
            await _until(lambda: exporter.snapshot().exported_batches == 1)
            first = exporter.snapshot()
            exporter.offer(_traces(tracer, 1)[0])  # this batch meets the 400
            await _until(lambda: exporter.snapshot().failed_batches == 1)
            await exporter.close()
            return first, exporter.snapshot()

        first, last = asyncio.run(scenario())
    finally:
        receiver.close()
    assert first.exported_spans == 4 and first.retries == 2 and first.last_error is None
    assert last.failed_batches == 1 and last.dropped_failed_spans == 1 and last.retries == 2  # a 400 is final
    assert last.last_error == "the collector answered 400"
    assert len(receiver.spans()) == 4


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)


def test_what_is_queued_at_shutdown_is_sent_then(receiver: Receiver) -> None:
    tracer = Tracer("svc", 1.0)

    async def scenario() -> Any:
        exporter = _exporter(receiver.base, tracer, batch_seconds=600.0)  # nothing would go before the end
        await exporter.start()
        for trace in _traces(tracer, 3):
            exporter.offer(trace)
        await asyncio.sleep(0.05)
        assert receiver.spans() == []
        await exporter.close()
        return exporter.snapshot()

    snapshot = asyncio.run(scenario())
    assert snapshot.exported_spans == 3 and len(receiver.spans()) == 3


def test_a_batch_on_its_way_at_shutdown_is_let_arrive(receiver: Receiver) -> None:
    tracer = Tracer("svc", 1.0)
    receiver.delay = 0.3

    async def scenario() -> Any:
        exporter = _exporter(receiver.base, tracer, batch_seconds=0.01)
        await exporter.start()
        for trace in _traces(tracer, 5):
            exporter.offer(trace)
        await asyncio.sleep(0.1)  # the batch is taken and sent; the collector answers in 0.3 s
        await exporter.close()
        return exporter.snapshot()

    snapshot = asyncio.run(scenario())
    assert snapshot.exported_spans == 5 and snapshot.dropped_failed_spans == 0, snapshot
    assert len(receiver.spans()) == 5


def test_a_shutdown_with_a_hanging_collector_is_bounded_and_counts_what_it_could_not_send() -> None:
    tracer = Tracer("svc", 1.0)
    with hanging_collector() as port:
        async def scenario() -> tuple[float, Any]:
            exporter = _exporter(f"http://127.0.0.1:{port}", tracer, batch_seconds=600.0)
            await exporter.start()
            for trace in _traces(tracer, 5):
                exporter.offer(trace)
            started = time.monotonic()
            await exporter.close()
            return time.monotonic() - started, exporter.snapshot()

        took, snapshot = asyncio.run(scenario())
    assert took < 2.0 and snapshot.dropped_failed_spans == 5 and snapshot.queued_spans == 0


def test_spans_are_encoded_as_the_semantic_conventions_name_them(receiver: Receiver) -> None:
    tracer = Tracer("svc", 1.0)
    made: list[Any] = []
    tracer.on_sampled = made.append
    with pytest.raises(RuntimeError), tracer.trace("POST /api/v1/x") as trace:
        for key, value in {"http.request.method": "POST", "http.route": "/api/v1/x", "url.path": "/api/v1/x",
                           "http.response.status_code": 500}.items():
            trace.set(key, value)
        with tracer.span("GET budget/api/v1/budget") as call:
            call.set("http.request.method", "GET")
            call.set("http.response.status_code", 404)
            call.set("error.type", "404")
        with tracer.span("cache-lookup") as lookup:
            lookup.set("hit", True)
            lookup.set("ratio", 0.5)
        raise RuntimeError("boom")

    async def scenario() -> None:
        exporter = _exporter(receiver.base, tracer, environ={
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test%20lab,service.name=ignored",
            "OTEL_SERVICE_NAME": "checkout"})
        await exporter.start()
        exporter.offer(made[0])
        await exporter.close()

    asyncio.run(scenario())
    spans = receiver.wait_for(3)
    resource = spans[0][0]
    assert resource["service.name"] == "checkout" and resource["deployment.environment"] == "test lab"
    assert resource["service.instance.id"] == f"svc.2@{socket.gethostname()}"
    server, client, internal = (span for _, span in spans)
    assert (server.kind, client.kind, internal.kind) == (ProtoSpan.SPAN_KIND_SERVER, ProtoSpan.SPAN_KIND_CLIENT,
                                                         ProtoSpan.SPAN_KIND_INTERNAL)
    assert (server.name, client.name, internal.name) == ("POST /api/v1/x", "GET", "cache-lookup")
    assert server.status.code == client.status.code == Status.STATUS_CODE_ERROR
    assert server.status.message == "RuntimeError" and _attributes(server)["error.type"] == "500"
    assert internal.status.code == Status.STATUS_CODE_UNSET
    assert _attributes(internal) == {"hit": True, "ratio": 0.5}
    assert not server.parent_span_id and client.parent_span_id == internal.parent_span_id == server.span_id
    assert server.trace_state == ""
    assert {span.flags for _, span in spans} == {0x103}  # sampled, a random id of tooloo's, no remote parent


# -- where to, and what else the environment says -------------------------------------------------


def test_the_endpoint_comes_from_the_traces_variable_then_the_general_one_then_the_configuration() -> None:
    def url(stack: str, **environ: str) -> str | None:
        settings = export_settings(stack, environ, service="web", instance="web")
        return None if settings is None else settings.url

    assert url("") is None
    assert url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert url("http://collector:4318/", OTEL_EXPORTER_OTLP_ENDPOINT="https://env:4318/prefix/") == \
        "https://env:4318/prefix/v1/traces"
    assert url("http://collector:4318", OTEL_EXPORTER_OTLP_ENDPOINT="http://env:4318",
               OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://traces:9999/custom") == "http://traces:9999/custom"
    settings = export_settings("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://env"}, service="web", instance="web")
    assert settings is not None and (settings.host, settings.port, settings.tls) == ("env", 443, True)


def test_bad_export_variables_are_refused_without_showing_a_header_value() -> None:
    def problem(**environ: str) -> str:
        with pytest.raises(ExportConfigError) as info:
            export_settings("http://collector:4318", environ, service="web", instance="web")
        return str(info.value)

    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in problem(OTEL_EXPORTER_OTLP_ENDPOINT="ftp://collector")
    assert "credentials" in problem(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://user:pw@collector/v1/traces")
    for headers in ("authorization", "x-key=sekret\r\nx-evil: 1", "bad name=sekret"):
        message = problem(OTEL_EXPORTER_OTLP_HEADERS=f"a=1,{headers}")
        assert "OTEL_EXPORTER_OTLP_HEADERS" in message and ("entry 2" in message or "header 2" in message), message
        assert "sekret" not in message and "authorization" not in message
    assert "milliseconds" in problem(OTEL_EXPORTER_OTLP_TIMEOUT="soon")
    assert "milliseconds" in problem(OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="0")
    assert "OTEL_RESOURCE_ATTRIBUTES" in problem(OTEL_RESOURCE_ATTRIBUTES="team")
    settings = export_settings("http://c", {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20sekret",
                                            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-api-key=k%2C1"},
                               service="web", instance="web")
    assert settings is not None and settings.headers == ((b"x-api-key", b"k,1"),)  # the traces' own wins whole
    assert "sekret" not in repr(settings) and "k,1" not in repr(settings)


def test_the_environment_turns_export_off_or_is_refused_for_what_tooloo_does_not_speak() -> None:
    def settings(**environ: str) -> Any:
        return export_settings("http://collector:4318", environ, service="web", instance="web")

    assert settings(OTEL_SDK_DISABLED="true") is None and settings(OTEL_SDK_DISABLED="TRUE") is None
    assert settings(OTEL_TRACES_EXPORTER="none") is None and settings(OTEL_TRACES_EXPORTER="None") is None
    for exported in ({}, {"OTEL_SDK_DISABLED": "false"}, {"OTEL_TRACES_EXPORTER": "otlp"},
                     {"OTEL_TRACES_EXPORTER": "OTLP"}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
                     {"OTEL_EXPORTER_OTLP_PROTOCOL": "HTTP/Protobuf"}):
        assert settings(**exported) is not None, exported
    for environ, said in (({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER is 'zipkin'"),
                          ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "otlp (the default), or none"),
                          ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL is 'grpc'"),
                          ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "TRACES_PROTOCOL is 'http/json'")):
        with pytest.raises(ExportConfigError, match=re.escape(said)):
            settings(**environ)


def test_a_bad_otlp_endpoint_in_the_file_is_a_configuration_error(tmp_path: Path) -> None:
    for endpoint, said in (("collector:4318", "scheme"), ("http://", "host"), ("http://u:p@c:4318", "credentials"),
                           ("http://c:4318/?x=1", "query"), ("http://c:99999", "not a URL")):
        path = write_ephemeral_config(tmp_path, lambda config: setattr(config.stack, "otlp_endpoint", endpoint))
        with pytest.raises(ConfigError, match="stack.otlp_endpoint") as info:
            load_config(path, env={})
        assert said in str(info.value) and "u:p" not in str(info.value), str(info.value)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")}
    result = subprocess.run([sys.executable, "-m", "tooloo_cli", "--config", str(path), "config", "validate"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2 and "otlp_endpoint" in result.stderr and "Traceback" not in result.stderr


def test_a_service_without_the_extra_cannot_start_and_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tooloo_cli.services import create_app
    from tooloo_cli.services.service import ServiceCannotStart

    loaded = load_config(write_ephemeral_config(tmp_path), env={})
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setitem(sys.modules, "opentelemetry.proto.collector.trace.v1", None)  # as if not installed
    with pytest.raises(ServiceCannotStart, match=r"pip install 'tooloo\[otlp\]'.*OTEL_EXPORTER_OTLP_ENDPOINT"):
        create_app("training", loaded)


def test_a_service_that_does_not_export_imports_neither_protobuf_nor_the_exporter(tmp_path: Path) -> None:
    config = write_ephemeral_config(tmp_path)
    code = ("from tooloo_cli.config import load_config; from tooloo_cli.services import create_app; "
            f"create_app('web', load_config({str(config)!r}, env={{}}))")

    def imported(**extra: str) -> set[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLOO_", "OTEL_"))} | extra
        result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                                env=env, timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        return {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}

    heavy = {"google.protobuf", "opentelemetry.proto", "tooloo_cli.services.otlp"}
    assert not heavy & imported()
    assert heavy <= imported(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")  # the check sees them


# -- through the supervisor ----------------------------------------------------------------------


def test_the_export_variables_travel_in_the_handover_to_tooloos_own_services_only(tmp_path: Path) -> None:
    from tooloo_cli.config import command_service
    from tooloo_cli.stack import stack_of
    from tooloo_cli.supervisor.environment import handover, service_environment
    from tooloo_cli.supervisor.standby import supervisor_environment

    def edit(config: Config) -> None:
        config.services["worker"] = command_service(["sleep", "30"])
        config.services["budget"].env = {"OTEL_SERVICE_NAME": "ledger"}

    loaded = load_config(write_ephemeral_config(tmp_path, edit), env={})
    command = {"PATH": "/usr/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
               "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20sekret", "OTEL_SERVICE_NAME": "stack"}
    handed = handover(loaded, command)["environment"]
    assert handed == {key: value for key, value in command.items() if key != "PATH"}
    assert not {key for key in supervisor_environment(command) if key.startswith("OTEL_")}
    specs = stack_of(loaded).specs
    web, budget = (service_environment(specs[name], command, handed) for name in ("web", "budget"))
    # Given to the whole stack, the name is the group's: each service keeps its own as service.name.
    assert web == {**{key: value for key, value in command.items() if key != "OTEL_SERVICE_NAME"},
                   "OTEL_RESOURCE_ATTRIBUTES": "service.namespace=stack"}
    assert budget["OTEL_SERVICE_NAME"] == "ledger"  # a service's own env names it alone
    named = handover(loaded, {"OTEL_RESOURCE_ATTRIBUTES": "team=ml,service.name=shop%20floor"})["environment"]
    assert service_environment(specs["web"], {}, named) == {
        "OTEL_RESOURCE_ATTRIBUTES": "team=ml,service.namespace=shop%20floor"}
    assert not {key for key in service_environment(specs["worker"], command, handed) if key.startswith("OTEL_")}


def test_up_hands_the_export_variables_to_the_services_and_keeps_them_out_of_the_supervisor(
        tooloo: Callable[..., Tooloo], receiver: Receiver) -> None:
    t = tooloo(_sampled("training"))
    t.env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base, "OTEL_SERVICE_NAME": "coach stack",
              "OTEL_RESOURCE_ATTRIBUTES": "service.name=everyone,team=ml",
              "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20sekret"}
    assert t("up", "training").returncode == 0
    assert httpx.get(f"http://127.0.0.1:{t.port('training')}/api/v1/training/status", timeout=5).status_code == 200
    spans = receiver.wait_for(1)
    assert [(resource["service.name"], resource["service.namespace"], resource["team"])
            for resource, _ in spans] == [("training", "coach stack", "ml")]
    assert receiver.requests[0][0]["authorization"] == "Bearer sekret"
    assert receiver.requests[0][0]["content-type"] == "application/x-protobuf"
    supervisor = Path(f"/proc/{t.status()['supervisor']['pid']}/environ").read_bytes()
    assert b"OTEL_" not in supervisor
    logs = b"".join(path.read_bytes() for path in t.state.rglob("*.log"))
    assert b"sekret" not in logs


# -- https ------------------------------------------------------------------------------------------------


def test_an_https_collector_is_checked_against_the_named_ca_file(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        unavailable("the https test makes its certificate with openssl")
    key, certificate = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(certificate), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    collector = Receiver(tls=context)
    tracer = Tracer("svc", 1.0)
    try:
        async def export(environ: dict[str, str]) -> Any:
            exporter = _exporter("", tracer, environ=environ, batch_seconds=0.01)
            await exporter.start()
            exporter.offer(_traces(tracer, 1)[0])
            await _until(lambda: exporter.snapshot().exported_spans + exporter.snapshot().dropped_failed_spans == 1)
            await exporter.close()
            return exporter.snapshot()

        endpoint = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.base + "/v1/traces"}
        trusted = asyncio.run(export(endpoint | {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(certificate)}))
        untrusted = asyncio.run(export(endpoint))  # the system's CAs do not know this certificate
    finally:
        collector.close()
    assert trusted.exported_spans == 1 and len(collector.spans()) == 1
    assert untrusted.dropped_failed_spans == 1 and "CERTIFICATE_VERIFY_FAILED" in (untrusted.last_error or "")
