"""The redis_server fixture does what the Redis tests rely on: it answers, dies, comes back, and hangs."""

from __future__ import annotations

import socket

import pytest

from tooloo_cli.bench.redis_server import PING, RedisServer, redis_ping


def test_it_answers_ping_on_its_unix_socket(redis_server: RedisServer) -> None:
    assert redis_server.url == f"unix://{redis_server.path}"
    assert redis_ping(redis_server.path)


def test_killed_it_refuses_and_restarted_it_answers_with_a_new_pid(redis_server: RedisServer) -> None:
    first = redis_server.pid
    redis_server.kill()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection, pytest.raises(ConnectionRefusedError):
        connection.connect(redis_server.path)
    redis_server.restart()
    assert redis_ping(redis_server.path)
    assert redis_server.pid != first


def test_stopped_it_accepts_but_does_not_answer_until_resumed(redis_server: RedisServer) -> None:
    redis_server.stop_answering()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(0.2)
        connection.connect(redis_server.path)
        connection.sendall(PING)
        with pytest.raises(TimeoutError):
            connection.recv(64)
        redis_server.resume()
        connection.settimeout(5)
        assert connection.recv(64) == b"+PONG\r\n"
    assert redis_ping(redis_server.path)
