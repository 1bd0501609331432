"""An OTLP/HTTP collector for `tooloo bench http` that takes every export and does nothing with it.

    with OtlpSink() as sink:                 # a process of its own, on a free 127.0.0.1 port
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
        sink.pid                             # to keep it off the processor the services are measured on

    $ python -m tooloo_cli.bench.otlp_sink 4318     # the same, in the foreground

It answers every request 200 with an empty body (an ExportTraceServiceResponse with nothing
rejected), on keep-alive connections, reading each body by its Content-Length and decoding
none: the bench measures what export costs the service, and a collector that is quick and
always there is the case where the service does the most exporting. Its process is ended
by its pid, SIGTERM and then SIGKILL, when the block ends.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

from tooloo_cli.bench.stack import end_process, free_port

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(_ANSWER)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass  # the exporter closed the connection (or sent what is not HTTP): this exchange is over
    finally:
        writer.close()


async def _serve(port: int) -> None:
    server = await asyncio.start_server(_exchange, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


class OtlpSink:
    def __init__(self, startup_timeout: float = 10.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "tooloo_cli.bench.otlp_sink", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.process.pid
        deadline = time.monotonic() + startup_timeout
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.end()
                raise RuntimeError(f"the bench's OTLP sink did not listen on port {self.port}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def end(self) -> None:
        end_process(self.process)

    def __enter__(self) -> OtlpSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.end()


if __name__ == "__main__":
    try:
        asyncio.run(_serve(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
