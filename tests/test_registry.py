"""`tooloo ls`: the stacks running on this machine, from their supervisors' entries in the registry."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import Tooloo
from test_cli import clean_env

from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.supervisor.registry import registry_dir, sign_in, sign_out, stacks


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


def test_an_entry_whose_supervisor_is_gone_is_left_out_and_removed(tmp_path: Path) -> None:
    environ = {"XDG_RUNTIME_DIR": str(tmp_path)}
    paths = StatePaths(tmp_path / "stack" / ".tooloo")
    paths.root.mkdir(parents=True)
    paths.pid_file.write_text(f"{os.getpid()}\n")  # this process, as its supervisor
    entry = sign_in(paths, None, environ)
    assert entry is not None and oct(entry.stat().st_mode & 0o777) == "0o600"
    assert [record["pid"] for record in stacks(environ)] == [os.getpid()]
    paths.pid_file.write_text("1\n")  # another supervisor since (or a pid reused): not this entry's
    assert stacks(environ) == [] and not entry.exists()
    entry = sign_in(paths, None, environ)
    sign_out(entry)
    assert entry is not None and not entry.exists()


def test_the_registry_is_the_user_s_runtime_directory_else_their_state_directory(tmp_path: Path) -> None:
    assert registry_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "tooloo" / "stacks"
    assert registry_dir({"XDG_RUNTIME_DIR": str(tmp_path / "none"), "HOME": str(tmp_path)}) \
        == tmp_path / ".local" / "state" / "tooloo" / "stacks"
    assert registry_dir({"XDG_STATE_HOME": str(tmp_path / "state")}) == tmp_path / "state" / "tooloo" / "stacks"
