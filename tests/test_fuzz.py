"""Fuzzing every endpoint of the eight services, directly and through web: no input gets a 5xx.

The stack runs as real processes; requests are raw bytes on a socket, so paths, query
strings, headers and bodies can hold what an HTTP client library would refuse to send:
lone surrogates in JSON, control bytes, bytes 0x80-0xff, huge numbers, deep nesting. The
endpoints are read from the apps' own routes, and the fields each one reads are found by
asking it (a 422 names the field it wanted), so a new route or field is fuzzed without a
word here. Afterwards no breaker is open: a client's input never counts against a sibling.
"""

from __future__ import annotations

import io
import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tooloo_cli.bench.stack import EphemeralStack, write_ephemeral_config
from tooloo_cli.config import Config, load_config
from tooloo_cli.config import BUILTIN_SERVICES as SERVICE_NAMES
from tooloo_cli.services import create_app
from tooloo_cli.stack import owner_of

EXAMPLES = 12  # per endpoint and method: bounded in count (and, every service being local, in time)
FIELDS = ("prompt", "ttlSeconds", "criticality", "name", "messages", "role", "content", "domain", "intervalMs",
          "rounds", "category")
EDGE_TEXT = ("\ud800", "\udfff", "x\udbff", "\ud83d\ude00\udc00", "", " ", "\x00", "\u202e", "\ufeff", "\uffff",
             "é", "\n\r", "' OR 1=1 --", "../../etc/passwd", "a" * 40_000)


def _endpoints() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """Each service's routes as (path, methods), read from the apps themselves."""
    with tempfile.TemporaryDirectory() as directory:
        loaded = load_config(write_ephemeral_config(Path(directory)), env={})
        found = {}
        for name in SERVICE_NAMES:
            app: Any = create_app(name, loaded, access_log=io.StringIO())
            while not hasattr(app, "routes"):
                app = app.app  # through the middleware to the router
            found[name] = [(route.path, tuple(sorted(route.methods or ()))) for route in app.routes
                           if "{" not in route.path]
        return found


ENDPOINTS = _endpoints()
DIRECT = [(name, path, method) for name, routes in ENDPOINTS.items() for path, methods in routes
          for method in methods if method != "HEAD"]
THROUGH_WEB = [("web", path, method) for name, routes in ENDPOINTS.items() if name != "web"
               for path, methods in routes if owner_of(path) == name for method in methods if method != "HEAD"]


def _roomy(config: Config) -> None:
    for settings_ in config.services.values():
        if settings_.rate_limiter is not None:
            settings_.rate_limiter.capacity = settings_.rate_limiter.refill_rate = 1_000_000
    provider = config.services["budget"].provider
    assert provider is not None
    provider.latency_ms = 1
    provider.daily_budget_usd = 1_000_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EphemeralStack]:
    with EphemeralStack(tmp_path_factory.mktemp("fuzz"), _roomy) as running:
        running.start(*SERVICE_NAMES)
        yield running


# -- what a hostile client sends ---------------------------------------------------------------------

edge_text = st.sampled_from(EDGE_TEXT)
text = st.one_of(edge_text, edge_text, edge_text, st.text(max_size=40),
                 st.text(st.characters(codec=None, exclude_categories=()), max_size=20))
numbers = st.one_of(st.integers(), st.integers(min_value=10**300, max_value=10**400), st.floats(allow_nan=False),
                    st.sampled_from([0, -1, 49, 50, 60_000, 60_001, 1e308, -0.0, 2**63]))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(FIELDS) | text, inner,
                                                                       max_size=4)), max_leaves=12)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]) | text, "content": text}),
                    min_size=1, max_size=4)
# Documents name every field the services read, mostly with text at the edges, so that each field's
# validation is what gets tested; some leave fields out, some are not objects at all.
field_values = st.one_of(text, text, values, messages)
documents = st.one_of(st.fixed_dictionaries({field: field_values for field in FIELDS}),
                      st.fixed_dictionaries({field: field_values for field in FIELDS}),
                      st.fixed_dictionaries({}, optional={field: field_values for field in FIELDS}), values)
as_json = documents.map(lambda d: json.dumps(d, ensure_ascii=True).encode())
raw_bodies = st.one_of(as_json, as_json, as_json, as_json, st.just(b""), st.binary(max_size=200),
                       st.just(b"[" * 5000), st.just(b'{"prompt": NaN}'))
# Header values as a client may really send them: printable, with bytes 0x80-0xff (UTF-8 text, Latin-1),
# and now and then the control bytes a parser should refuse.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
                      min_size=1, max_size=30)
header_bytes = st.one_of(header_text.map(lambda t: t.encode("utf-8")),
                         header_text.map(lambda t: t.encode("latin-1", "replace")),
                         st.sampled_from([b"caf\xc3\xa9", b"\xff\xfe\xfd", b"00-" + b"f" * 55, b"1.2.3.4, ::1, x"]),
                         st.binary(min_size=1, max_size=30).map(lambda raw: raw.replace(b"\r", b"").replace(
                             b"\n", b"").replace(b"\x00", b"") or b"x"))
queries = st.lists(st.tuples(st.sampled_from(FIELDS) | st.text(max_size=8), text), max_size=3)


def _request(method: str, path: str, query: list[tuple[str, str]], body: bytes,
             headers: list[tuple[bytes, bytes]]) -> bytes:
    def encode(part: str) -> str:
        return quote_from_bytes(part.encode("utf-8", "surrogatepass"), safe="")

    target = path + ("?" + "&".join(f"{encode(k)}={encode(v)}" for k, v in query) if query else "")
    head = [f"{method} {target} HTTP/1.1".encode(), b"Host: fuzz", b"Connection: close",
            b"Content-Length: %d" % len(body), *(name + b": " + value for name, value in headers)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _status(port: int, request: bytes, keep: bool = False) -> Any:
    """The answer's status (with `keep`: the status and the whole answer), or None for no answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while (keep or b"\r\n" not in answer) and (chunk := sock.recv(65_536)):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    status = int(answer.split(b" ", 2)[1])
    return (status, answer) if keep else status


@st.composite
def hostile(draw: st.DrawFn, path: str, method: str, fields: tuple[str, ...] = ()) -> bytes:
    """One request to `method path`, now and then to a path below it or with another method.

    With the endpoint's `fields`, most bodies are an object of them at the edges, so that
    what lies past their validation is reached.
    """
    if draw(st.integers(0, 9)) == 0:
        path += "/" + quote_from_bytes(draw(st.binary(max_size=12)), safe="")
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS"]))
    headers = draw(st.lists(st.tuples(st.sampled_from([b"user-agent", b"content-type", b"traceparent",
                                                       b"x-forwarded-for", b"accept", b"authorization"]),
                                      header_bytes), max_size=4))
    body = draw(raw_bodies)
    if fields and draw(st.integers(0, 2)):
        body = json.dumps(draw(st.fixed_dictionaries({field: text for field in fields})), ensure_ascii=True).encode()
    return _request(method, path, draw(queries), body, headers)


FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def _fields_of(port: int, path: str, method: str) -> list[str]:
    """The JSON fields the endpoint asks for, found as a client would: by reading its 422s."""
    fields: dict[str, str] = {}
    for _ in range(8):
        status = _status(port, _request(method, path, [], json.dumps(fields).encode(), []), keep=True)
        if status is None or status[0] != 422:
            break
        wanted = json.loads(status[1].split(b"\r\n\r\n", 1)[1] or b"{}").get("field")
        if not isinstance(wanted, str) or wanted in fields or "." in wanted or "[" in wanted:
            break
        fields[wanted] = "x"
    return list(fields)


def _fuzz(stack: EphemeralStack, name: str, path: str, method: str) -> None:
    port = stack.loaded.services[name].port
    fields = _fields_of(port, path, method) if method in ("POST", "PUT", "PATCH") else []

    @FUZZ
    @given(request=hostile(path, method, tuple(fields)))
    def no_5xx(request: bytes) -> None:
        status = _status(stack.loaded.services[name].port, request)
        assert status is not None and status < 500, (name, request[:300], status)

    no_5xx()


@pytest.mark.parametrize(("name", "path", "method"), DIRECT)
def test_no_input_gets_a_5xx_from_any_service(stack: EphemeralStack, name: str, path: str, method: str) -> None:
    _fuzz(stack, name, path, method)


@pytest.mark.parametrize(("name", "path", "method"), THROUGH_WEB)
def test_no_input_gets_a_5xx_through_web(stack: EphemeralStack, name: str, path: str, method: str) -> None:
    _fuzz(stack, name, path, method)


def test_after_the_fuzzing_every_breaker_is_closed_and_every_service_healthy(stack: EphemeralStack) -> None:
    for name in SERVICE_NAMES:
        assert httpx.get(f"{stack.url(name)}/health").status_code == 200, name
        breakers = httpx.get(f"{stack.url(name)}/api/v1/system/observability").json()["circuitBreakers"] or {}
        assert all(b["status"] == "closed" for b in breakers.values()), (name, breakers)
