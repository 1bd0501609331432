"""Fixtures shared by the project's tests: a stack configuration on free ports, in-process clients.

    loaded = stack_config()                      # every service on a free port, state in tmp_path
    async with service_client("budget", loaded) as client:
        response = await client.get("/health")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tooloo_cli.bench.stack import write_ephemeral_config
from tooloo_cli.config import Config, LoadedConfig, load_config


def write_stack_config(directory: Path, edit: Callable[[Config], None] | None = None) -> Path:
    """A tooloo.toml in `directory` with every service on its own free port."""
    return write_ephemeral_config(directory, edit)


@pytest.fixture
def stack_config(tmp_path: Path) -> Callable[..., LoadedConfig]:
    def make(edit: Callable[[Config], None] | None = None) -> LoadedConfig:
        return load_config(write_stack_config(tmp_path, edit), env={})

    return make


@asynccontextmanager
async def running_lifespan(app: Any) -> AsyncIterator[None]:
    """Drives an ASGI app's lifespan: startup on entry, shutdown on exit (ASGITransport does neither)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put))
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        stopped = await outbox.get()
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
        await task


@asynccontextmanager
async def service_client(name: str, loaded: LoadedConfig, client_address: str = "127.0.0.1",
                         access_log: Any = None) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking in process to service `name`, its lifespan running."""
    import io

    from tooloo_cli.services import create_app

    app = create_app(name, loaded, access_log=access_log if access_log is not None else io.StringIO())
    transport = httpx.ASGITransport(app=app, client=(client_address, 50_000))
    async with running_lifespan(app):
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}.test") as client:
            yield client


def serve_in_thread(app: Any, host: str, port: int, name: str) -> tuple[Any, Any]:
    """Runs an ASGI app with uvicorn on host:port in a daemon thread; (server, thread) once it listens."""
    import threading
    import time

    import uvicorn

    # Outside the main thread uvicorn leaves signal handling alone.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"live-{name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start on {host}:{port}")
        time.sleep(0.01)
    return server, thread


def stop_servers(running: list[tuple[Any, Any]]) -> None:
    """Stops the servers `serve_in_thread` started, the last one first."""
    for server, thread in reversed(running):
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_service() -> Iterator[Callable[[str, LoadedConfig], str]]:
    """Starts a service on a real socket, on its configured port, in a background thread.

        base_url = live_service("training", loaded)   # "http://127.0.0.1:<port>"; stopped after the test

    For services whose siblings must really answer: an in-process app is not reachable over TCP.
    """
    import io

    from tooloo_cli.services import create_app

    running: list[tuple[Any, Any]] = []

    def start(name: str, loaded: LoadedConfig) -> str:
        host, port = loaded.config.stack.host, loaded.services[name].port
        running.append(serve_in_thread(create_app(name, loaded, access_log=io.StringIO()), host, port, name))
        return f"http://{host}:{port}"

    yield start
    stop_servers(running)


@pytest.fixture
def live_app() -> Iterator[Callable[[Any, str, LoadedConfig], str]]:
    """Serves any ASGI app on the port of service `name`, standing in for that service.

        live_app(answer_503, "budget", loaded)        # budget's port now answers what answer_503 says
    """
    running: list[tuple[Any, Any]] = []

    def start(app: Any, name: str, loaded: LoadedConfig) -> str:
        host, port = loaded.config.stack.host, loaded.services[name].port
        running.append(serve_in_thread(app, host, port, f"stand-in-{name}"))
        return f"http://{host}:{port}"

    yield start
    stop_servers(running)
