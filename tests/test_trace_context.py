"""W3C Trace Context (Level 2) through real processes: a private web (and budget) on free ports.

What a client sends web, web passes on to the owning service as the spec says: the same
trace id under web's own span, the random-trace-id flag as received (set on ids web makes),
flags web does not know as zero, version 00, and `tracestate` validated, joined and cut to
the spec's limits; two `traceparent` headers are a new trace, and then no `tracestate`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import serve_in_thread, stop_servers
from tooloo_cli.bench.stack import EphemeralStack
from tooloo_cli.config import Config

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def _sample_everything(config: Config) -> None:
    for name in ("web", "budget"):
        config.services[name].tracer.sampling_rate = 1.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[..., EphemeralStack]]:
    """Starts the named services as real processes on free ports; each is stopped by its pid at the end."""
    stacks: list[EphemeralStack] = []

    def start(*names: str) -> EphemeralStack:
        directory = tmp_path / f"stack{len(stacks)}"
        directory.mkdir()
        stacks.append(EphemeralStack(directory, _sample_everything))
        stacks[-1].start(*names)
        return stacks[-1]

    yield start
    for started in stacks:
        started.stop_all()


async def _echo_headers(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """A stand-in for budget that answers the request headers it was sent, as a JSON list of pairs."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = json.dumps({"ok": True, "headers": [[name.decode(), value.decode("latin-1")]
                                               for name, value in scope["headers"]]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def web_before_an_echo(stack: Callable[..., EphemeralStack]) -> Iterator[Callable[..., list[tuple[str, str]]]]:
    """web as a real process, and on budget's port a server that answers the headers web sent it.

        sent = web_before_an_echo([("traceparent", "00-…-01")])   # the headers budget received
    """
    web = stack("web")
    host, port = web.loaded.config.stack.host, web.loaded.services["budget"].port
    running = [serve_in_thread(_echo_headers, host, port, "echo-budget")]
    client = httpx.Client(base_url=web.url("web"), timeout=10)

    def call(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        response = client.get("/api/v1/budget", headers=headers)
        assert response.status_code == 200, response.text
        return [(name, value) for name, value in response.json()["headers"]]

    yield call
    client.close()
    stop_servers(running)


def _only(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [value for key, value in headers if key == name]
    assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
    return values[0] if values else None


def _kept_traces(url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/api/v1/system/observability", timeout=10).json()["tracer"]["spans"]


# -- web and budget, both real -------------------------------------------------------------------


def test_a_request_into_web_reaches_budget_with_its_trace_id_and_tracestate(
        stack: Callable[..., EphemeralStack]) -> None:
    services = stack("web", "budget")
    trace_id = secrets.token_hex(16)
    response = httpx.get(f"{services.url('web')}/api/v1/budget", timeout=10, headers=[
        ("traceparent", f"00-{trace_id}-{PARENT_ID}-03"),
        ("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"),  # two headers: one list, in order
        ("tracestate", ", ,tenant@vendor=x1,\tcongo=older"),
    ])
    assert response.status_code == 200, response.text
    assert response.json()["traceId"] == trace_id
    assert response.headers["traceparent"].split("-")[1] == trace_id
    passed_on = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,tenant@vendor=x1"
    (at_web,) = [trace for trace in _kept_traces(services.url("web")) if trace["traceId"] == trace_id]
    (at_budget,) = [trace for trace in _kept_traces(services.url("budget")) if trace["traceId"] == trace_id]
    assert at_web["traceState"] == passed_on and at_budget["traceState"] == passed_on
    assert at_web["spans"][0]["parentId"] == PARENT_ID
    # budget's request hangs under a span of web's trace, not under the client's
    assert at_budget["spans"][0]["parentId"] in {span["spanId"] for span in at_web["spans"]}


def test_two_traceparent_headers_are_a_new_trace_without_tracestate(stack: Callable[..., EphemeralStack]) -> None:
    services = stack("web", "budget")
    first, second = secrets.token_hex(16), secrets.token_hex(16)
    response = httpx.get(f"{services.url('web')}/api/v1/budget", timeout=10, headers=[
        ("traceparent", f"00-{first}-{PARENT_ID}-01"),
        ("traceparent", f"00-{second}-{PARENT_ID}-01"),
        ("tracestate", "congo=t61rcWkgMzE"),
    ])
    assert response.status_code == 200, response.text
    trace_id = response.json()["traceId"]
    assert trace_id not in (first, second) and response.headers["traceparent"].split("-")[1] == trace_id
    (at_budget,) = [trace for trace in _kept_traces(services.url("budget")) if trace["traceId"] == trace_id]
    assert "traceState" not in at_budget


# -- what web sends on, read by a stand-in for budget ------------------------------------------------


@pytest.mark.parametrize(("received", "sent"), [
    (f"00-{TRACE_ID}-{PARENT_ID}-02", "02"),  # random, unsampled: kept as received
    (f"00-{TRACE_ID}-{PARENT_ID}-00", "00"),  # not random: not made random
    (f"00-{TRACE_ID}-{PARENT_ID}-ff", "03"),  # flags web does not know go out as zero
    (f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like", "01"),  # a later version, sent as 00
])
def test_web_passes_the_trace_on_with_the_flags_it_knows(
        web_before_an_echo: Callable[..., list[tuple[str, str]]], received: str, sent: str) -> None:
    headers = web_before_an_echo([("traceparent", received), ("tracestate", "congo=t61rcWkgMzE")])
    version, trace_id, parent_id, flags = (_only(headers, "traceparent") or "").split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, sent) and parent_id != PARENT_ID
    assert _only(headers, "tracestate") == "congo=t61rcWkgMzE"


@pytest.mark.parametrize("received", [
    None, f"00-{TRACE_ID}-{'0' * 16}-01", f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01",
    f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
])
def test_without_a_valid_traceparent_web_starts_a_random_trace_and_drops_tracestate(
        web_before_an_echo: Callable[..., list[tuple[str, str]]], received: str | None) -> None:
    asked = [("tracestate", "congo=t61rcWkgMzE")] + ([("traceparent", received)] if received else [])
    headers = web_before_an_echo(asked)
    version, trace_id, _, flags = (_only(headers, "traceparent") or "").split("-")
    assert version == "00" and trace_id != TRACE_ID and int(flags, 16) & 0x02  # 128 random bits: flag set
    assert _only(headers, "tracestate") is None


@pytest.mark.parametrize(("received", "sent"), [
    (["", "congo=1 ,, \trojo=2"], "congo=1,rojo=2"),  # an empty header, OWS, empty members
    (["congo=1,rojo=2", "congo=3"], "congo=1,rojo=2"),  # a repeated key: the left-most kept
    (["congo=1,Rojo=2"], None),  # a malformed member: the whole header discarded
    ([",".join(f"k{n}=v" for n in range(33))], None),  # over 32 members
    ([",".join(f"k{n}=v" for n in range(32))], ",".join(f"k{n}=v" for n in range(32))),
    (["a=" + "x" * 200, "b=" + "y" * 250 + ",d=" + "z" * 100, "c=1"],  # 562 characters, over 512: members
     "a=" + "x" * 200 + ",d=" + "z" * 100 + ",c=1"),  # over 128 go first (right-most first), enough here
])
def test_web_passes_tracestate_on_within_the_specs_limits(
        web_before_an_echo: Callable[..., list[tuple[str, str]]], received: list[str], sent: str | None) -> None:
    headers = web_before_an_echo([("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
                                  *(("tracestate", value) for value in received)])
    assert (_only(headers, "traceparent") or "").split("-")[1] == TRACE_ID
    assert _only(headers, "tracestate") == sent


def test_a_sampled_request_carries_the_http_conventions_attributes(stack: Callable[..., EphemeralStack]) -> None:
    services = stack("budget")
    url = services.url("budget")
    ids = {}
    for method in ("GET", "PURGE"):  # PURGE: outside HTTP's registered methods, so named _OTHER and kept aside
        trace_id = secrets.token_hex(16)
        httpx.request(method, f"{url}/api/v1/budget?x=1", timeout=10,
                      headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"})
        ids[method] = trace_id
    kept = {trace["traceId"]: trace["spans"][0]["attributes"] for trace in _kept_traces(url)}
    assert kept[ids["GET"]] == {"http.request.method": "GET", "url.path": "/api/v1/budget", "url.scheme": "http",
                                "http.route": "/api/v1/budget", "http.response.status_code": 200}
    assert kept[ids["PURGE"]] == {"http.request.method": "_OTHER", "http.request.method_original": "PURGE",
                                  "url.path": "/api/v1/budget", "url.scheme": "http", "http.route": "/api/v1/budget",
                                  "http.response.status_code": 405}
