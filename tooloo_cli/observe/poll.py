"""Polling every observability endpoint at once: failure is data, never an exception.

    observations = poll(targets_of(loaded, ["web", "budget"]), timeout=0.5)
    [(o.name, o.state, o.reason) for o in observations]   # ("budget", "down", "connection refused")

The documents are asked for through tooloo's loopback client (`tooloo_cli.loopback`: a
socket and httptools, a thread per target), not httpx: a one-shot observe is over in a
fifth of a second, and httpx's first request alone imported httpcore and anyio for ~55 ms
of it, where the sockets take 7-12 ms. The services listen on this machine, so no proxy
applies (the loopback client never uses one).

An observation is `up` with the service's document, or `down` (nothing listens),
`timeout`, `error` (an HTTP error status) or `malformed` (not the observability document),
each with a reason a person can read. There is one target per replica (`budget.2`); a
service of the user's own (a `command`) has no observability document: it is observed as
`n/a`, is not polled, and does not make a one-shot observe fail.

What a service sends is shown on a terminal, so a document and a reason are made safe where
they come in: every control character but a tab, in a string or a key, is written out
(ESC as the four characters backslash, x, 1, b), and no escape sequence of a service's reaches the
terminal; a document nested more than MAX_DEPTH levels is malformed (what walks it would exhaust
Python's recursion limit). `number` is the one test of a figure: a JSON number that a float holds finitely
(json accepts NaN, Infinity and 10**400, and each breaks the arithmetic of a table); `figure` and
`share` are what may be printed of one (no 300-digit cell, no inf%).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tooloo_cli.config import LoadedConfig
from tooloo_cli.loopback import BadAnswer, LoopbackError, TimedOut, Unreachable, gather, request
from tooloo_cli.units import visible

PATH = "/api/v1/system/observability"
NOT_OBSERVABLE = "n/a"
NUMERIC_TRACER_FIELDS = ("activeTraces", "totalTraces", "sampledTraces", "avgLatency", "p50Latency", "p95Latency",
                         "p99Latency", "throughput", "errorRate")
# Numbers when present; a document without one still has everything else to show (--watch's errors read "-").
OPTIONAL_TRACER_FIELDS = ("errorCount",)
# Deeper than any observability document (its spans nest a few levels), and far from Python's recursion limit,
# which cleaned(), repr() and json.dumps (--json) would reach on a deeper one.
MAX_DEPTH = 100
TOO_DEEP = f"the answer nests more than {MAX_DEPTH} levels deep"
LARGEST = 1e15  # past any count, size, rate or latency a service has: a figure beyond it is shown as unknown


@dataclass(frozen=True)
class Target:
    name: str
    port: int | None
    url: str | None  # None: it serves no observability document

    def address(self) -> tuple[tuple[str, int], str]:
        """Where to ask, and what: ((host, port), the request target) of `url`."""
        assert self.url is not None
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{self.url} is not an http:// address")
        return (parts.hostname, parts.port or 80), (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


@dataclass
class Observation:
    name: str
    port: int | None
    state: str  # up, down, timeout, error, malformed; n/a for a service without the document
    latency_ms: float
    reason: str | None = None
    document: dict[str, Any] | None = None
    polled_at: float = 0.0

    @property
    def up(self) -> bool:
        return self.state == "up"

    @property
    def observable(self) -> bool:
        return self.state != NOT_OBSERVABLE

    def module(self, key: str) -> dict[str, Any] | None:
        """A module's section of the document (None when down or not embedded)."""
        if self.document is None:
            return None
        section = self.document.get(key)
        return section if isinstance(section, dict) else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "state": self.state, "latencyMs": self.latency_ms,
                "reason": self.reason, "polledAt": self.polled_at, "observability": self.document}


def targets_of(loaded: LoadedConfig, names: list[str] | None = None) -> list[Target]:
    """One target per replica of `names` (services or replicas; every one when empty)."""
    from tooloo_cli.stack import stack_of

    stack = stack_of(loaded)
    return [Target(replica.name, replica.port,
                   f"{replica.url}{PATH}" if stack.specs[replica.service].builtin and replica.url else None)
            for replica in stack.replicas(names or None)]


def number(value: Any) -> float | None:
    """`value` as a finite float; None for anything else: not a number (a bool is none), NaN, infinite, or an
    integer past a float's range (float() raises OverflowError on 10**400)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        found = float(value)
    except OverflowError:
        return None
    return found if math.isfinite(found) else None


def figure(value: Any) -> float | None:
    """`value` as a figure to print: number(value), and None past ±LARGEST too (1e306 is finite, and prints
    as a 300-character cell that squeezes every other column to nothing)."""
    found = number(value)
    return None if found is None or abs(found) > LARGEST else found


def share(value: Any) -> float | None:
    """`value` as a share to print as a percentage: number(value) held to [0, 1] (1e307 is no 1e309%, inf)."""
    found = number(value)
    return None if found is None else min(max(found, 0.0), 1.0)


def cleaned(value: Any) -> Any:
    """`value` (a decoded JSON document, or a part of one, at most MAX_DEPTH levels deep: it recurses) with
    every control character but a tab written out, in its strings and its keys: a service's ESC sequence
    would otherwise reach the terminal (rich drops only BEL, BS, VT, FF and CR)."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible(key): cleaned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [cleaned(item) for item in value]
    return value


def _needs_cleaning(body: bytes) -> bool:
    """Whether a string of JSON text `body` may hold a control character. Strict JSON (json.loads' own)
    has no raw one below 0x20 in a string: only an escape (a backslash) makes one, or a raw DEL, or a raw C1
    character (which is not ASCII)."""
    return not body.isascii() or b"\\" in body or b"\x7f" in body


def _too_deep(document: Any) -> bool:
    """Whether decoded JSON `document` nests more than MAX_DEPTH levels: one level at a time, no recursion."""
    level = [document]
    for _ in range(MAX_DEPTH):
        level = [child for container in level
                 for child in (container.values() if isinstance(container, dict) else container)
                 if isinstance(child, (dict, list))]
        if not level:
            return False
    return True


def check_document(document: Any) -> str | None:
    """Why `document` is not an observability document, or None when it is one."""
    if not isinstance(document, dict):
        return "the answer is not a JSON object"
    if "uptime" in document and number(document["uptime"]) is None:
        return "uptime is not a finite number"
    tracer = document.get("tracer")
    if not isinstance(tracer, dict):
        return "no tracer section"
    wrong = [field for field in NUMERIC_TRACER_FIELDS if number(tracer.get(field)) is None] + [
        field for field in OPTIONAL_TRACER_FIELDS if field in tracer and number(tracer[field]) is None]
    if wrong:
        return f"tracer fields that are not finite numbers: {', '.join(wrong)}"
    if "spans" in tracer and not isinstance(tracer["spans"], list):
        return "tracer spans are not a list"
    return None


def _poll_one(target: Target, timeout: float) -> Observation:
    if target.url is None:
        return Observation(target.name, target.port, NOT_OBSERVABLE, 0.0, "a command of its own: no observability "
                           "document (see `tooloo status`)", None, time.time())
    started = time.perf_counter()

    def seen(state: str, reason: str | None = None, document: dict[str, Any] | None = None) -> Observation:
        return Observation(target.name, target.port, state, (time.perf_counter() - started) * 1000,
                           None if reason is None else visible(reason), document, time.time())

    try:
        address, path = target.address()
        answer = request(address, "GET", path, timeout=timeout, headers={"Accept": "application/json"})
    except Unreachable as exc:
        return seen("down", "connection refused" if str(exc).startswith("nothing listens") else str(exc))
    except TimedOut:
        return seen("timeout", f"no answer within {timeout:g} s")
    except BadAnswer as exc:  # something listens, but gave no usable HTTP answer
        return seen("down", str(exc))
    except (LoopbackError, OSError, ValueError) as exc:  # a host that does not resolve, an unusable url
        return seen("down", f"{type(exc).__name__}: {exc}".rstrip(": "))
    if answer.status != 200:
        return seen("error", f"HTTP {answer.status}")
    try:
        document = answer.json()
    except RecursionError:  # json.loads nests as deep as Python's recursion limit lets it, ~1000 levels
        return seen("malformed", TOO_DEEP)
    except ValueError:
        return seen("malformed", "the answer is not JSON")
    if _too_deep(document):
        return seen("malformed", TOO_DEEP)
    # Most documents need no cleaning, and the walk costs about three times the parse (a 1.6 MB one: ~60 ms).
    if _needs_cleaning(answer.body):
        document = cleaned(document)
    problem = check_document(document)
    if problem is not None:
        return seen("malformed", problem)
    return seen("up", None, document)


def poll(targets: list[Target], timeout: float) -> list[Observation]:
    """Every target at once; the observations come back in the targets' order."""
    return gather([lambda target=target: _poll_one(target, timeout) for target in targets])  # type: ignore[misc]
