"""The fast path: `status`, `up`, `down` and one-shot `observe` without typer, and the same as with it.

Each invocation runs as a real process (`python -m tooloo_cli`), beside the same one forced
through typer (`tooloo_cli.cli.run`), against a private configuration on free ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Tooloo

from tooloo_cli.fastpath import COMPLETION_VARIABLE, recognise

THROUGH_TYPER = "import sys; from tooloo_cli.cli import run; sys.argv = ['tooloo', *sys.argv[1:]]; run()"


def _env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")} | {"NO_COLOR": "1",
                                                                                   "COLUMNS": "100"} | extra


def _run(cwd: Path, *args: str, typer: bool = False, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    python = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    command = [*python, "-c", THROUGH_TYPER, *args] if typer else [*python, "-m", "tooloo_cli", *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60)


def _config(tmp_path: Path) -> Path:
    from tooloo_cli.bench.stack import write_ephemeral_config

    return write_ephemeral_config(tmp_path)


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "--json"], ["--config", "x.toml", "status"], ["-c", "x.toml", "down"],
    ["--config=x.toml", "up", "web", "budget"], ["down", "web"], ["observe"], ["observe", "--json", "-s", "web"],
    ["observe", "--service", "web", "--service=budget"], ["up"], ["ps"], ["ps", "--json"], ["up", "-d"],
    ["up", "--detach", "web"],
])
def test_the_everyday_invocations_are_recognised(argv: list[str]) -> None:
    assert recognise(argv, environ={}) is not None


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["status", "--help"], ["up", "-f"], ["up", "--foreground"], ["observe", "--watch"],
    ["observe", "-i", "2"], ["status", "--json", "extra"], ["--config"], ["--config", "-x", "status"],
    ["--config=", "status"], ["-c", "a.toml", "-c", "b.toml", "status"], ["up", "--", "web"], ["up", ""],
    ["down", "-x"], ["observe", "-s"], ["observe", "-s", "-x"], ["logs"], ["restart", "web"], ["bench"],
    ["--version", "status"], ["frobnicate"], ["-V"], ["up", "-d", "-f"], ["down", "-d"],
])
def test_everything_else_is_left_to_typer(argv: list[str]) -> None:
    assert recognise(argv, environ={}) is None


def test_a_completion_request_is_left_to_typer() -> None:
    assert recognise(["status"], environ={COMPLETION_VARIABLE: "complete_bash"}) is None


def test_the_fast_path_imports_neither_typer_nor_rich_nor_httpx(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    for args in (["status"], ["down"], ["observe", "--json"]):
        result = _run(tmp_path, "--config", config, *args, importtime=True)
        assert result.returncode in (0, 1), result.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert not imported & {"typer", "httpx", "httpcore", "anyio", "http.client"}, args
        if args != ["observe", "--json"]:  # plain output: rich has nothing to add
            assert "rich" not in imported, args


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["ps"], ["down"], ["down", "web"]])
def test_with_nothing_running_it_answers_as_typer_does(tmp_path: Path, args: list[str]) -> None:
    config = str(_config(tmp_path))
    fast, typer = _run(tmp_path, "--config", config, *args), _run(tmp_path, "--config", config, *args, typer=True)
    assert (fast.returncode, fast.stdout, fast.stderr) == (typer.returncode, typer.stdout, typer.stderr)
    assert fast.returncode == 0


@pytest.mark.parametrize("args", [["up", "bugdet"], ["up", "-d", "bugdet"], ["down", "nosuch"],
                                  ["observe", "-s", "nosuch"]])
def test_a_name_that_is_not_a_service_gets_typers_own_usage_error(tmp_path: Path, args: list[str]) -> None:
    config = str(_config(tmp_path))
    fast, typer = _run(tmp_path, "--config", config, *args), _run(tmp_path, "--config", config, *args, typer=True)
    assert fast.returncode == typer.returncode == 2
    assert fast.stderr == typer.stderr and "is not a service of this stack" in fast.stderr
    assert "Traceback" not in fast.stderr
    assert not (tmp_path / ".tooloo" / "supervisor.pid").exists()  # and nothing was started


def test_a_broken_configuration_is_one_line_through_either(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("[services.web\n")
    for args in (["up"], ["observe"]):
        fast, typer = _run(tmp_path, *args), _run(tmp_path, *args, typer=True)
        assert fast.returncode == typer.returncode == 2 and fast.stderr == typer.stderr, args
        assert fast.stderr.count("\n") == 1 and "tooloo.toml" in fast.stderr


def test_a_running_stack_reads_the_same_through_either(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "training").returncode == 0
    fast = subprocess.run([sys.executable, "-m", "tooloo_cli", "--config", str(t.config), "observe", "--json",
                           "-s", "training"], capture_output=True, text=True, env=t.env, timeout=60)
    typer = subprocess.run([sys.executable, "-c", THROUGH_TYPER, "--config", str(t.config), "observe", "--json",
                            "-s", "training"], capture_output=True, text=True, env=t.env, timeout=60)
    assert fast.returncode == typer.returncode == 0, fast.stderr + typer.stderr
    assert json.loads(fast.stdout)["services"]["training"]["state"] == "up"
    assert json.loads(typer.stdout)["services"]["training"]["state"] == "up"
    status = [subprocess.run(command, capture_output=True, text=True, env=t.env, timeout=60)
              for command in ([sys.executable, "-m", "tooloo_cli", "--config", str(t.config), "status"],
                              [sys.executable, "-c", THROUGH_TYPER, "--config", str(t.config), "status"])]
    first_lines = [result.stdout.splitlines()[:2] for result in status]
    assert first_lines[0] == first_lines[1] and "running ✓" in status[0].stdout and "running ✓" in status[1].stdout
    down = t("down", "training")
    assert down.returncode == 0 and "stopped training" in down.stdout


def test_up_refuses_detach_with_foreground(tmp_path: Path) -> None:
    result = _run(tmp_path, "--config", str(_config(tmp_path)), "up", "-d", "-f")
    assert result.returncode == 2 and "choose one" in result.stderr
    assert not (tmp_path / ".tooloo" / "supervisor.pid").exists()


def test_up_detach_is_up_itself() -> None:
    assert recognise(["up", "-d", "web", "--detach"], environ={}).args == recognise(["up", "web"], environ={}).args
