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
`call_timeout` is cancelled and fails with CallTimeoutError (a TimeoutError), which
counts as a failure. Both errors of the breaker are ResilienceErrors.

The call timeout is one deadline watch per breaker, not one `asyncio.timeout` per call
(5-7 µs a call, most of the breaker's cost as the services call it): a call in flight is
an entry in a dict, and one timer, armed for the earliest deadline, cancels the calls
that are due when it fires and re-arms for the next. Cancelling the caller still
propagates as a cancellation, never as a timeout; a deadline that fires while someone
else also cancels the task leaves it cancelled (asyncio.timeout's rule: the deadline is
the cause only when it is the one cancel request over those the task had when the call
began). The timer outlives the last call by at most `call_timeout` seconds, then ends
without re-arming. A breaker is meant for one event loop at a time: a new loop starts
afresh, and a call from a second loop while another thread's has calls in flight is a
RuntimeError rather than their deadlines lost.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from tooloo_cli.resilience.errors import ResilienceError

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# The running task of a loop: asyncio's own table (what current_task reads, behind its argument
# parsing, in a third of the time). Should an implementation not keep it, the lookup finds
# nothing and `_adopt_loop` asks asyncio.current_task: slower, never wrong.
_running_task_of = getattr(asyncio.tasks, "_current_tasks", {}).get
_monotonic = time.monotonic
_EXPIRED = object()  # what a call's deadline entry becomes once the watch has cancelled it
# Timers may fire this much before their deadline (uvloop's have a resolution of 1 ms): a
# call within it of its deadline is due, so the watch never re-arms for a sliver of time.
_TIMER_RESOLUTION = 0.001


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
        # The deadline watch (see the module): the calls in flight under a timeout, by serial
        # number, each (deadline, task) until the watch cancels it and marks it _EXPIRED.
        self._deadlines: dict[int, Any] = {}
        self._serial = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # Deadlines are registered in the order they fall due while call_timeout stays as it is,
        # so the watch stops at the first one not due; a lowered call_timeout breaks the order,
        # and the watch then reads them all until none is left.
        self._in_order = True
        self._last_deadline = -math.inf

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
        if probe is not None and self._current_probe(probe):
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
        """Awaits `fn(*args, **kwargs)` through the breaker, within `call_timeout` seconds."""
        timeout = self.call_timeout
        if timeout is not None:  # first: a call that cannot be watched is refused before it counts
            loop = self._loop
            # The task is looked up with its loop known: asking for the running loop costs a
            # getpid(2) on Python 3.11 (half of this watch's cost).
            task = _running_task_of(loop)
            if task is None:  # the first call, a new loop, no task at all, or no table
                task, loop = self._adopt_loop()
        if self._state == CLOSED:  # `_admit`, inlined for the closed breaker: every call but a probe's
            self.call_count += 1
            probe = None
        else:
            probe = self._admit()
        try:
            if timeout is None:
                result = await fn(*args, **kwargs)
            else:
                # The deadline watch, inlined: this is every call the services make.
                deadline = _monotonic() + timeout  # the watch's clock (see _arm)
                if deadline < self._last_deadline:
                    self._in_order = False
                self._last_deadline = deadline
                serial = self._serial = self._serial + 1
                deadlines = self._deadlines
                deadlines[serial] = (deadline, task)
                # Cancel requests the task had already: ours is the deadline only if it is the one
                # left over them (asyncio.timeout's rule).
                cancelling = task.cancelling()
                if deadline < self._timer_at:  # no timer, or one armed later (call_timeout was lowered)
                    self._arm(loop, deadline)
                try:
                    result = await fn(*args, **kwargs)
                except asyncio.CancelledError as exc:
                    # Ours when the watch cancelled the call and nothing else cancels the task:
                    # any other cancel request left means the caller is going away, and that propagates.
                    if deadlines.pop(serial, None) is _EXPIRED and task.uncancel() <= cancelling:
                        self.timeout_count += 1
                        raise CallTimeoutError(f"{self.name}: call exceeded {timeout}s") from exc
                    raise
                except BaseException:
                    if deadlines.pop(serial, None) is _EXPIRED:
                        task.uncancel()  # the deadline came, but the call ended its own way
                    raise
                if deadlines.pop(serial, None) is _EXPIRED:
                    task.uncancel()  # the call swallowed the deadline's cancellation and returned
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
        if probe is None:  # `record_success`, inlined for a call that is not a probe
            self.success_count += 1
            self._consecutive_failures = 0
        else:
            self.record_success(probe)
        return result

    # -- the deadline watch (see the module) ----------------------------------------------

    def _adopt_loop(self) -> tuple[asyncio.Task[Any], asyncio.AbstractEventLoop]:
        """The running task and its loop; a loop other than the last one's starts the watch afresh."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a call through a breaker with a call_timeout must run in a task")
        if loop is not self._loop:  # the old loop's timer and entries are not ours to keep
            old, entries = self._loop, self._deadlines.values()
            if old is not None and old.is_running() and any(entry is not _EXPIRED for entry in entries):
                # Another thread's loop has calls in flight: taking over would drop their deadlines.
                raise RuntimeError(f"breaker {self.name!r} with a call_timeout is in use on another event loop")
            self._loop, self._timer, self._timer_at = loop, None, math.inf
            self._deadlines.clear()
            self._in_order, self._last_deadline = True, -math.inf
        return task, loop

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Sets the timer for `when`, on the watch's clock: time.monotonic (a call to it costs
        less than to the loop's `time`), given to the loop as a delay, whatever its own clock."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(max(when - _monotonic(), 0.0), self._expire, loop)
        self._timer_at = when

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer: cancels every call that is due and re-arms for the earliest of the rest."""
        if loop is not self._loop:  # a timer of a loop this breaker has left
            return
        self._timer, self._timer_at = None, math.inf
        due = _monotonic() + _TIMER_RESOLUTION
        earliest = math.inf
        deadlines = self._deadlines
        in_order = self._in_order
        # Values change, keys do not, while the dict is read: cancel() only schedules.
        for serial, entry in deadlines.items():
            if entry is _EXPIRED:
                continue
            deadline, task = entry
            if deadline <= due:
                deadlines[serial] = _EXPIRED
                task.cancel()
            elif deadline < earliest:
                earliest = deadline
                if in_order:  # every later one falls due later still
                    break
        if earliest < math.inf:
            self._arm(loop, earliest)
        elif not in_order:  # nothing left to watch: the order holds again from the next call
            self._in_order, self._last_deadline = True, -math.inf

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
