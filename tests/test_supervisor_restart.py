"""The restart policy as arithmetic: a fake clock in milliseconds, no process, no asyncio."""

from __future__ import annotations

import pytest

from tooloo_cli.stack import RestartPolicy
from tooloo_cli.supervisor.restart import RestartTracker, describe_exit


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> float:
        return self.ms / 1000


def _tracker(restart: str = "always", **overrides: float) -> tuple[RestartTracker, Clock]:
    settings = {"backoff_initial": 0.1, "backoff_max": 0.8, "backoff_reset_after": 30.0, "crash_loop_limit": 5,
                "crash_loop_window": 60.0, **overrides}
    clock = Clock()
    policy = RestartPolicy(restart, refusal_exit_code=2, **settings)  # type: ignore[arg-type]
    tracker = RestartTracker(policy, clock)
    tracker.begin()
    return tracker, clock


def _crash(tracker: RestartTracker, clock: Clock, after_ms: int, healthy: bool = True, code: int = 1):
    tracker.spawned()
    if healthy:
        tracker.healthy()
    clock.ms += after_ms
    return tracker.exited(code)


def test_the_delay_doubles_up_to_the_maximum() -> None:
    tracker, clock = _tracker(crash_loop_limit=100)
    delays = [_crash(tracker, clock, 1000).delay for _ in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    assert tracker.restarts == 6


def test_the_delay_starts_afresh_after_a_settled_run() -> None:
    tracker, clock = _tracker(crash_loop_limit=100)
    assert [_crash(tracker, clock, 1000).delay for _ in range(3)] == [0.1, 0.2, 0.4]
    assert _crash(tracker, clock, 30_000).delay == 0.1  # healthy for backoff_reset_after: settled
    assert _crash(tracker, clock, 29_999).delay == 0.2  # not quite settled: it doubles on


def test_a_crash_loop_within_the_window_fails_it() -> None:
    tracker, clock = _tracker()
    verdicts = [_crash(tracker, clock, 11_000) for _ in range(5)]
    assert all(v.restart for v in verdicts[:4])
    assert not verdicts[4].restart and "crash loop: exited 5 times within 60 s" in verdicts[4].failure
    assert "exit code 1" in verdicts[4].failure


def test_exits_spread_wider_than_the_window_are_no_crash_loop() -> None:
    tracker, clock = _tracker(crash_loop_limit=3, crash_loop_window=10.0)
    assert all(_crash(tracker, clock, 6_000).restart for _ in range(10))


def test_attempts_that_never_become_healthy_fail_it_even_when_slow() -> None:
    tracker, clock = _tracker(crash_loop_limit=3, crash_loop_window=1.0)
    verdicts = [_crash(tracker, clock, 20_000, healthy=False) for _ in range(3)]
    assert [v.restart for v in verdicts] == [True, True, False]
    assert "never became healthy in 3 attempts" in verdicts[2].failure


def test_a_healthy_attempt_resets_the_never_healthy_count() -> None:
    tracker, clock = _tracker(crash_loop_limit=3, crash_loop_window=1.0)
    for healthy in (False, False, True, False, False):
        assert _crash(tracker, clock, 20_000, healthy=healthy).restart


def test_the_refusal_exit_code_fails_at_once_with_the_services_own_words() -> None:
    tracker, clock = _tracker()
    tracker.spawned()
    verdict = tracker.exited(2, "budget.db is not a usable database")
    assert not verdict.restart and verdict.failure == "budget.db is not a usable database"
    assert "refused to start (exit code 2)" in tracker.exited(2).failure


@pytest.mark.parametrize(("restart", "code", "again"), [
    ("always", 0, True), ("always", 1, True),
    ("on-failure", 0, False), ("on-failure", 1, True), ("on-failure", -9, True),
    ("no", 0, False), ("no", 1, False),
])
def test_the_policy_decides_which_exits_run_again(restart: str, code: int, again: bool) -> None:
    tracker, clock = _tracker(restart)
    verdict = _crash(tracker, clock, 1000, code=code)
    assert verdict.restart is again and verdict.failure is None


@pytest.mark.parametrize(("restart", "again"), [("always", True), ("on-failure", True), ("no", False)])
def test_a_process_the_supervisor_ended_for_failed_probes_is_a_failure_whatever_its_code(
        restart: str, again: bool) -> None:
    tracker, clock = _tracker(restart)
    tracker.spawned()
    clock.ms += 1000
    verdict = tracker.exited(0, ended=True)  # a clean exit on the SIGTERM it was sent
    assert verdict.restart is again and verdict.failure is None


def test_beginning_again_forgets_past_exits() -> None:
    tracker, clock = _tracker(crash_loop_limit=2)
    assert _crash(tracker, clock, 10).restart
    tracker.begin()  # a `tooloo up` after the first crash
    verdict = _crash(tracker, clock, 10)
    assert verdict.restart and verdict.delay == 0.1  # one exit since the begin, and the backoff afresh
    assert not _crash(tracker, clock, 10).restart


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(None) == "no exit status"
