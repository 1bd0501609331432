"""Circuit breaker: stop calling a dependency that keeps failing, and probe it to recover.

closed → open after `failure_threshold` consecutive failures; open rejects at once with
`CircuitOpenError`; after `reset_timeout` seconds it turns half_open and lets up to
`half_open_max_calls` probe calls through: a success closes it, a failure opens it again.

    breaker = CircuitBreaker("provider", failure_threshold=5, reset_timeout=30, call_timeout=10)
    try:
        text = await breaker.call(provider.complete, prompt)
    except CircuitOpenError:
        return fallback()
    breaker.snapshot().failures        # counters, typed; status() is their JSON

A call that raises one of `excluded` counts as nothing (the request was the caller's
fault), one of `ignore` as a success (the dependency answered); a call slower than
`call_timeout` fails with CallTimeoutError (a TimeoutError). Both errors of the breaker
are ResilienceErrors.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from tooloo_cli.resilience.errors import ResilienceError

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitOpenError(ResilienceError):
    """Raised instead of calling while the breaker is open (or its probes are taken)."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


class CallTimeoutError(ResilienceError, TimeoutError):
    """Raised when a call through the breaker exceeds its `call_timeout`."""


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A CircuitBreaker's state and counters at one moment; `status()` is its JSON.

    Counters since the breaker was made: calls (let through), successes, failures,
    rejections (refused while open), timeouts, state_changes. `last_failure_time` is in
    epoch seconds; `transitions` are the latest state changes, oldest first.
    """

    name: str
    state: str
    calls: int
    successes: int
    failures: int
    rejections: int
    timeouts: int
    consecutive_failures: int
    failure_threshold: int
    reset_timeout: float
    state_changes: int
    last_failure_time: float | None
    last_error: str | None
    last_error_kind: str | None
    transitions: tuple[dict[str, Any], ...]

    def to_dict(self, detail: bool = True) -> dict[str, Any]:
        """Without `detail`, `lastError` names the kind of the last failure only, not its text."""
        return {
            "status": self.state,
            "callCount": self.calls,
            "successCount": self.successes,
            "failureCount": self.failures,
            "rejectedCount": self.rejections,
            "timeoutCount": self.timeouts,
            "consecutiveFailures": self.consecutive_failures,
            "failureThreshold": self.failure_threshold,
            "resetTimeout": self.reset_timeout,
            "lastFailureTime": _iso(self.last_failure_time),
            "lastError": self.last_error if detail else self.last_error_kind,
            "stateChanges": self.state_changes,
            "transitions": list(self.transitions),
        }


class CircuitBreaker:
    """Guards async calls to one dependency.

    `ignore` lists exception types that pass through without counting as failures (a 404
    from a healthy upstream, say): the dependency answered, so they count as successes.
    `excluded` lists exception types raised before the dependency was reached (a request
    the caller got wrong): they count as nothing at all, so a caller's bad requests can
    neither open the breaker nor mask the dependency's real failures. `clock` must be
    monotonic; it is injectable for tests.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        call_timeout: float | None = 10.0,
        ignore: tuple[type[BaseException], ...] = (),
        excluded: tuple[type[BaseException], ...] = (),
        clock: Callable[[], float] = time.monotonic,
        history: int = 20,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_timeout <= 0:
            raise ValueError(f"reset_timeout must be > 0, got {reset_timeout}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be at least 1, got {half_open_max_calls}")
        if call_timeout is not None and call_timeout <= 0:
            raise ValueError(f"call_timeout must be > 0 or None, got {call_timeout}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_max_calls = half_open_max_calls
        self.call_timeout = call_timeout
        self.ignore = ignore
        self.excluded = excluded
        self._clock = clock
        self._state = CLOSED
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._probes = 0
        # Each half-open period has its own number, so a probe that outlives its period
        # (cancelled or finished after a re-open) can neither free a slot nor decide the state.
        self._period = 0
        self.call_count = self.success_count = self.failure_count = self.rejected_count = 0
        self.timeout_count = 0
        self.last_failure_time: float | None = None
        self.last_error: str | None = None
        self.last_error_kind: str | None = None
        self.state_changes = 0
        self.transitions: deque[dict[str, Any]] = deque(maxlen=history)

    @property
    def state(self) -> str:
        """closed, open or half_open; an open breaker turns half_open once its timeout passes."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._move(HALF_OPEN)
        return self._state

    def _move(self, state: str) -> None:
        self.transitions.append({"from": self._state, "to": state, "at": _iso(time.time())})
        self.state_changes += 1
        self._state = state
        if state == OPEN:
            self._opened_at = self._clock()
        elif state == HALF_OPEN:
            self._probes = 0
            self._period += 1
        else:
            self._consecutive_failures = 0

    def _admit(self) -> int | None:
        """Lets a call through or raises; returns the half-open period of a probe, None otherwise."""
        state = self._state if self._state == CLOSED else self.state
        if state == CLOSED:
            self.call_count += 1
            return None
        if state == HALF_OPEN and self._probes < self.half_open_max_calls:
            self._probes += 1
            self.call_count += 1
            return self._period
        self.rejected_count += 1
        retry = max(self.reset_timeout - (self._clock() - self._opened_at), 0.0)
        raise CircuitOpenError(self.name, retry)

    def _current_probe(self, probe: int | None) -> bool:
        return probe is not None and probe == self._period and self._state == HALF_OPEN

    def record_success(self, probe: int | None = None) -> None:
        """Counts a success; a probe of the current half-open period closes the breaker."""
        self.success_count += 1
        self._consecutive_failures = 0
        if self._current_probe(probe):
            self._move(CLOSED)

    def record_failure(self, error: BaseException | str, probe: int | None = None) -> None:
        """Counts a failure; opens the breaker past the threshold, or on a failed current probe."""
        self.failure_count += 1
        self._consecutive_failures += 1
        self.last_failure_time = time.time()
        self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.last_error_kind = "error" if isinstance(error, str) else type(error).__name__
        if self._current_probe(probe):
            self._move(OPEN)
        elif self._state == CLOSED and self._consecutive_failures >= self.failure_threshold:
            self._move(OPEN)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Awaits `fn(*args, **kwargs)` through the breaker."""
        probe = self._admit()
        try:
            if self.call_timeout is None:
                result = await fn(*args, **kwargs)
            else:
                deadline = asyncio.timeout(self.call_timeout)
                try:
                    async with deadline:
                        result = await fn(*args, **kwargs)
                except TimeoutError as exc:
                    if not deadline.expired():
                        raise
                    self.timeout_count += 1
                    raise CallTimeoutError(f"{self.name}: call exceeded {self.call_timeout}s") from exc
        except asyncio.CancelledError:
            self._give_back(probe)
            raise
        except self.excluded:
            self._give_back(probe)
            self.call_count -= 1
            raise
        except self.ignore:
            self.record_success(probe)
            raise
        except Exception as exc:
            self.record_failure(exc, probe)
            raise
        self.record_success(probe)
        return result

    def _give_back(self, probe: int | None) -> None:
        """A call that decided nothing frees its probe slot for the next one."""
        if self._current_probe(probe):
            self._probes -= 1

    def reset(self) -> None:
        """Closes the breaker by hand."""
        if self._state != CLOSED:
            self._move(CLOSED)

    def snapshot(self) -> BreakerSnapshot:
        """The state (an open breaker past its timeout turns half_open here) and counters now."""
        return BreakerSnapshot(
            name=self.name, state=self.state, calls=self.call_count, successes=self.success_count,
            failures=self.failure_count, rejections=self.rejected_count, timeouts=self.timeout_count,
            consecutive_failures=self._consecutive_failures, failure_threshold=self.failure_threshold,
            reset_timeout=self.reset_timeout, state_changes=self.state_changes,
            last_failure_time=self.last_failure_time, last_error=self.last_error,
            last_error_kind=self.last_error_kind, transitions=tuple(self.transitions),
        )

    def status(self, detail: bool = True) -> dict[str, Any]:
        """The seed's fields (status, callCount, failureCount, rejectedCount, lastFailureTime) and more.

        Without `detail`, `lastError` names the kind of the last failure only, not its text.
        """
        return self.snapshot().to_dict(detail)
