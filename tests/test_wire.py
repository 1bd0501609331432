"""The services' own HTTP client against real sockets: reuse, framing, closes, timeouts, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tooloo_cli.services.wire import (
    BadRequest,
    BadResponse,
    ConnectFailed,
    ConnectionBroken,
    ResponseTimeout,
    WireClient,
)
from tooloo_cli.bench.stack import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serving(handler: Handler) -> tuple[asyncio.AbstractServer, int, list[int]]:
    """A raw server on 127.0.0.1; `connections` grows by one per accepted connection."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + (await reader.readexactly(length) if length else b"")


def _run(handler: Handler, scenario: Callable[[WireClient, int], Awaitable[object]],
         client_options: dict[str, float] | None = None) -> tuple[object, list[int]]:
    async def main() -> tuple[object, list[int]]:
        server, port, connections = await _serving(handler)
        client = WireClient(**(client_options or {}))
        try:
            return await scenario(client, port), connections
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


async def _keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            request = await _read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        body = request.split(b"\r\n\r\n", 1)[1] or b"none"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Seen: yes\r\n\r\n%s" % (len(body), body))
        await writer.drain()


def test_answers_come_back_whole_and_one_connection_serves_them_all() -> None:
    async def scenario(client: WireClient, port: int) -> list[tuple[int, bytes, bytes | None]]:
        answers = []
        for index in range(5):
            response = await client.request("127.0.0.1", port, "POST", b"/echo?x=1", [(b"Accept", b"*/*")],
                                            b"body %d" % index, timeout=2)
            answers.append((response.status_code, response.content, response.header(b"x-seen")))
        return answers

    answers, connections = _run(_keep_alive, scenario)
    assert answers == [(200, b"body %d" % i, b"yes") for i in range(5)]
    assert len(connections) == 1  # kept alive and reused


def test_chunked_answers_are_decoded_and_connection_close_is_honoured() -> None:
    async def chunked_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()

    async def scenario(client: WireClient, port: int) -> list[bytes]:
        return [(await client.request("127.0.0.1", port, "GET", b"/", [], b"", timeout=2)).content for _ in range(3)]

    contents, connections = _run(chunked_then_close, scenario)
    assert contents == [b"hello world"] * 3 and len(connections) == 3  # closed as asked: a new one each time


def test_every_reusable_connection_is_kept_after_a_busy_moment() -> None:
    async def slow_keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            await asyncio.sleep(0.02)  # long enough for the requests of a burst to overlap
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def scenario(client: WireClient, port: int) -> list[int]:
        statuses = []
        for _ in range(3):  # three bursts of 30: the second and third find the first's connections
            answers = await asyncio.gather(*(client.request("127.0.0.1", port, "GET", b"/", [], b"", timeout=5)
                                             for _ in range(30)))
            statuses += [answer.status_code for answer in answers]
        return statuses

    statuses, connections = _run(slow_keep_alive, scenario)
    assert statuses == [200] * 90 and len(connections) == 30


def test_a_connection_idle_too_long_is_closed_rather_than_reused() -> None:
    async def scenario(client: WireClient, port: int) -> None:
        await client.request("127.0.0.1", port, "POST", b"/", [], b"a", timeout=2)
        await client.request("127.0.0.1", port, "POST", b"/", [], b"b", timeout=2)  # at once: reused
        await asyncio.sleep(0.3)  # past idle_seconds: the server may be closing it right now
        await client.request("127.0.0.1", port, "POST", b"/", [], b"c", timeout=2)

    _, connections = _run(_keep_alive, scenario, {"idle_seconds": 0.2})
    assert len(connections) == 2


def test_a_pooled_connection_the_server_closed_is_replaced_without_a_failure() -> None:
    async def one_answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # says keep-alive, then closes
        await writer.drain()

    async def scenario(client: WireClient, port: int) -> list[int]:
        statuses = []
        for _ in range(3):
            statuses.append((await client.request("127.0.0.1", port, "POST", b"/", [], b"x", timeout=2)).status_code)
            await asyncio.sleep(0.05)  # the close has arrived, or is on its way
        return statuses

    statuses, connections = _run(one_answer_each, scenario)
    assert statuses == [200, 200, 200] and len(connections) == 3


def test_a_head_answer_ends_at_its_headers() -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def scenario(client: WireClient, port: int) -> tuple[int, bytes]:
        response = await client.request("127.0.0.1", port, "HEAD", b"/", [], b"", timeout=0.5)
        return response.status_code, response.content

    assert _run(head, scenario)[0] == (200, b"")


@pytest.mark.parametrize(("answer", "error"), [
    (None, ResponseTimeout),  # says nothing
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", ConnectionBroken),  # closes mid-body
    (b"SSH-2.0-OpenSSH\r\n\r\n", BadResponse),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", BadResponse),
])
def test_what_is_no_whole_answer_is_named(answer: bytes | None, error: type[Exception]) -> None:
    async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        if answer is None:
            await asyncio.sleep(2)
            return
        writer.write(answer)
        await writer.drain()

    async def scenario(client: WireClient, port: int) -> None:
        with pytest.raises(error):
            await client.request("127.0.0.1", port, "GET", b"/", [], b"", timeout=0.3)

    _run(misbehave, scenario)


def test_a_port_nobody_listens_on_is_connect_failed() -> None:
    async def main() -> None:
        with pytest.raises(ConnectFailed, match="cannot connect"):
            await WireClient().request("127.0.0.1", free_port(), "GET", b"/", [], b"", timeout=1)

    asyncio.run(main())


@pytest.mark.parametrize(("method", "target", "headers"), [
    ("GET", b"/a b", []), ("GET", b"/a\r\nX: y", []), ("GET", b"no-slash", []), ("G T", b"/", []),
    ("GET", b"/", [(b"x-a", b"v\r\nInjected: 1")]), ("GET", b"/", [(b"bad name", b"v")]),
])
def test_what_could_be_misread_is_refused_before_anything_is_sent(method: str, target: bytes,
                                                                  headers: list[tuple[bytes, bytes]]) -> None:
    async def scenario(client: WireClient, port: int) -> None:
        with pytest.raises(BadRequest):
            await client.request("127.0.0.1", port, method, target, headers, b"", timeout=1)

    _, connections = _run(_keep_alive, scenario)
    assert connections == []  # refused before connecting


def test_framing_headers_of_the_caller_are_not_sent() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    async def scenario(client: WireClient, port: int) -> int:
        smuggle = [(b"Content-Length", b"0"), (b"Transfer-Encoding", b"chunked"), (b"Host", b"evil")]
        return (await client.request("127.0.0.1", port, "POST", b"/", smuggle, b"abc", timeout=1)).status_code

    status, _ = _run(record, scenario)
    head = seen[0].lower()
    assert status == 204 and head.count(b"content-length") == 1 and b"content-length: 3" in head
    assert b"transfer-encoding" not in head and b"evil" not in head and seen[0].endswith(b"abc")


def test_a_post_is_never_sent_twice_even_on_a_reused_connection_that_broke() -> None:
    received: list[bytes] = []

    async def acts_then_dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # the first, answered; kept alive
        await writer.drain()
        received.append(await _read_request(reader))  # the second is acted on, then the peer goes away
        writer.transport.abort()

    async def scenario(client: WireClient, port: int) -> None:
        await client.request("127.0.0.1", port, "POST", b"/charge", [], b"1", timeout=2)
        with pytest.raises(ConnectionBroken):
            await client.request("127.0.0.1", port, "POST", b"/charge", [], b"2", timeout=2)

    _, connections = _run(acts_then_dies, scenario)
    assert len(received) == 1 and len(connections) == 1  # no second attempt, on any connection


def test_an_interim_answer_is_skipped_and_a_close_delimited_one_read_to_its_end() -> None:
    async def unusual(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Final: 1\r\nConnection: close\r\n\r\n"
                     b"until the end")
        await writer.drain()

    async def scenario(client: WireClient, port: int) -> tuple[int, bytes, bytes | None]:
        response = await client.request("127.0.0.1", port, "GET", b"/", [], b"", timeout=2)
        return response.status_code, response.content, response.header(b"x-final")

    assert _run(unusual, scenario)[0] == (200, b"until the end", b"1")


def test_a_timeout_leaves_no_exception_unretrieved() -> None:
    unretrieved: list[dict] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(1)

    async def scenario(client: WireClient, port: int) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unretrieved.append(context))
        for _ in range(3):
            with pytest.raises(ResponseTimeout):
                await client.request("127.0.0.1", port, "GET", b"/", [], b"", timeout=0.05)
        import gc

        gc.collect()
        await asyncio.sleep(0.05)

    _run(silent, scenario)
    assert not [c for c in unretrieved if "never retrieved" in c.get("message", "")], unretrieved


def test_an_answer_over_max_response_bytes_is_refused_before_it_is_all_held() -> None:
    sent: list[int] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        try:
            for _ in range(1000):  # 64 MB at most, in 64 KB pieces: far over the bound, far under the claim
                writer.write(b"x" * 65536)
                await writer.drain()
                sent.append(1)
        except ConnectionError:
            return

    async def scenario(client: WireClient, port: int) -> str:
        try:
            await client.request("127.0.0.1", port, "GET", b"/", [], b"", timeout=5)
        except BadResponse as exc:
            return str(exc)
        return "answered"

    message, _ = _run(endless, scenario, {"max_response_bytes": 100_000})
    assert message == "the answer's body is over 100000 bytes"
    assert len(sent) < 1000  # the client closed the connection; the server did not get to send it all
