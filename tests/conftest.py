"""Fixtures shared by the project's tests: a stack configuration on free ports, in-process clients,
the real `tooloo` command against a private stack, a small real filesystem, and a real redis-server.

    loaded = stack_config()                      # every service on a free port, state in tmp_path
    async with service_client("budget", loaded) as client:
        response = await client.get("/health")
    t = tooloo()                                 # `tooloo` on a private configuration; everything it
    t("up", "budget")                            # started is stopped by its pid at the end
    with small_filesystem(tmp_path / "disk", "1m") as disk: ...   # a tmpfs: a disk that really fills
    def test_x(redis_server): redis_server.url                  # "unix:///tmp/…/redis.sock", the test's own
    promtool_check_metrics(page)                 # "" when `promtool check metrics` finds nothing to say
    def test_y(prometheus_server): prometheus_server(scrape_yaml).api("targets")   # a real Prometheus
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psutil
import pytest

from tooloo_cli.bench.stack import end_process, write_ephemeral_config
from tooloo_cli.config import Config, LoadedConfig, load_config
from tooloo_cli.bench.redis_server import RedisServer


@pytest.fixture(autouse=True, scope="session")
def own_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """XDG_STATE_HOME of every process the tests start: their supervisors sign in there for `tooloo ls`
    (supervisor/registry.py), not in the registry of the person running the tests."""
    directory = tmp_path_factory.mktemp("state-home")
    directory.chmod(0o700)
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(directory)
    yield directory
    if before is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = before


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


# -- the real `tooloo` command ---------------------------------------------------------------


def _quick_supervision(config: Config) -> None:
    supervisor = config.supervisor
    supervisor.backoff_initial, supervisor.backoff_max = 0.05, 0.2
    supervisor.crash_loop_limit, supervisor.crash_loop_window = 3, 30.0
    supervisor.health_interval, supervisor.liveness_failures = 0.2, 2
    supervisor.grace_period, supervisor.startup_timeout = 3.0, 10.0


class Tooloo:
    """Runs `tooloo` against one configuration and remembers every pid it saw, to end them at last."""

    def __init__(self, directory: Path, edit: Callable[[Config], None] | None = None) -> None:
        def edits(config: Config) -> None:
            _quick_supervision(config)
            if edit is not None:
                edit(config)

        self.config = write_ephemeral_config(directory, edits)
        self.loaded = load_config(self.config, env={})
        self.state = directory / ".tooloo"
        self.seen: set[int] = set()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")} | {"NO_COLOR": "1"}

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "tooloo_cli", "--config", str(self.config), *args],
                                capture_output=True, text=True, timeout=timeout, env=self.env)
        self.remember()
        return result

    def status(self) -> dict[str, Any]:
        result = self("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def remember(self) -> None:
        pid_file = self.state / "supervisor.pid"
        if pid_file.exists():
            self.seen.add(int(pid_file.read_text()))
            for process in psutil.Process(int(pid_file.read_text())).children(recursive=True) \
                    if psutil.pid_exists(int(pid_file.read_text())) else []:
                self.seen.add(process.pid)

    def port(self, name: str) -> int:
        return self.loaded.services[name].port

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            document = self.status()
            if predicate(document) or time.monotonic() > deadline:
                return document
            time.sleep(0.1)

    def end_everything(self) -> None:
        """The finalizer: a clean `down`, then SIGKILL to any pid seen here that still lives."""
        subprocess.run([sys.executable, "-m", "tooloo_cli", "--config", str(self.config), "down"],
                       capture_output=True, timeout=60, env=self.env)
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def flood(base_url: str, ask: Callable[[httpx.Client, int], httpx.Response], *, count: int, seconds: float,
          clients: int = 1) -> Iterator[Counter[int]]:
    """`clients` keep-alive clients, each in a thread, sending `ask(client, i)` while the block runs (bounded:
    `count` requests and `seconds` each); yields the statuses seen, joined and complete once the block ends."""
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as own:
            for i in range(count):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                statuses[ask(own, i).status_code] += 1

    loaders = [threading.Thread(target=load) for _ in range(clients)]
    for loader in loaders:
        loader.start()
    try:
        yield statuses
    finally:
        stop.set()
        for loader in loaders:
            loader.join()


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for PID 1 to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: list[int], timeout: float = 5) -> list[int]:
    deadline = time.monotonic() + timeout
    while (remaining := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return remaining


@pytest.fixture
def tooloo(tmp_path: Path) -> Iterator[Callable[..., Tooloo]]:
    made: list[Tooloo] = []

    def make(edit: Callable[[Config], None] | None = None) -> Tooloo:
        made.append(Tooloo(tmp_path, edit))
        return made[-1]

    yield make
    for instance in made:
        instance.end_everything()


# -- what only root may do -----------------------------------------------------------------------


def unavailable(message: str) -> NoReturn:
    """Skips the test, or fails it under CI=true, where the machine is ours and must have everything."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def need_root(what: str) -> None:
    """Skips (fails under CI=true) unless this process is root."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        unavailable(f"{what} needs root (and mount)")


@contextmanager
def small_filesystem(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `directory`: writes there really fail with ENOSPC once it is full."""
    need_root("a small real filesystem")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Fills the filesystem holding `directory` to the last byte; returns the filler (delete it to free)."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, b"\0" * 65_536)
    except OSError:
        pass
    try:
        while True:
            os.write(descriptor, b"\0")
    except OSError:
        pass
    os.close(descriptor)
    return filler


# -- a real redis-server ---------------------------------------------------------------------------


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A RedisServer for this test alone, answering PING, ended (SIGCONT, SIGKILL, waited for) after it.
    Without redis-server on PATH the test is skipped, or fails under CI=true."""
    if shutil.which("redis-server") is None:
        unavailable("the Redis tests need redis-server on PATH: run scripts/setup as root "
                    "(it installs Debian's redis-server with apt-get), or install it yourself")
    # Not tmp_path: a Unix socket path must fit in 107 bytes, and a long test name alone exceeds that.
    with tempfile.TemporaryDirectory(prefix="tooloo-redis-") as directory:
        server = RedisServer(Path(directory))
        yield server
        server.end()


# -- Prometheus: promtool and a real server ------------------------------------------------------


def promtool_check_metrics(page: str) -> str:
    """`promtool check metrics` on a /metrics page: what it says (empty when the page is clean).
    Without promtool on PATH the test is skipped, or fails under CI=true."""
    if shutil.which("promtool") is None:
        unavailable("checking /metrics needs promtool on PATH: run scripts/setup as root (it installs "
                    "Debian's prometheus package with apt-get), or install it yourself")
    checked = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
    return (checked.stdout + checked.stderr).strip() if checked.returncode != 0 or checked.stdout.strip() else ""


class PrometheusServer:
    """A prometheus on a free 127.0.0.1 port with the scrape configuration given, its data in `directory`;
    `end()` stops it by its pid (SIGTERM, then SIGKILL) and waits for it."""

    def __init__(self, directory: Path, configuration: str) -> None:
        from tooloo_cli.bench.stack import free_port

        self.directory = directory
        (directory / "prometheus.yml").write_text(configuration)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.end()
                raise RuntimeError(f"prometheus did not start: {(directory / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5, trust_env=False).json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def end(self) -> None:
        end_process(self.process, grace=10)
        self.log.close()


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[[str], PrometheusServer]]:
    """Starts a PrometheusServer with a scrape configuration (YAML text); each is ended after the test.
    Without prometheus on PATH the test is skipped, or fails under CI=true."""
    if shutil.which("prometheus") is None:
        unavailable("the Prometheus test needs prometheus on PATH: run scripts/setup as root (it installs "
                    "Debian's prometheus package with apt-get), or install it yourself")
    started: list[PrometheusServer] = []

    def start(configuration: str) -> PrometheusServer:
        directory = tmp_path / f"prometheus-{len(started)}"
        directory.mkdir()
        started.append(PrometheusServer(directory, configuration))
        return started[-1]

    yield start
    for server in started:
        server.end()
