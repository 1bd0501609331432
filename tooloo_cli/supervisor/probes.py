"""The supervisor's probes: is a replica alive, is it ready (the spec's `Probe`s, asked for real).

    reason = await check(Probe("http", "/ready"), "127.0.0.1", 3003)   # None when it passes
    reason = await check(Probe("tcp"), "127.0.0.1", 6390)              # a TCP connect
    reason = await check(Probe("process"), None, None)                 # the caller knows it runs

An HTTP probe is one raw request (`GET path`, `Connection: close`) that passes on a 200:
the supervisor carries no HTTP client. Every failure comes back as a short reason.
"""

from __future__ import annotations

import asyncio

from tooloo_cli.stack import Probe

PROBE_TIMEOUT = 1.0


async def check(probe: Probe, host: str | None, port: int | None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when `probe` passes against host:port, else why it did not."""
    if probe.kind == "process":
        return None
    assert host is not None and port is not None  # an http or tcp probe comes with a port (see the spec)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        return f"no connection to {port} within {timeout:g} s"
    except OSError as exc:
        return f"port {port}: {exc.strerror or type(exc).__name__}"
    try:
        if probe.kind == "tcp":
            return None
        writer.write(f"GET {probe.path} HTTP/1.1\r\nHost: supervisor\r\nConnection: close\r\n\r\n".encode())
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        status = status_line.split(b" ", 2)[1:2]
        if status == [b"200"]:
            return None
        return f"{probe.path} answered {status[0].decode(errors='replace')}" if status else \
            f"{probe.path} gave no HTTP answer"
    except asyncio.TimeoutError:
        return f"{probe.path} did not answer within {timeout:g} s"
    except OSError as exc:
        return f"{probe.path}: {exc.strerror or type(exc).__name__}"
    finally:
        writer.close()
