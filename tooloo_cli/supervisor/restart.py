"""The restart policy, as pure arithmetic on a clock: when an exited process runs again.

    tracker = RestartTracker(spec.restart)           # clock: time.monotonic unless given
    tracker.spawned()                                 # each attempt
    tracker.healthy()                                 # its first passing liveness probe
    verdict = tracker.exited(code=1)                  # Verdict(restart=True, delay=0.1)

Contract (the `RestartPolicy` of the service's spec):

- `restart = "no"` never restarts; `"on-failure"` restarts unless the exit code is 0;
  `"always"` restarts whatever the exit (and `tooloo down` is the way to stop).
- The delay doubles from `backoff_initial` to `backoff_max`, and starts afresh once the
  process had been healthy for `backoff_reset_after` seconds.
- It gives up (a verdict with a `failure`) when the process exited `crash_loop_limit`
  times within `crash_loop_window` seconds, when that many attempts in a row never became
  healthy, and at once on the policy's `refusal_exit_code` (a built-in service exits 2
  when it refuses to start on its configuration or data, which a restart would not change).

No process, no asyncio: tested with a fake clock in milliseconds.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tooloo_cli.stack import RestartPolicy


@dataclass(frozen=True)
class Verdict:
    restart: bool
    delay: float = 0.0  # seconds to wait before the next attempt
    failure: str | None = None  # why it is given up on (None: it simply stays exited, as its policy says)


def describe_exit(code: int | None) -> str:
    """`exit code 1`, or `killed by SIGKILL` for a process a signal ended (asyncio's negative codes)."""
    if code is None:
        return "no exit status"
    if code < 0:
        return f"killed by {signal_name(-code)}"
    return f"exit code {code}"


def signal_name(signum: int) -> str:
    """`SIGKILL`, or `signal 40` for one the enum does not name (a real-time signal)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class RestartTracker:
    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.restarts = 0
        self._exits: deque[float] = deque()
        self._never_healthy = 0
        self._healthy_at: float | None = None
        self._backoff = policy.backoff_initial

    def begin(self, policy: RestartPolicy | None = None) -> None:
        """Supervision starts afresh (a `tooloo up` or `restart`): past exits are forgotten."""
        if policy is not None:
            self.policy = policy
        self._exits.clear()
        self._never_healthy = 0
        self._backoff = self.policy.backoff_initial

    def spawned(self) -> None:
        self._healthy_at = None

    def healthy(self) -> None:
        if self._healthy_at is None:
            self._healthy_at = self.clock()

    def exited(self, code: int | None, last_words: str | None = None, ended: bool = False) -> Verdict:
        """What follows an exit with `code`; `ended`: the supervisor ended it, its probes having failed."""
        policy, now = self.policy, self.clock()
        how = "ended after failed probes" if ended else describe_exit(code)
        if not ended and policy.refusal_exit_code is not None and code == policy.refusal_exit_code:
            return Verdict(False, failure=last_words or f"it refused to start ({how}); see its log")
        if policy.restart == "no" or (policy.restart == "on-failure" and code == 0 and not ended):
            return Verdict(False)
        if self._healthy_at is not None and now - self._healthy_at >= policy.backoff_reset_after:
            self._backoff = policy.backoff_initial  # it had settled: start the backoff afresh
        self._never_healthy = 0 if self._healthy_at is not None else self._never_healthy + 1
        self._exits.append(now)
        while self._exits and now - self._exits[0] > policy.crash_loop_window:
            self._exits.popleft()
        if len(self._exits) >= policy.crash_loop_limit:
            return Verdict(False, failure=f"crash loop: exited {len(self._exits)} times within "
                                          f"{policy.crash_loop_window:g} s (last: {how})")
        if self._never_healthy >= policy.crash_loop_limit:
            return Verdict(False, failure=f"never became healthy in {self._never_healthy} attempts (last: {how})")
        delay = self._backoff
        self._backoff = min(self._backoff * 2, policy.backoff_max)
        self.restarts += 1
        return Verdict(True, delay)
