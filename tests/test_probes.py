"""The probes the supervisor, sd_notify and the bench ask (stack/probes.py), against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio

from tooloo_cli.stack import Probe
from tooloo_cli.stack.probes import check


def test_a_probe_cancelled_at_any_step_ends_cancelled() -> None:
    """A probe loop told to stop must stop: Python 3.11's asyncio.wait_for lost a cancellation that met the end
    of the step it awaited (half of them against a service answering at once), and a service's sd_notify task
    then pinged on for ever, its process never exiting at SIGTERM."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[int, int]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cancelled = lost = 0
        for steps in range(40):  # cancelled after 0, 1, 2 ... turns of the loop: at every await of the probe
            for _ in range(3):
                probe = asyncio.create_task(check(Probe("http", "/ready"), "127.0.0.1", port))
                for _ in range(steps):
                    await asyncio.sleep(0)
                if probe.done():
                    continue
                probe.cancel()
                outcome = (await asyncio.gather(probe, return_exceptions=True))[0]
                cancelled += 1
                lost += not isinstance(outcome, asyncio.CancelledError)
        server.close()
        await server.wait_closed()
        return cancelled, lost

    cancelled, lost = asyncio.run(scenario())
    assert cancelled >= 20 and lost == 0, f"{lost} of {cancelled} cancellations lost"
