"""ManagedProcess edge cases: stops that arrive mid-spawn or mid-backoff, services that never get healthy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from tooloo_cli.bench.stack import write_ephemeral_config
from tooloo_cli.config import Config, LoadedConfig, load_config
from tooloo_cli.phase6.support import run
from tooloo_cli.stack import stack_of
from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.supervisor.process import ManagedProcess, OutputSink


def _loaded(directory: Path, edit: Callable[[Config], None] | None = None) -> LoadedConfig:
    def edits(config: Config) -> None:
        config.supervisor.grace_period = 3.0
        if edit is not None:
            edit(config)

    return load_config(write_ephemeral_config(directory, edits), env={})


def _managed(loaded: LoadedConfig, name: str, on_output: OutputSink | None = None) -> ManagedProcess:
    paths = StatePaths.of(loaded)
    paths.ensure()
    spec = stack_of(loaded).specs[name]
    return ManagedProcess(spec, spec.replicas[0], paths, on_output)


def _gone(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_stop_during_the_spawn_ends_the_new_process(tmp_path: Path) -> None:
    process = _managed(_loaded(tmp_path), "training")

    async def scenario() -> tuple[float, int | None]:
        process.start()
        await asyncio.sleep(0)  # the task has begun spawning
        started = time.monotonic()
        spawned: list[int | None] = []
        await _until(lambda: process.pid is not None or process.state == "starting")
        spawned.append(process.pid)
        await asyncio.wait_for(process.stop(), 20)
        return time.monotonic() - started, spawned[0]

    elapsed, pid = run(scenario())
    process.close()
    assert elapsed < 10 and process.state == "stopped" and process.pid is None
    assert _gone(pid)


def test_a_stop_during_the_backoff_does_not_wait_it_out(tmp_path: Path) -> None:
    def slow_backoff(config: Config) -> None:
        pool = config.services["capabilities"].pool
        assert pool is not None
        pool.database = "."  # start-up fails at once: the service exits, then backs off
        config.supervisor.backoff_initial = config.supervisor.backoff_max = 30.0

    process = _managed(_loaded(tmp_path, slow_backoff), "capabilities")

    async def scenario() -> float:
        process.start()
        await _until(lambda: process.state == "backoff")
        started = time.monotonic()
        await process.stop()
        return time.monotonic() - started

    elapsed = run(scenario())
    process.close()
    assert elapsed < 3 and process.state == "stopped"


def test_a_service_that_never_gets_healthy_is_failed_not_respawned_forever(tmp_path: Path) -> None:
    def impatient(config: Config) -> None:
        supervisor = config.supervisor
        supervisor.startup_timeout = 0.01  # no service answers that fast: every attempt "never got healthy"
        supervisor.crash_loop_window = 0.001  # so the exits-per-window rule never decides
        supervisor.crash_loop_limit = 3
        supervisor.backoff_initial = supervisor.backoff_max = 0.05

    process = _managed(_loaded(tmp_path, impatient), "training")

    async def scenario() -> None:
        process.start()
        await _until(lambda: process.state == "failed", timeout=30)
        await asyncio.sleep(0.3)

    run(scenario())
    process.close()
    assert process.error is not None and "never became healthy in 3 attempts" in process.error
    assert process.restarts == 2 and process.pid is None


def test_an_output_sink_that_breaks_does_not_end_supervision(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)

    def broken_terminal(name: str, data: bytes) -> None:
        raise OSError(5, "Input/output error")

    process = _managed(loaded, "training", broken_terminal)

    async def scenario() -> str:
        process.start()
        await _until(lambda: process.health == "healthy")
        state = process.state
        await process.stop()
        return state

    assert run(scenario()) == "running"
    process.close()
    assert process.on_output is None  # dropped after its first failure
    assert "listening on" in StatePaths.of(loaded).log("training").read_text()  # the log still got everything
