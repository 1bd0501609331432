"""`tooloo ls`: the stacks running on this machine, from their supervisors' entries in the registry."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Tooloo
from test_cli import clean_env

from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.supervisor.registry import registry_dir, sign_in, sign_out, stacks, still_signed_in


@pytest.fixture
def stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line names tooloo's supervisor (what `ls` looks for), stopped by its pid."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "tooloo_cli.supervisor"])
    # Until it has exec'd, its command line is still this process's: `ls` would rightly not take it for one.
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"tooloo_cli.supervisor" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield process
    process.kill()
    process.wait()


def _ls(cwd: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tooloo_cli", "ls", *arguments], cwd=cwd, env=clean_env(COLUMNS="160"),
                          capture_output=True, text=True, timeout=60)


def test_ls_lists_each_running_stack_with_its_services_and_forgets_a_stopped_one(tmp_path: Path) -> None:
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    first = Tooloo(tmp_path / "first")
    second = None
    try:
        assert first("up", "training").returncode == 0
        second = Tooloo(tmp_path / "second")  # its free ports chosen with first's taken
        assert second("up", "training", "budget").returncode == 0
        listed = _ls(tmp_path, "--json")  # from a directory of neither: ls needs no tooloo.toml
        assert listed.returncode == 0, listed.stderr
        found = {record["stateDir"]: record for record in json.loads(listed.stdout)["stacks"]}
        assert found[str(first.state.resolve())]["running"] == 1 and found[str(second.state.resolve())]["running"] == 2
        assert found[str(second.state.resolve())]["config"] == str(second.config)
        assert found[str(first.state.resolve())]["pid"] == first.status()["supervisor"]["pid"]
        table = _ls(tmp_path).stdout
        assert re.search(rf"^ *1/8 running +pid \d+ +\d+s +{re.escape(str(first.state.resolve()))}\b", table, re.M), table
        assert "2/8 running" in table and "…" not in table
        assert second("down").returncode == 0
        found = {record["stateDir"] for record in json.loads(_ls(tmp_path, "--json").stdout)["stacks"]}
        assert found == {str(first.state.resolve())}
    finally:
        for stack in (first, second):
            if stack is not None:
                stack.end_everything()
    assert _ls(tmp_path).stdout == "no stack runs on this machine (for this user)\n"


def test_an_entry_whose_supervisor_is_gone_is_left_out_and_removed(tmp_path: Path,
                                                                   stand_in: subprocess.Popen[bytes]) -> None:
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    paths = StatePaths(tmp_path / "stack" / ".tooloo")
    paths.root.mkdir(parents=True)
    entry = sign_in(paths, None, environ)
    assert entry is not None and oct(entry.stat().st_mode & 0o777) == "0o600"
    assert all(oct(d.stat().st_mode & 0o777) == "0o700" for d in (entry.parent, entry.parent.parent, tmp_path / "state"))
    # This process signed in, but it is no supervisor (after a reboot, a pid of the old one's reused): left out.
    paths.pid_file.write_text(f"{os.getpid()}\n")
    assert stacks(environ) == [] and not entry.exists()
    entry = sign_in(paths, None, environ)
    assert entry is not None
    entry.write_text(json.dumps({"stateDir": str(paths.root.resolve()), "pid": stand_in.pid, "config": None}))
    paths.pid_file.write_text(f"{stand_in.pid}\n")  # a supervisor, as its command line and the pid file say
    assert [record["pid"] for record in stacks(environ)] == [stand_in.pid]
    paths.pid_file.write_text("1\n")  # another supervisor since: not this entry's
    assert stacks(environ) == [] and not entry.exists()
    assert still_signed_in(entry, paths, None, environ) == entry and entry.exists()  # gone, so written again
    sign_out(entry)
    assert not entry.exists() and list(entry.parent.iterdir()) == []


def test_a_registry_open_to_others_or_a_link_planted_in_it_is_not_written(tmp_path: Path) -> None:
    environ = {"XDG_STATE_HOME": str(tmp_path)}
    paths = StatePaths(tmp_path / "stack")
    registry = registry_dir(environ)
    registry.mkdir(parents=True)
    registry.chmod(0o777)
    assert sign_in(paths, None, environ) is None and list(registry.iterdir()) == []
    registry.chmod(0o700)
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (registry / f".{os.getpid()}.partial").symlink_to(victim)  # where the entry is first written
    entry = sign_in(paths, None, environ)
    assert entry is not None and victim.read_text() == "untouched" and not entry.is_symlink()


def test_the_registry_is_the_user_s_state_directory() -> None:
    import pwd

    assert registry_dir({"XDG_STATE_HOME": "/s"}) == Path("/s/tooloo/stacks")
    assert registry_dir({"HOME": "/h"}) == Path("/h/.local/state/tooloo/stacks")
    own = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".local" / "state" / "tooloo" / "stacks"
    assert registry_dir({"HOME": "relative", "XDG_STATE_HOME": "relative"}) == registry_dir({}) == own


def test_ls_shows_a_stack_whose_supervisor_refuses_and_still_lists_the_others(
        tmp_path: Path, stand_in: subprocess.Popen[bytes]) -> None:
    import asyncio
    import threading

    from tooloo_cli.supervisor.api import ControlServer

    async def refuse(payload: dict[str, object]) -> tuple[int, dict[str, object]]:
        return 503, {"ok": False, "error": "the supervisor is shutting down"}

    paths = StatePaths(tmp_path / "refusing" / ".tooloo")
    paths.root.mkdir(parents=True)
    paths.pid_file.write_text(f"{stand_in.pid}\n")  # the stand-in plays its supervisor
    loop = asyncio.new_event_loop()
    server = ControlServer(paths.socket, {("GET", "/states"): refuse})
    loop.run_until_complete(server.start())
    serving = threading.Thread(target=loop.run_forever, daemon=True)
    serving.start()
    entry = sign_in(paths, None)  # the tests' own registry (conftest's XDG_STATE_HOME)
    assert entry is not None
    entry.write_text(json.dumps({"stateDir": str(paths.root.resolve()), "pid": stand_in.pid, "config": None}))
    try:
        listed = _ls(tmp_path, "--json")
        assert listed.returncode == 0, listed.stderr
        record = next(r for r in json.loads(listed.stdout)["stacks"] if r["stateDir"] == str(paths.root.resolve()))
        assert record["running"] is None
        assert "not answering" in _ls(tmp_path).stdout
    finally:
        sign_out(entry)
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        serving.join(10)
        loop.close()
