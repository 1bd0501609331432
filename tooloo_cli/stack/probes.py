"""The spec's `Probe`s, asked for real: is a replica alive, is it ready.

    reason = await check(Probe("http", "/ready"), "127.0.0.1", 3003)   # None when it passes
    reason = await check(Probe("tcp"), "127.0.0.1", 6390)              # a TCP connect
    reason = await check(Probe("process"), None, None)                 # the caller knows it runs

The supervisor asks them of every replica, a service started by systemd of itself
(services/sd_notify.py), the bench of what it starts: one way to ask, so that "ready"
means the same to each. An HTTP probe is one raw request (`GET path`, `Connection:
close`) that passes on a 200: the supervisor carries no HTTP client. Every failure comes back as a short reason. A
service that passes but runs degraded says why in a DEGRADED_HEADER of its answer (one of
tooloo's own whose Redis is away answers from a fallback): `probe` hands that back too.

    reason, degraded = await probe(Probe("http", "/ready"), "127.0.0.1", 3003)
"""

from __future__ import annotations

import asyncio

from tooloo_cli.stack import DEGRADED_HEADER, Probe

PROBE_TIMEOUT = 1.0
_DEGRADED = DEGRADED_HEADER.lower().encode() + b":"


async def check(probe: Probe, host: str | None, port: int | None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when `probe` passes against host:port, else why it did not."""
    return (await probe_of(probe, host, port, timeout))[0]


async def probe_of(probe: Probe, host: str | None, port: int | None,
                   timeout: float = PROBE_TIMEOUT) -> tuple[str | None, str | None]:
    """(None when `probe` passes, else why not; what the service says degrades it, if anything)."""
    if probe.kind == "process":
        return None, None
    assert host is not None and port is not None  # an http or tcp probe comes with a port (see the spec)
    # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that meets the awaited
    # step's end (half of them, against a service that answers at once), and a probe loop told to stop
    # then went on for ever (a service's sd_notify task, and with it its exit at SIGTERM).
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no connection to {port} within {timeout:g} s", None
    except OSError as exc:
        return f"port {port}: {exc.strerror or type(exc).__name__}", None
    try:
        if probe.kind == "tcp":
            return None, None
        writer.write(f"GET {probe.path} HTTP/1.1\r\nHost: supervisor\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(timeout):
            status_line = await reader.readline()
        status = status_line.split(b" ", 2)[1:2]
        if status != [b"200"]:
            return (f"{probe.path} answered {status[0].decode(errors='replace')}" if status else
                    f"{probe.path} gave no HTTP answer"), None
        async with asyncio.timeout(timeout):
            return None, await _degraded(reader)
    except TimeoutError:
        return f"{probe.path} did not answer within {timeout:g} s", None
    except OSError as exc:
        return f"{probe.path}: {exc.strerror or type(exc).__name__}", None
    finally:
        writer.close()


async def _degraded(reader: asyncio.StreamReader) -> str | None:
    """The DEGRADED_HEADER among the headers that follow, if any (read up to the blank line)."""
    for _ in range(100):  # a bounded head: the services send a handful of headers
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return None
        if line.lower().startswith(_DEGRADED):
            return line[len(_DEGRADED):].strip().decode("latin-1")
    return None
