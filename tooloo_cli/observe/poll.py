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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tooloo_cli.config import LoadedConfig
from tooloo_cli.loopback import BadAnswer, LoopbackError, TimedOut, Unreachable, gather, request

PATH = "/api/v1/system/observability"
NOT_OBSERVABLE = "n/a"
NUMERIC_TRACER_FIELDS = ("activeTraces", "totalTraces", "sampledTraces", "avgLatency", "p50Latency", "p95Latency",
                         "p99Latency", "throughput", "errorRate")


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


def _finite(value: Any) -> bool:
    """A JSON number that is neither NaN nor infinite (response.json() accepts both)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_document(document: Any) -> str | None:
    """Why `document` is not an observability document, or None when it is one."""
    if not isinstance(document, dict):
        return "the answer is not a JSON object"
    if "uptime" in document and not _finite(document["uptime"]):
        return "uptime is not a finite number"
    tracer = document.get("tracer")
    if not isinstance(tracer, dict):
        return "no tracer section"
    wrong = [field for field in NUMERIC_TRACER_FIELDS if not _finite(tracer.get(field))]
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
        return Observation(target.name, target.port, state, (time.perf_counter() - started) * 1000, reason,
                           document, time.time())

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
    except ValueError:
        return seen("malformed", "the answer is not JSON")
    problem = check_document(document)
    if problem is not None:
        return seen("malformed", problem)
    return seen("up", None, document)


def poll(targets: list[Target], timeout: float) -> list[Observation]:
    """Every target at once; the observations come back in the targets' order."""
    return gather([lambda target=target: _poll_one(target, timeout) for target in targets])  # type: ignore[misc]
