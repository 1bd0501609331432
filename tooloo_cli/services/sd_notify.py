"""sd_notify(3) for tooloo's own services: READY=1 once one answers, WATCHDOG=1 while it lives, STOPPING=1.

    notifier = Notifier.from_environment()          # None unless systemd set NOTIFY_SOCKET: nothing to pay
    notifier.send("READY=1", "STATUS=ready")        # True when the datagram went out; never raises
    watchdog_interval()                             # seconds between pings (WATCHDOG_USEC / 2), or None
    notifying = Notifying(notifier, spec, port=3003)   # the service's lifespan starts this …
    await notifying.stop()                             # … and stops it first at shutdown (STOPPING=1)

What a unit of `tooloo export systemd` (Type=notify, WatchdogSec=) hears, and when:

- READY=1 once the service's readiness probe passes against its own port: GET /ready
  answered 200, asked over TCP by the very probe the supervisor uses (stack/probes.py),
  so systemd's "started" is the fact `tooloo up` waits for. Not at the end of the
  lifespan's startup: the socket listens from the first moment (serve.py binds it first)
  but uvicorn answers on it only after the lifespan. Until it passes, the probe is asked
  again after 50 ms, doubling up to the spec's probe interval (a 503 is logged each time).
- WATCHDOG=1 every WATCHDOG_USEC / 2 while its liveness probe (GET /health) passes within
  that half: a wedged event loop, or a server that no longer answers, stops the pings, and
  systemd kills and restarts the service after WatchdogSec, which the export sets to the
  supervisor's own tolerance (probe interval × liveness failures). As sd_watchdog_enabled(3)
  has it, no watchdog without WATCHDOG_USEC, nor when WATCHDOG_PID names another process.
- STOPPING=1 when the lifespan shuts down, before the pool and the cache are closed.

A datagram goes to NOTIFY_SOCKET: a path, or an abstract socket written `@name`. A send
that fails (the socket gone, its queue full) is logged once as a warning and otherwise
ignored: the service never stops serving over its notifications. NOTIFY_SOCKET is left in
the environment, as sd_notify(3) does unless asked: a service starts no program that
could mistake it for its own (NotifyAccess=main would ignore one anyway). Other address
kinds (`vsock:`, systemd 253) are not spoken: a warning says so and nothing is sent.
Without NOTIFY_SOCKET `from_environment` is None and nothing runs: the stack `tooloo up`
starts pays nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tooloo_cli.stack import probe_host

if TYPE_CHECKING:
    from tooloo_cli.stack import ServiceSpec

SOCKET_VARIABLE = "NOTIFY_SOCKET"
FIRST_PROBE_DELAY = 0.05  # as the supervisor's first probes: a service is ready within ~100 ms
logger = logging.getLogger("tooloo.services.sd_notify")


class Notifier:
    """A datagram socket to systemd's notification socket at `address` (a path, or `@name`)."""

    def __init__(self, address: str) -> None:
        # An abstract socket's name starts with a NUL, which the variable cannot hold: `@` stands for it.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier | None:
        """A notifier to NOTIFY_SOCKET, or None when it is unset (or an address kind this does not speak)."""
        address = environ.get(SOCKET_VARIABLE, "")
        if not address:
            return None
        if not address.startswith(("/", "@")):
            logger.warning("%s=%s is neither a path nor an abstract socket (@name): systemd will not hear "
                           "this service's readiness", SOCKET_VARIABLE, address)
            return None
        return cls(address)

    def send(self, *fields: str) -> bool:
        """Sends `fields` ("READY=1", "STATUS=…") as one datagram; False, logged the first time, if it fails."""
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)  # a full queue at systemd's end must not stall the event loop
            self._socket.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("cannot notify systemd at %s (%s); it may stop the service if it waits for "
                               "READY=1 or WATCHDOG=1", self.address.replace("\0", "@"), exc.strerror or exc)
            return False

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when systemd expects none."""
    own = os.getpid() if pid is None else pid
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        watched = int(environ.get("WATCHDOG_PID") or own)
    except ValueError:  # unset, or not a number: systemd did not ask for pings
        return None
    return usec / 2_000_000 if usec > 0 and watched == own else None


class Notifying:
    """What the service `spec` serving `port` tells systemd through `notifier`: a task, until `stop()`."""

    def __init__(self, notifier: Notifier, spec: ServiceSpec, port: int,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.notifier = notifier
        # Asked where its siblings dial it (a wildcard bind on loopback), as the supervisor asks.
        self._task = asyncio.get_running_loop().create_task(
            self._run(spec, probe_host(spec.bind), port, watchdog_interval(environ)), name="sd_notify")

    async def _run(self, spec: ServiceSpec, host: str, port: int, interval: float | None) -> None:
        from tooloo_cli.stack.probes import PROBE_TIMEOUT, check  # the supervisor's own probes: the same facts

        delay = FIRST_PROBE_DELAY
        while (reason := await check(spec.readiness, host, port)) is not None:
            logger.debug("not ready for systemd yet: %s", reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, spec.probe_interval)
        self.notifier.send("READY=1", f"STATUS=ready: {spec.readiness.describe()} passes on port {port}")
        if interval is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            # As patient as the supervisor's liveness probe (PROBE_TIMEOUT), not the whole interval.
            if await check(spec.liveness, host, port, timeout=min(interval, PROBE_TIMEOUT)) is None:
                self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(max(interval - (loop.time() - started), 0))

    async def stop(self) -> None:
        """STOPPING=1, then the task ended and the socket closed."""
        self.notifier.send("STOPPING=1")
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.notifier.close()
