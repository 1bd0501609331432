"""CircuitBreaker: closed → open → half_open → closed/open, timeouts, ignored errors, cancellation, status."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from datetime import datetime
from typing import Any

import pytest

from tooloo_cli.resilience import ResilienceError
from tooloo_cli.resilience.circuit_breaker import CallTimeoutError, CircuitBreaker, CircuitOpenError
from tooloo_cli.phase6.support import ManualClock, run, settle

# -- helpers ------------------------------------------------------------------------------


class Upstream:
    """A dependency whose calls are counted; it succeeds, fails, or waits on a gate as told."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0
        self.gate: asyncio.Event | None = None

    async def ok(self, value: Any = "ok") -> Any:
        self.calls += 1
        await self._maybe_wait()
        return value

    async def fail(self, error: BaseException | None = None) -> Any:
        self.calls += 1
        await self._maybe_wait()
        raise error if error is not None else ConnectionError("upstream down")

    async def hang(self) -> Any:
        """Never returns on its own."""
        self.calls += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def _maybe_wait(self) -> None:
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)


def breaker(clock: ManualClock | None = None, **options: Any) -> CircuitBreaker:
    """A breaker with a manual clock and test-friendly defaults."""
    options.setdefault("failure_threshold", 3)
    options.setdefault("reset_timeout", 10.0)
    options.setdefault("call_timeout", None)
    return CircuitBreaker("upstream", clock=clock or ManualClock(), **options)


async def fail_times(cb: CircuitBreaker, upstream: Upstream, times: int) -> None:
    """Makes `times` failing calls through the breaker."""
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await cb.call(upstream.fail)


async def open_breaker(cb: CircuitBreaker, upstream: Upstream) -> None:
    """Fails the breaker open."""
    await fail_times(cb, upstream, cb.failure_threshold)
    assert cb.state == "open"


async def half_open(half_open_max_calls: int) -> tuple[ManualClock, CircuitBreaker, Upstream]:
    """A breaker failed open (threshold 1) and then left alone for its 5 s reset timeout."""
    clock = ManualClock()
    cb = breaker(clock, failure_threshold=1, reset_timeout=5.0, half_open_max_calls=half_open_max_calls)
    upstream = Upstream()
    await open_breaker(cb, upstream)
    clock.advance(5.0)
    return clock, cb, upstream


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"reset_timeout": 0}, "reset_timeout"),
        ({"reset_timeout": -1}, "reset_timeout"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"call_timeout": 0}, "call_timeout"),
        ({"call_timeout": -2.0}, "call_timeout"),
    ],
)
def test_invalid_settings_are_rejected(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        CircuitBreaker("x", **options)


def test_call_timeout_error_is_a_timeout_error() -> None:
    assert issubclass(CallTimeoutError, TimeoutError)
    assert not issubclass(CircuitOpenError, TimeoutError)


def test_the_breakers_own_errors_are_resilience_errors_and_the_callees_are_not() -> None:
    async def slow() -> None:
        await asyncio.sleep(1)

    async def refused() -> None:
        raise ConnectionError("refused")

    async def scenario() -> list[BaseException]:
        guarded = CircuitBreaker("x", failure_threshold=2, call_timeout=0.01)
        raised = []
        for fn in (slow, refused, refused):
            try:
                await guarded.call(fn)
            except Exception as exc:
                raised.append(exc)
        return raised

    timeout, own, rejected = run(scenario())
    assert isinstance(timeout, CallTimeoutError) and isinstance(timeout, ResilienceError)
    assert isinstance(own, ConnectionError) and not isinstance(own, ResilienceError)
    assert isinstance(rejected, CircuitOpenError) and isinstance(rejected, ResilienceError)


# -- closed ---------------------------------------------------------------------------------


def test_calls_pass_arguments_and_results_through_while_closed() -> None:
    async def scenario() -> None:
        cb = breaker()

        async def add(a: int, b: int, *, scale: int = 1) -> int:
            return (a + b) * scale

        assert await cb.call(add, 2, 3, scale=10) == 50
        status = cb.status()
        assert status["status"] == "closed" and status["callCount"] == 1 and status["successCount"] == 1

    run(scenario())


def test_opens_after_failure_threshold_consecutive_failures() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=3)
        upstream = Upstream()
        await fail_times(cb, upstream, 2)
        assert cb.state == "closed" and cb.status()["consecutiveFailures"] == 2
        await fail_times(cb, upstream, 1)
        assert cb.state == "open"
        assert cb.status()["failureCount"] == 3

    run(scenario())


def test_a_success_resets_the_failure_streak() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=3)
        upstream = Upstream()
        for _ in range(5):
            await fail_times(cb, upstream, 2)
            assert await cb.call(upstream.ok) == "ok"
            assert cb.state == "closed"
        assert cb.status()["failureCount"] == 10 and cb.status()["consecutiveFailures"] == 0
        await fail_times(cb, upstream, 3)
        assert cb.state == "open"

    run(scenario())


def test_a_threshold_of_one_opens_on_the_first_failure() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=1)
        await fail_times(cb, Upstream(), 1)
        assert cb.state == "open"

    run(scenario())


# -- open ----------------------------------------------------------------------------------------


def test_open_rejects_fast_without_calling_the_function() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cb = breaker(clock, failure_threshold=2, reset_timeout=10.0)
        upstream = Upstream()
        await open_breaker(cb, upstream)
        calls_before = upstream.calls
        clock.advance(4.0)
        for n in range(1, 4):
            with pytest.raises(CircuitOpenError) as caught:
                await cb.call(upstream.ok)
            assert cb.status()["rejectedCount"] == n
        assert upstream.calls == calls_before
        assert caught.value.name == "upstream"
        assert caught.value.retry_after == pytest.approx(6.0)
        assert "upstream" in str(caught.value)
        status = cb.status()
        assert status["callCount"] == 2 and status["failureCount"] == 2

    run(scenario())


def test_open_rejects_even_a_call_that_would_have_failed_without_counting_a_failure() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=1)
        upstream = Upstream()
        await open_breaker(cb, upstream)
        with pytest.raises(CircuitOpenError):
            await cb.call(upstream.fail)
        assert cb.status()["failureCount"] == 1 and upstream.calls == 1

    run(scenario())


def test_stays_open_until_reset_timeout_then_turns_half_open() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cb = breaker(clock, failure_threshold=1, reset_timeout=10.0)
        await open_breaker(cb, Upstream())
        clock.advance(9.99)
        assert cb.state == "open"
        clock.advance(0.01)
        assert cb.state == "half_open"
        assert cb.status()["status"] == "half_open"

    run(scenario())


# -- half open --------------------------------------------------------------------------------------


def test_a_successful_probe_closes_the_breaker() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cb = breaker(clock, failure_threshold=2, reset_timeout=10.0)
        upstream = Upstream()
        await open_breaker(cb, upstream)
        clock.advance(10.0)
        assert await cb.call(upstream.ok, "probe") == "probe"
        assert cb.state == "closed"
        status = cb.status()
        assert status["consecutiveFailures"] == 0
        # Closed again, so it needs a full streak of failures to open.
        await fail_times(cb, upstream, 1)
        assert cb.state == "closed"

    run(scenario())


def test_a_failed_probe_reopens_for_a_fresh_reset_timeout() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cb = breaker(clock, failure_threshold=3, reset_timeout=10.0)
        upstream = Upstream()
        await open_breaker(cb, upstream)
        clock.advance(10.0)
        assert cb.state == "half_open"
        await fail_times(cb, upstream, 1)  # one failure is enough in half_open
        assert cb.state == "open"
        clock.advance(9.0)
        assert cb.state == "open"
        with pytest.raises(CircuitOpenError) as caught:
            await cb.call(upstream.ok)
        assert caught.value.retry_after == pytest.approx(1.0)
        clock.advance(1.0)
        assert cb.state == "half_open"

    run(scenario())


@pytest.mark.parametrize("max_probes", [1, 3])
def test_half_open_admits_at_most_half_open_max_calls_concurrent_probes(max_probes: int) -> None:
    async def scenario() -> None:
        clock, cb, upstream = await half_open(half_open_max_calls=max_probes)
        upstream.gate = asyncio.Event()
        probes = [asyncio.create_task(cb.call(upstream.ok)) for _ in range(max_probes)]
        await settle()
        assert upstream.calls == 1 + max_probes
        rejected_before = cb.status()["rejectedCount"]
        for _ in range(4):
            with pytest.raises(CircuitOpenError):
                await cb.call(upstream.ok)
        assert upstream.calls == 1 + max_probes  # the extra calls never reached the upstream
        assert cb.status()["rejectedCount"] == rejected_before + 4
        assert cb.state == "half_open"
        upstream.gate.set()
        assert await asyncio.gather(*probes) == ["ok"] * max_probes
        assert cb.state == "closed"

    run(scenario())


def test_the_first_failing_probe_reopens_even_while_other_probes_run() -> None:
    async def scenario() -> None:
        clock, cb, upstream = await half_open(half_open_max_calls=2)
        upstream.gate = asyncio.Event()
        failing = asyncio.create_task(cb.call(upstream.fail))
        succeeding = asyncio.create_task(cb.call(upstream.ok))
        await settle()
        upstream.gate.set()
        results = await asyncio.gather(failing, succeeding, return_exceptions=True)
        assert isinstance(results[0], ConnectionError) and results[1] == "ok"
        assert cb.status()["failureCount"] == 2

    run(scenario())


# -- call timeout -----------------------------------------------------------------------------------


def test_call_timeout_raises_call_timeout_error_and_counts_as_failure() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=2, call_timeout=0.02)
        upstream = Upstream()
        with pytest.raises(CallTimeoutError) as caught:
            await cb.call(upstream.hang)
        assert isinstance(caught.value, TimeoutError)
        assert "upstream" in str(caught.value)
        assert upstream.cancelled == 1  # the slow call was cancelled, not left running
        status = cb.status()
        assert status["timeoutCount"] == 1 and status["failureCount"] == 1 and status["status"] == "closed"
        assert status["lastError"].startswith("CallTimeoutError")
        with pytest.raises(CallTimeoutError):
            await cb.call(upstream.hang)
        assert cb.state == "open"

    run(scenario())


def test_a_fast_call_is_unaffected_by_call_timeout() -> None:
    async def scenario() -> None:
        cb = breaker(call_timeout=5.0)
        assert await cb.call(Upstream().ok, 7) == 7
        assert cb.status()["timeoutCount"] == 0

    run(scenario())


def test_a_timeout_error_raised_by_the_function_itself_is_not_converted() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=5, call_timeout=5.0)
        own = TimeoutError("the upstream's own timeout")

        async def raises_timeout() -> None:
            await asyncio.sleep(0)
            raise own

        with pytest.raises(TimeoutError) as caught:
            await cb.call(raises_timeout)
        assert caught.value is own and not isinstance(caught.value, CallTimeoutError)
        status = cb.status()
        assert status["timeoutCount"] == 0
        assert status["failureCount"] == 1  # still an ordinary failure

    run(scenario())


def test_an_inner_asyncio_timeout_expiring_is_not_mistaken_for_the_breaker_deadline() -> None:
    async def scenario() -> None:
        cb = breaker(call_timeout=5.0)

        async def inner_deadline() -> None:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()

        with pytest.raises(TimeoutError) as caught:
            await cb.call(inner_deadline)
        assert not isinstance(caught.value, CallTimeoutError)
        assert cb.status()["timeoutCount"] == 0

    run(scenario())


def test_without_call_timeout_a_function_timeout_error_passes_through() -> None:
    async def scenario() -> None:
        cb = breaker(call_timeout=None)

        async def raises_timeout() -> None:
            raise TimeoutError("own")

        with pytest.raises(TimeoutError) as caught:
            await cb.call(raises_timeout)
        assert not isinstance(caught.value, CallTimeoutError)

    run(scenario())


def test_a_probe_that_times_out_reopens_the_breaker() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cb = breaker(clock, failure_threshold=1, reset_timeout=5.0, call_timeout=0.02)
        upstream = Upstream()
        await open_breaker(cb, upstream)
        clock.advance(5.0)
        with pytest.raises(CallTimeoutError):
            await cb.call(upstream.hang)
        assert cb.state == "open"

    run(scenario())


# -- the deadline watch: one timer per breaker, not one per call ------------------------------


def test_among_many_concurrent_calls_only_the_slow_ones_time_out_each_at_its_deadline() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=100, call_timeout=0.05)
        upstream = Upstream()
        loop = asyncio.get_running_loop()

        async def timed(call: Any) -> tuple[str, float]:
            started = loop.time()
            try:
                await cb.call(call)
            except CallTimeoutError:
                return "timeout", loop.time() - started
            return "ok", loop.time() - started

        async def late_hang() -> None:  # starts after the others: its deadline is later than theirs
            await asyncio.sleep(0.03)
            await timed(upstream.hang)

        fast = [asyncio.create_task(timed(upstream.ok)) for _ in range(20)]
        slow = [asyncio.create_task(timed(upstream.hang)) for _ in range(3)]
        await asyncio.sleep(0.03)
        later = asyncio.create_task(timed(upstream.hang))
        results = await asyncio.gather(*fast, *slow, later)
        assert [r[0] for r in results] == ["ok"] * 20 + ["timeout"] * 4
        assert all(0.045 <= elapsed < 0.5 for _, elapsed in results[20:])  # at the deadline, not before
        assert upstream.cancelled == 4
        status = cb.status()
        assert status["timeoutCount"] == 4 and status["failureCount"] == 4 and status["successCount"] == 20

    run(scenario())


def test_the_caller_cancelled_as_the_deadline_fires_is_cancelled_not_timed_out() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=1, call_timeout=0.02)
        outer: list[asyncio.Task[Any]] = []

        async def cleans_up_slowly() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:  # the deadline: while cleaning up, the caller goes away too
                outer[0].cancel()
                await asyncio.sleep(0)
                raise

        outer.append(asyncio.create_task(cb.call(cleans_up_slowly)))
        with pytest.raises(asyncio.CancelledError):
            await outer[0]
        status = cb.status()
        assert status["timeoutCount"] == 0 and status["failureCount"] == 0 and status["status"] == "closed"

    run(scenario())


def test_a_call_that_swallows_the_deadline_returns_and_leaves_its_task_uncancelled() -> None:
    async def scenario() -> None:
        cb = breaker(call_timeout=0.02)

        async def stubborn() -> str:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return "late"
            return "never"

        async def caller() -> tuple[str, int]:
            result = await cb.call(stubborn)
            await asyncio.sleep(0.01)  # a cancellation left pending would surface here
            task = asyncio.current_task()
            assert task is not None
            return result, task.cancelling()

        assert await caller() == ("late", 0)
        assert cb.status()["timeoutCount"] == 0

    run(scenario())


def test_lowering_call_timeout_applies_to_the_next_call_at_once() -> None:
    async def scenario() -> None:
        cb = breaker(call_timeout=30.0)
        upstream = Upstream()
        long_call = asyncio.create_task(cb.call(upstream.hang))  # arms the watch 30 s out
        await settle()
        cb.call_timeout = 0.02
        started = asyncio.get_running_loop().time()
        with pytest.raises(CallTimeoutError):
            await cb.call(upstream.hang)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert not long_call.done()  # its own deadline is still 30 s away
        long_call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long_call

    run(scenario())


def test_a_task_with_a_cancel_request_pending_still_times_out_and_counts_the_failure() -> None:
    """Clean-up code that caught a cancellation and carries on: the deadline is still the breaker's."""
    async def scenario() -> CircuitBreaker:
        cb = breaker(failure_threshold=1, call_timeout=0.02)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass  # caught, and carried on without uncancel(): cancelling() stays 1
        with pytest.raises(CallTimeoutError):  # before the fix: CancelledError, no failure, still closed
            await cb.call(Upstream().hang)
        return cb

    cb = run(scenario())
    assert cb.status()["timeoutCount"] == 1 and cb.state == "open"


def test_a_second_loop_is_refused_while_another_threads_loop_has_calls_in_flight() -> None:
    import threading

    cb = breaker(call_timeout=5.0)
    in_flight, release = threading.Event(), threading.Event()

    async def hold() -> None:
        async def wait_for_release() -> None:
            while not release.is_set():
                await asyncio.sleep(0.01)
            raise ConnectionError("released")

        in_flight.set()
        with pytest.raises(ConnectionError):
            await cb.call(wait_for_release)

    holder = threading.Thread(target=lambda: run(hold()))
    holder.start()
    try:
        assert in_flight.wait(5)
        time.sleep(0.05)  # the call is registered with its deadline

        async def second() -> None:
            with pytest.raises(RuntimeError, match="another event loop"):  # before: its deadline silently lost
                await cb.call(Upstream().ok)

        run(second())
    finally:
        release.set()
        holder.join(5)
    assert cb.status()["failureCount"] == 1


def test_the_watch_leaves_nothing_behind_once_its_calls_are_done() -> None:
    async def scenario() -> weakref.ref[CircuitBreaker]:
        cb = breaker(call_timeout=0.03)
        assert await cb.call(Upstream().ok) == "ok"
        with pytest.raises(CallTimeoutError):
            await cb.call(Upstream().hang)
        watched = weakref.ref(cb)
        del cb
        await asyncio.sleep(0.1)  # past every deadline: the timer has fired for the last time
        gc.collect()
        return watched

    assert run(scenario())() is None  # no timer, task or entry keeps the breaker alive


def test_one_breaker_keeps_its_deadlines_across_event_loops_and_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    cb = breaker(failure_threshold=100, call_timeout=0.02)

    async def one_timeout_and_one_success() -> None:
        with pytest.raises(CallTimeoutError):
            await cb.call(Upstream().hang)
        assert await cb.call(Upstream().ok) == "ok"

    run(one_timeout_and_one_success())
    uvloop.run(one_timeout_and_one_success())  # the services' loop
    run(one_timeout_and_one_success())
    assert cb.status()["timeoutCount"] == 3 and cb.status()["successCount"] == 3


def test_a_call_timeout_needs_a_task() -> None:
    cb = breaker(call_timeout=1.0)
    coroutine = cb.call(Upstream().ok)
    with pytest.raises(RuntimeError):
        coroutine.send(None)  # driven by hand, outside any event loop
    coroutine.close()


# -- ignored errors ---------------------------------------------------------------------------------


class NotFound(LookupError):
    """A 404 from a healthy upstream."""


class GoneForGood(NotFound):
    """A subclass of an ignored error."""


def test_ignored_exceptions_propagate_without_counting_as_failures() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=2, ignore=(NotFound,))
        upstream = Upstream()
        for error in (NotFound("a"), GoneForGood("b"), NotFound("c"), NotFound("d")):
            with pytest.raises(NotFound) as caught:
                await cb.call(upstream.fail, error)
            assert caught.value is error
        status = cb.status()
        assert status["failureCount"] == 0 and status["status"] == "closed"
        assert status["lastFailureTime"] is None and status["consecutiveFailures"] == 0
        # Errors not in `ignore` still count.
        await fail_times(cb, upstream, 2)
        assert cb.state == "open"

    run(scenario())


def test_an_ignored_exception_from_a_probe_does_not_reopen_the_breaker() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cb = breaker(clock, failure_threshold=1, reset_timeout=5.0, ignore=(NotFound,))
        upstream = Upstream()
        await open_breaker(cb, upstream)
        clock.advance(5.0)
        with pytest.raises(NotFound):
            await cb.call(upstream.fail, NotFound("missing"))
        assert cb.state != "open"
        assert cb.status()["failureCount"] == 1

    run(scenario())


# -- cancellation -------------------------------------------------------------------------------------


def test_cancellation_does_not_count_as_failure() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=1, call_timeout=5.0)
        upstream = Upstream()
        task = asyncio.create_task(cb.call(upstream.hang))
        await settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        status = cb.status()
        assert status["failureCount"] == 0 and status["timeoutCount"] == 0 and status["status"] == "closed"
        assert status["lastFailureTime"] is None

    run(scenario())


def test_an_outer_wait_for_timeout_is_not_a_breaker_failure() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=1, call_timeout=5.0)
        with pytest.raises(TimeoutError) as caught:
            await asyncio.wait_for(cb.call(Upstream().hang), timeout=0.02)
        assert not isinstance(caught.value, CallTimeoutError)
        assert cb.status()["failureCount"] == 0 and cb.state == "closed"

    run(scenario())


def test_cancelling_a_probe_frees_its_slot() -> None:
    async def scenario() -> None:
        clock, cb, upstream = await half_open(half_open_max_calls=1)
        probe = asyncio.create_task(cb.call(upstream.hang))
        await settle()
        with pytest.raises(CircuitOpenError):
            await cb.call(upstream.ok)  # the only slot is taken
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert cb.state == "half_open" and cb.status()["failureCount"] == 1
        assert await cb.call(upstream.ok) == "ok"  # the slot is free again
        assert cb.state == "closed"

    run(scenario())


def test_a_stale_probe_cancelled_after_a_reopen_does_not_grant_extra_probes() -> None:
    """Probes from an earlier half_open period must not change the count of a later one."""

    async def scenario() -> None:
        clock, cb, upstream = await half_open(half_open_max_calls=2)
        upstream.gate = asyncio.Event()
        failing = asyncio.create_task(cb.call(upstream.fail))
        stale = asyncio.create_task(cb.call(upstream.hang))
        await settle()
        upstream.gate.set()
        with pytest.raises(ConnectionError):
            await failing
        assert cb.state == "open"
        clock.advance(5.0)
        assert cb.state == "half_open"
        stale.cancel()  # a probe of the previous half_open period gives up now
        with pytest.raises(asyncio.CancelledError):
            await stale
        upstream.gate = asyncio.Event()
        probes = [asyncio.create_task(cb.call(upstream.ok)) for _ in range(3)]
        await settle()
        results = [p.exception() if p.done() else None for p in probes]
        admitted = sum(1 for r in results if not isinstance(r, CircuitOpenError))
        upstream.gate.set()
        await asyncio.gather(*probes, return_exceptions=True)
        assert admitted == 2, "more than half_open_max_calls probes were let through"

    run(scenario())


# -- status -----------------------------------------------------------------------------------------


def _parse_iso_z(text: str) -> datetime:
    """Parses the breaker's ISO timestamps, which end in Z."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


def test_status_has_the_seed_fields_and_counts() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cb = breaker(clock, failure_threshold=2, reset_timeout=10.0)
        upstream = Upstream()
        fresh = cb.status()
        for field in ("status", "callCount", "failureCount", "rejectedCount", "lastFailureTime"):
            assert field in fresh
        assert fresh["status"] == "closed" and fresh["lastFailureTime"] is None
        assert fresh["callCount"] == fresh["failureCount"] == fresh["rejectedCount"] == 0
        assert fresh["stateChanges"] == 0 and fresh["transitions"] == []
        assert fresh["failureThreshold"] == 2 and fresh["resetTimeout"] == 10.0

        await cb.call(upstream.ok)
        before = time.time()
        await fail_times(cb, upstream, 2)
        after = time.time()
        with pytest.raises(CircuitOpenError):
            await cb.call(upstream.ok)
        status = cb.status()
        assert status["status"] == "open"
        assert (status["callCount"], status["successCount"], status["failureCount"], status["rejectedCount"]) == (3, 1, 2, 1)
        assert status["lastError"] == "ConnectionError: upstream down"
        stamp = _parse_iso_z(status["lastFailureTime"])
        assert stamp.tzinfo is not None
        assert before - 1 <= stamp.timestamp() <= after + 1
        assert status["stateChanges"] == 1
        assert [(t["from"], t["to"]) for t in status["transitions"]] == [("closed", "open")]
        _parse_iso_z(status["transitions"][0]["at"])

    run(scenario())


def test_status_records_every_transition_of_a_full_cycle() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cb = breaker(clock, failure_threshold=1, reset_timeout=3.0)
        upstream = Upstream()
        await open_breaker(cb, upstream)
        clock.advance(3.0)
        await fail_times(cb, upstream, 1)  # half_open → open
        clock.advance(3.0)
        assert cb.status()["status"] == "half_open"  # status() itself notices the timeout
        await cb.call(upstream.ok)  # half_open → closed
        status = cb.status()
        assert [(t["from"], t["to"]) for t in status["transitions"]] == [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
        ]
        assert status["stateChanges"] == 5 and status["status"] == "closed"

    run(scenario())


def test_transition_history_is_bounded() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        cb = breaker(clock, failure_threshold=1, reset_timeout=1.0, history=4)
        upstream = Upstream()
        for _ in range(5):
            await open_breaker(cb, upstream)
            clock.advance(1.0)
            await cb.call(upstream.ok)
        status = cb.status()
        assert status["stateChanges"] == 15 and len(status["transitions"]) == 4
        assert status["transitions"][-1]["to"] == "closed"

    run(scenario())


def test_reset_closes_by_hand_and_is_a_no_op_when_closed() -> None:
    async def scenario() -> None:
        cb = breaker(failure_threshold=1)
        upstream = Upstream()
        cb.reset()
        assert cb.status()["stateChanges"] == 0
        await open_breaker(cb, upstream)
        cb.reset()
        assert cb.state == "closed" and cb.status()["consecutiveFailures"] == 0
        assert await cb.call(upstream.ok) == "ok"

    run(scenario())


class _CallerMistake(Exception):
    pass


def test_excluded_errors_count_as_nothing_and_free_a_probe() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("sibling", failure_threshold=2, reset_timeout=1, call_timeout=None,
                             excluded=(_CallerMistake,), clock=clock)

    async def mistaken() -> None:
        raise _CallerMistake

    async def failing() -> None:
        raise RuntimeError("down")

    async def scenario() -> None:
        for _ in range(5):
            with pytest.raises(_CallerMistake):
                await breaker.call(mistaken)
        assert breaker.state == "closed" and breaker.failure_count == 0 and breaker.call_count == 0
        with pytest.raises(RuntimeError):
            await breaker.call(failing)
        with pytest.raises(_CallerMistake):
            await breaker.call(mistaken)  # between two real failures: it masks nothing
        with pytest.raises(RuntimeError):
            await breaker.call(failing)
        assert breaker.state == "open"
        clock.advance(1.5)
        with pytest.raises(_CallerMistake):
            await breaker.call(mistaken)  # a half-open probe that decided nothing
        assert breaker.state == "half_open"
        assert await breaker.call(asyncio.sleep, 0) is None  # the probe slot was given back
        assert breaker.state == "closed"

    asyncio.run(scenario())
