"""tooloo observe: every state rendered (canned answers on real sockets), a live poll of real services,
--watch under a pty."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tooloo_cli.bench.stack import EphemeralStack
from tooloo_cli.config import LoadedConfig
from tooloo_cli.observe import observe
from tooloo_cli.observe.dashboard import SEEN_TRACES, Dashboard, History, sparkline
from tooloo_cli.observe.poll import Observation, check_document, poll, targets_of

TRACER = {"samplingRate": 0.1, "activeTraces": 0, "totalTraces": 1245, "sampledTraces": 130, "avgLatency": 45.2,
          "p50Latency": 30.1, "p95Latency": 120.0, "p99Latency": 734.5, "throughput": 23.4, "errorRate": 0.08,
          "spans": [{"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "name": "POST /api/v1/providers/burst",
                     "status": "error", "durationMs": 3.2, "spans": []}]}


def _document(name: str, **modules: Any) -> dict[str, Any]:
    base = {"service": name, "version": "0.1.0", "pid": 4242, "uptime": 75.0, "tracer": TRACER, "rateLimiter": None,
            "cache": None, "circuitBreakers": None, "pool": None, "queryOptimizer": None}
    return base | modules


@dataclass(frozen=True)
class Answer:
    """What a canned service answers to GET /api/v1/system/observability."""

    status: int = 200
    body: str = ""
    content_type: str = "application/json"


def _json(document: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(document))


HANG = "hang"  # a service that takes the connection and never answers: observe times out


@contextmanager
def _serving(loaded: LoadedConfig, routes: dict[str, Answer | str]) -> Iterator[None]:
    """Each named service answered by a real HTTP server on its configured port; a service not named
    has nothing listening (connection refused). Every server is stopped on the way out."""
    done = threading.Event()
    servers = []
    for name, outcome in routes.items():
        class Handler(BaseHTTPRequestHandler):
            answer = outcome

            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                if self.answer == HANG:
                    done.wait(10)
                    return
                assert isinstance(self.answer, Answer)
                assert self.path == "/api/v1/system/observability", self.path
                body = self.answer.body.encode()
                self.send_response(self.answer.status)
                self.send_header("Content-Type", self.answer.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # quiet: pytest shows what matters
                pass

        server = ThreadingHTTPServer(("127.0.0.1", loaded.services[name].port), Handler)
        server.daemon_threads = True
        # A short poll interval: shutdown() waits for it, once per server.
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
    try:
        yield
    finally:
        done.set()
        for server in servers:
            server.shutdown()
            server.server_close()


def _render(loaded: LoadedConfig, names: list[str], routes: dict[str, Answer | str]) -> tuple[int, str]:
    console = Console(record=True, width=200, color_system=None)
    with _serving(loaded, routes):
        code = observe(loaded, names, console)
    return code, console.export_text()


def test_every_state_is_shown_with_its_reason(stack_config: Callable[..., LoadedConfig]) -> None:
    loaded = stack_config()
    budget = _document("budget", rateLimiter={
        "rateLimit": 100, "refillRate": 10, "totalRequests": 150, "allowedRequests": 100, "deniedRequests": 50,
        "allowRate": 2 / 3, "activeBuckets": 2, "buckets": {"10.0.0.7": {"tokens": 0.0, "denied": 50}}},
        cache={"hits": 30, "misses": 10, "hitRate": 0.75, "memoryItems": 12, "diskItems": 40, "diskBytes": 65536},
        circuitBreakers={"provider": {"status": "open", "callCount": 9, "failureCount": 5, "rejectedCount": 3,
                                      "lastFailureTime": "2025-11-14T12:30:00Z"}},
        pool={"size": 2, "idle": 1, "inUse": 1, "waiting": 0, "acquired": 33, "timeouts": 0},
        queryOptimizer={"batchesExecuted": 4, "avgBatchSize": 2.5, "singleflightCalls": 12, "singleflightShared": 7})
    code, text = _render(loaded, ["web", "training", "meta", "budget", "coach", "reports"], {
        "web": _json(_document("web")),
        # training: nothing listens
        "meta": HANG,
        "budget": _json(budget),
        "coach": Answer(200, "<html>not json</html>", "text/html"),
        "reports": _json({"ok": False}, status=500),
    })
    assert code == 1  # one-shot observe fails when any polled service is not up
    assert re.search(r"training .* down \(connection refused\)", text)
    assert re.search(r"meta .* timeout \(no answer within 0\.5 s\)", text)
    assert re.search(r"coach .* malformed \(the answer is not JSON\)", text)
    assert re.search(r"reports .* error \(HTTP 500\)", text)
    assert re.search(r"web .* up .* 4242 +1m15s", text)
    assert re.search(r"budget +1,245 +0 +130 +23\.4 +45\.20 +30\.10 +120\.00 +734\.50 +8\.0%", text)
    assert re.search(r"budget +100 +10 +100 +50 +66\.7% +2 +10\.0\.0\.7 \(50\)", text)  # the limiter denying
    assert re.search(r"budget +30 +10 +75\.0% +12 +40 +65,536", text)
    assert re.search(r"budget +provider +open +9 +5 +3 +\S+ ago", text)  # the breaker open
    assert "budget pool: 2 open (1 in use, 0 waiting), 33 acquired, 0 timeouts" in text
    assert "budget query optimizer: 4 batches (avg 2.5), 7 of 12 calls shared" in text


def test_all_up_exits_0_and_json_is_the_merged_document(stack_config: Callable[..., LoadedConfig],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    loaded = stack_config()
    with _serving(loaded, {name: _json(_document(name)) for name in ("web", "budget")}):
        code = observe(loaded, ["web", "budget"], Console(), as_json=True)
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["up"] == 2 and document["total"] == 2
    assert document["services"]["budget"]["state"] == "up"
    assert document["services"]["budget"]["observability"]["tracer"]["totalTraces"] == 1245


def test_a_document_with_strings_for_numbers_is_malformed() -> None:
    assert check_document({"tracer": {**TRACER, "avgLatency": "45.2ms"}}) == \
        "tracer fields that are not finite numbers: avgLatency"
    assert check_document([]) == "the answer is not a JSON object"
    assert check_document({"tracer": TRACER}) is None


# Each is what a service could answer, and what the observation must say about it. NaN goes as raw
# JSON text: json.loads accepts it, and json.dumps would print it back into --json.
BROKEN = {
    "web": (json.dumps(_document("web", uptime="x")), "uptime is not a finite number"),
    "training": (json.dumps(_document("training", tracer={**TRACER, "throughput": float("nan")})),
                 "tracer fields that are not finite numbers: throughput"),
    "meta": (json.dumps(_document("meta", tracer={**TRACER, "spans": None})), "tracer spans are not a list"),
    "budget": (json.dumps(_document("budget", tracer={**TRACER, "spans": 5})), "tracer spans are not a list"),
}


def test_a_document_with_broken_values_is_malformed_with_its_reason(stack_config: Callable[..., LoadedConfig]) -> None:
    assert "NaN" in BROKEN["training"][0]
    code, text = _render(stack_config(), list(BROKEN), {name: Answer(200, body) for name, (body, _) in BROKEN.items()})
    assert code == 1
    for name, (_, reason) in BROKEN.items():
        assert re.search(rf"{name} .* malformed \({re.escape(reason)}\)", text), name
    assert "Tracing" not in text  # no malformed document reaches the module tables


def test_json_of_broken_documents_names_the_reasons_and_never_nan(stack_config: Callable[..., LoadedConfig],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    loaded = stack_config()
    with _serving(loaded, {name: Answer(200, body) for name, (body, _) in BROKEN.items()}):
        code = observe(loaded, list(BROKEN), Console(), as_json=True)
    out = capsys.readouterr().out
    assert code == 1 and "NaN" not in out
    services = json.loads(out)["services"]
    for name, (_, reason) in BROKEN.items():
        assert services[name]["state"] == "malformed" and services[name]["reason"] == reason
        assert services[name]["observability"] is None


def test_the_most_limited_clients_are_the_most_denied(stack_config: Callable[..., LoadedConfig]) -> None:
    buckets = {client: {"tokens": 0.0, "denied": denied}
               for client, denied in (("10.0.0.1", 1), ("10.0.0.2", 0), ("10.0.0.3", 5), ("10.0.0.4", 3),
                                      ("10.0.0.5", 9))}
    budget = _document("budget", rateLimiter={
        "rateLimit": 100, "refillRate": 10, "allowedRequests": 100, "deniedRequests": 18, "allowRate": 0.85,
        "activeBuckets": 5, "buckets": buckets})
    _, text = _render(stack_config(), ["budget"], {"budget": _json(budget)})
    assert re.search(r"budget .* 10\.0\.0\.5 \(9\), 10\.0\.0\.3 \(5\), 10\.0\.0\.4 \(3\) *$", text, re.MULTILINE)


def test_the_watch_history_keeps_a_minute_of_throughput_and_new_errors_once() -> None:
    history = History()
    down = Observation("budget", 3003, "down", 1.0, "connection refused")
    for second in range(3):
        traffic = _document("web", tracer={**TRACER, "totalTraces": 1000 + 25 * second})
        history.add([down, Observation("web", 3000, "up", 1.0, None, traffic)], now=100.0 + second)
    assert len(history.errors) == 2  # the refusal once, the error trace once
    # req/s is the counter's rate between polls (25/s), not the tracer's minute mean (23.4): none before two polls
    assert [value for _, value in history.throughput["web"]] == [None, 25.0, 25.0]
    assert sparkline([0, 5, 10]) == "▁▅█" and sparkline([0, 0]) == "▁▁"


def _with_spans(name: str, spans: Any) -> Observation:
    return Observation(name, 3000, "up", 1.0, None, _document(name, tracer={**TRACER, "spans": spans}))


def test_the_watch_history_takes_odd_spans_without_crashing() -> None:
    history = History()
    odd = {"traceId": ["4bf9", "2f35"], "name": "GET /", "status": "error"}  # unhashable as given
    for _ in range(3):
        history.add([_with_spans("web", None), _with_spans("meta", [1, "x"]), _with_spans("budget", [odd])])
    assert [(what, trace) for _, _, what, trace in history.errors] == [("GET / failed", "['4bf9', '2f35']")]


def test_the_watch_history_remembers_a_bounded_number_of_traces() -> None:
    history = History()
    for number in range(5000):
        history.add([_with_spans("web", [{"traceId": f"t{number}", "name": "GET /", "status": "error"}])])
    assert len(history._seen_traces) <= SEEN_TRACES
    history.add([_with_spans("web", [{"traceId": "t4999", "name": "GET /", "status": "error"}])])
    assert history.errors[-1][2:] == ("GET / failed", "t4999") and len(history.errors) == history.errors.maxlen


def test_the_watch_frame_puts_the_summary_first_then_throughput_and_errors() -> None:
    observations = [Observation("web", 3000, "up", 1.0, None, _document("web")),
                    Observation("budget", 3003, "down", 1.0, "connection refused")]
    board = Dashboard(lambda: observations, 1.0)
    board.take(board.fetch())
    console = Console(record=True, width=160, height=60, color_system=None, force_terminal=True)
    console.print(board.frame(console, keys=True))
    text = console.export_text()
    assert text.index("service  state") < text.index("Throughput") < text.index("Recent errors") \
        < text.index("Tracing")
    console.print(board.frame(console, keys=True))  # the cached rendering reads the same
    assert console.export_text().split("\n")[1:] == text.split("\n")[1:]  # all but the header's time
    assert sparkline([float("nan"), 5, float("inf")]) == "▁█▁"


def test_a_live_poll_of_real_services(tmp_path: Path) -> None:
    with EphemeralStack(tmp_path) as stack:
        stack.start("web", "budget")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")} | {"NO_COLOR": "1"}
        command = [sys.executable, "-m", "tooloo_cli", "--config", str(stack.config_path), "observe"]
        some = subprocess.run([*command, "-s", "web", "-s", "budget", "--json"], capture_output=True, text=True,
                              env=env, timeout=60)
        every = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert some.returncode == 0, some.stderr
    document = json.loads(some.stdout)
    assert document["services"]["budget"]["observability"]["cache"]["hitRate"] == 0.0
    assert every.returncode == 1 and "connection refused" in every.stdout and "Circuit breakers" in every.stdout


def test_watch_redraws_a_live_dashboard_under_a_terminal(tmp_path: Path) -> None:
    with EphemeralStack(tmp_path) as stack:
        stack.start("web", "training")
        controller, terminal = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")} | {
            "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "80"}
        process = subprocess.Popen(
            [sys.executable, "-m", "tooloo_cli", "--config", str(stack.config_path), "observe", "--watch",
             "--interval", "0.3", "-s", "web", "-s", "training"],
            stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True)
        os.close(terminal)
        screen = b""
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(set(re.findall(rb"updated (\d\d:\d\d:\d\d)", screen))) < 2:
                if select.select([controller], [], [], 0.2)[0]:
                    screen += os.read(controller, 65536)
            process.send_signal(signal.SIGINT)
            # Read on while it leaves: a terminal nobody reads fills, and its last frame would block.
            deadline = time.monotonic() + 10
            while process.poll() is None and time.monotonic() < deadline:
                if select.select([controller], [], [], 0.1)[0]:
                    try:
                        screen += os.read(controller, 65536)
                    except OSError:  # the terminal closed with the process
                        break
            process.wait(timeout=5)
        finally:
            if process.poll() is None:
                process.kill()
            os.close(controller)
    text = screen.decode("utf-8", errors="replace")
    assert process.returncode == 130  # Ctrl-C's code, as every command's
    assert "Services" in text and "Tracing" in text and "Circuit breakers" in text and "Throughput" in text
    assert len(set(re.findall(r"updated (\d\d:\d\d:\d\d)", text))) >= 2  # it redrew with a newer poll
    assert "\x1b[?1049h" in text  # the alternate screen: drawn in place, no scrolling


def test_unusable_numbers_and_control_characters_from_a_service_break_nothing(
        stack_config: Callable[..., LoadedConfig]) -> None:
    """10**400 (past a float), NaN and Infinity in a document, and ESC sequences in its strings and keys: the
    one-shot tables and the --watch frame print no raw escape, no nan or inf, and do not crash."""
    loaded = stack_config()
    escape = "\x1b]0;owned\x07\x1b[2J"  # a window title, then a cleared screen
    web = _document("web", tracer={**TRACER, "errorCount": 3, "spans": [
        {"traceId": f"id{escape}", "name": f"GET /{escape}", "status": "error"}]},
        rateLimiter={"rateLimit": 100, "refillRate": 10, "allowedRequests": 10**400, "deniedRequests": 10**400,
                     "allowRate": 0.5, "activeBuckets": 1, "buckets": {f"client{escape}": {"denied": 5}}},
        circuitBreakers={f"breaker{escape}": {"status": "open", "callCount": 10**400}},
        redis={"state": "fallback", "fallback": "local", "error": f"lost{escape}"})
    budget = _document("budget", pool={"size": 2, "inUse": 1, "waiting": float("inf"), "acquired": float("nan")})
    routes: dict[str, Answer | str] = {
        "web": _json(web), "budget": _json(budget),
        "meta": _json(_document("meta", uptime=10**400)),  # check_document's own test raised OverflowError
        "reports": _json(_document("reports", tracer={**TRACER, "errorCount": float("nan")})),
    }
    names = list(routes)
    targets = targets_of(loaded, names)
    console = Console(record=True, width=200, color_system=None)
    board = Dashboard(lambda: poll(targets, 0.5), 1.0)
    with _serving(loaded, routes):
        code = observe(loaded, names, console)
        for _ in range(2):
            board.take(board.fetch())
    text = console.export_text()
    assert code == 1
    assert "\x1b" not in text and "\x07" not in text, repr(text)
    assert "breaker\\x1b]0;owned\\x07\\x1b[2J" in text and "client\\x1b]0;owned" in text and "lost\\x1b]0" in text
    assert re.search(r"meta .* malformed \(uptime is not a finite number\)", text)
    assert re.search(r"reports .* malformed \(tracer fields that are not finite numbers: errorCount\)", text)
    assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE), text
    out = io.StringIO()
    console = Console(file=out, width=160, height=60, force_terminal=True, color_system=None)
    console.print(board.frame(console, keys=True))
    frame = out.getvalue()
    assert "\x1b" not in frame and "\x07" not in frame, repr(frame)
    assert "breaker breaker\\x1b]0;owned\\x07\\x1b[2J open" in frame and "GET /\\x1b]0;owned" in frame
    assert "limiter refused" not in frame and "waiting" not in frame.split("Throughput")[0]  # no figure to flag
    assert not re.search(r"\b(nan|inf)\b", frame, re.IGNORECASE), frame


def test_a_document_nested_too_deeply_is_malformed(stack_config: Callable[..., LoadedConfig]) -> None:
    # 3000 levels: json.loads raised RecursionError; 600 inside a document: json took them, cleaned() did not.
    inner = json.dumps(_document("budget"))
    routes: dict[str, Answer | str] = {"web": Answer(200, "[" * 3000 + "]" * 3000),
                                       "budget": Answer(200, f'{inner[:-1]}, "extra": {"[" * 600}{"]" * 600}}}')}
    code, text = _render(stack_config(), list(routes), routes)  # "internal error: RecursionError" before
    assert code == 1
    for name in routes:
        assert re.search(rf"{name} .* malformed \(the answer nests more than 100 levels deep\)", text), text
