"""Replicas spawned by a standby before its event loop (supervisor/early.py), and their adoption by the
supervisor's loop (supervisor/adopted.py): real child processes, ended by their pids."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from conftest import Tooloo
from tooloo_cli.parent import PARENT_VARIABLE
from tooloo_cli.supervisor.adopted import AdoptedProcess
from tooloo_cli.supervisor.early import EarlySpawn, end_unclaimed, launch_order, spawn_early

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="early spawns need pidfds (Linux 5.3+)")


def _python(code: str, tmp_path: Path, replica: str = "r", builtin: bool = False) -> dict[str, object]:
    return launch_order(replica, [sys.executable, "-c", code], str(tmp_path), {"GREETING": "hello"}, builtin,
                        "127.0.0.1", None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def early() -> Iterator[dict[str, EarlySpawn]]:
    spawned: dict[str, EarlySpawn] = {}
    yield spawned
    end_unclaimed(spawned)  # by pid, whatever a test left


def test_each_order_is_spawned_at_once_with_its_environment_and_directory(
        tmp_path: Path, early: dict[str, EarlySpawn]) -> None:
    code = "import os, sys; print(os.getcwd(), os.environ['GREETING'], os.environ.get('%s')); sys.stdout.flush()" \
        % PARENT_VARIABLE
    early.update(spawn_early([_python(code, tmp_path, "own", builtin=True), _python(code, tmp_path, "users")]))
    assert set(early) == {"own", "users"}
    own, users = early["own"].popen, early["users"].popen
    assert own.stdout is not None and users.stdout is not None
    # One of tooloo's own is told who its supervisor is; a command of the user's own is not (it gets the hook).
    assert own.stdout.read().decode().split() == [str(tmp_path), "hello", str(os.getpid())]
    assert users.stdout.read().decode().split() == [str(tmp_path), "hello", "None"]
    assert os.getpgid(own.pid) == own.pid  # a session, and so a group, of its own


def test_what_cannot_be_spawned_is_left_to_the_supervisor(tmp_path: Path, early: dict[str, EarlySpawn]) -> None:
    missing = launch_order("missing", [str(tmp_path / "no-such-program")], str(tmp_path), {}, False, "127.0.0.1", None)
    nowhere = launch_order("nowhere", [sys.executable, "-c", "pass"], str(tmp_path / "no-such-directory"), {}, False,
                           "127.0.0.1", None)
    malformed = [{"replica": "x"}, {"replica": "y", "argv": [], "cwd": "/", "env": {}, "builtin": True}, "z",
                 {**_python("pass", tmp_path), "port": "80"}]
    with socket.socket() as holder:  # its port taken since the command looked: the ordinary spawn names the holder
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = {**_python("pass", tmp_path, "taken"), "port": holder.getsockname()[1]}
        early.update(spawn_early([missing, nowhere, taken, *malformed]))
    assert early == {}
    assert spawn_early(None) == {} and spawn_early({"not": "a list"}) == {}


def test_the_unclaimed_are_ended_by_their_pids_with_their_groups(tmp_path: Path, early: dict[str, EarlySpawn]) -> None:
    # The child leaves a grandchild in its group: ending the replica ends both.
    code = "import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); time.sleep(60)"
    early.update(spawn_early([_python(code, tmp_path)]))
    spawn = early["r"]
    assert spawn.popen.stdout is not None
    grandchild = int(spawn.popen.stdout.readline())
    end_unclaimed(early)
    assert early == {}
    assert spawn.popen.returncode == -signal.SIGKILL  # reaped
    for _ in range(200):
        if not _alive(grandchild):
            break
        time.sleep(0.01)
    assert not _alive(grandchild)


def test_an_adopted_process_is_read_and_waited_for_as_asyncio_would(
        tmp_path: Path, early: dict[str, EarlySpawn]) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    early.update(spawn_early([_python(code, tmp_path)]))

    async def adopt() -> tuple[int | None, bytes, bytes, int | None]:
        process = await AdoptedProcess.of(early.pop("r"))
        out, err = await asyncio.gather(process.stdout.read(), process.stderr.read())
        return await process.wait(), out, err, process.returncode

    assert asyncio.run(adopt()) == (3, b"out\n", b"err\n", 3)


def test_an_adopted_process_ended_by_a_signal_reads_as_minus_the_signal_and_a_cancelled_waiter_leaves_the_others(
        tmp_path: Path, early: dict[str, EarlySpawn]) -> None:
    early.update(spawn_early([_python("import time; time.sleep(60)", tmp_path)]))

    async def adopt() -> tuple[int | None, int | None]:
        process = await AdoptedProcess.of(early.pop("r"))
        impatient = asyncio.ensure_future(process.wait())
        patient = asyncio.ensure_future(process.wait())
        await asyncio.sleep(0.05)
        impatient.cancel()
        os.killpg(process.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            return await patient, process.returncode

    assert asyncio.run(adopt()) == (-signal.SIGKILL, -signal.SIGKILL)


def test_a_process_that_exited_before_its_adoption_is_reaped_at_once(
        tmp_path: Path, early: dict[str, EarlySpawn]) -> None:
    early.update(spawn_early([_python("import sys; sys.exit(4)", tmp_path)]))
    spawn = early.pop("r")
    stat = Path(f"/proc/{spawn.popen.pid}/stat")
    for _ in range(1000):  # until it is a zombie: exited, not yet reaped, before the loop ever saw it
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)

    async def adopt() -> int | None:
        process = await AdoptedProcess.of(spawn)
        async with asyncio.timeout(10):
            return await process.wait()

    assert asyncio.run(adopt()) == 4


# -- through `tooloo up`, whose standby spawns them -------------------------------------------


def test_up_spawns_each_replica_once_and_the_supervisor_adopts_it(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "budget").returncode == 0
    document = t.status()
    pid = document["services"]["budget"]["pid"]
    assert psutil.Process(pid).ppid() == document["supervisor"]["pid"]  # its child: it reaps it
    said = [json.loads(line)["line"] for line in t("logs", "budget", "--json", "-n", "100").stdout.splitlines()]
    assert [line for line in said if line.startswith("started")] == [f"started (pid {pid})"]
    assert t("down").returncode == 0
    said = [json.loads(line)["line"] for line in t("logs", "budget", "--json", "-n", "100").stdout.splitlines()]
    assert said[-1] == "stopped (exit code 0)"  # SIGTERM reached it and its end was learnt from its pidfd
    assert not psutil.pid_exists(pid)


def test_without_pidfds_nothing_is_spawned_early_so_nothing_runs_twice(
        tmp_path: Path, early: dict[str, EarlySpawn], monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(pid: int) -> int:
        raise PermissionError(1, "Operation not permitted")  # as a seccomp profile may answer

    monkeypatch.setattr(os, "pidfd_open", refused)
    ran = tmp_path / "ran"
    early.update(spawn_early([_python(f"open({str(ran)!r}, 'a').write('x')", tmp_path)]))
    assert early == {}
    time.sleep(0.3)
    assert not ran.exists()


def test_a_process_reaped_by_someone_else_ends_with_asyncios_unknown_code_and_popen_forgets_it(
        tmp_path: Path, early: dict[str, EarlySpawn]) -> None:
    early.update(spawn_early([_python("pass", tmp_path)]))
    spawn = early.pop("r")
    os.waitpid(spawn.popen.pid, 0)  # an outside reaper

    async def adopt() -> int | None:
        process = await AdoptedProcess.of(spawn)
        async with asyncio.timeout(10):
            return await process.wait()

    assert asyncio.run(adopt()) == 255
    assert spawn.popen.returncode == 255  # Popen never looks for that pid again
