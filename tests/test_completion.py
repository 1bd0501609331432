"""Shell completion: the committed scripts match the CLI, and candidates come back fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"bash": "tooloo.bash", "zsh": "_tooloo", "fish": "tooloo.fish"}
SERVICES = ["web", "training", "meta", "budget", "coach", "segmentation", "reports", "capabilities"]


def _tooloo(*args: str, env: dict[str, str], flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLOO_", "_TOOLOO", "COMP_", "_TYPER"))}
    return subprocess.run([sys.executable, *flags, "-m", "tooloo_cli", *args], capture_output=True, text=True,
                          env=clean | env, timeout=60)


@pytest.mark.parametrize("shell", sorted(SCRIPTS))
def test_the_committed_script_is_what_the_cli_generates(shell: str) -> None:
    generated = _tooloo("--show-completion", shell, env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert generated.returncode == 0, generated.stderr
    committed = (ROOT / "completions" / SCRIPTS[shell]).read_text()
    assert generated.stdout == committed, "completions/ drifted: run scripts/update-completions"


def _bash(words: str) -> list[str]:
    result = _tooloo(env={"_TOOLOO_COMPLETE": "complete_bash", "COMP_WORDS": words,
                          "COMP_CWORD": str(len(words.split(" ")) - 1)})
    return result.stdout.split()


@pytest.mark.parametrize("command", ["up", "down", "restart", "logs", "serve"])
def test_service_names_complete_for_every_command_that_takes_one(command: str) -> None:
    assert _bash(f"tooloo {command} ") == SERVICES
    assert _bash(f"tooloo {command} c") == ["coach", "capabilities"]


def test_service_names_complete_for_observe_service_and_suites_for_bench() -> None:
    assert _bash("tooloo observe --service s") == ["segmentation"]
    assert _bash("tooloo bench ") == ["modules", "http", "startup"]


def test_zsh_and_fish_get_the_same_candidates() -> None:
    zsh = _tooloo(env={"_TOOLOO_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "tooloo up b"})
    fish = _tooloo(env={"_TOOLOO_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                        "_TYPER_COMPLETE_ARGS": "tooloo up b"})
    assert '"budget"' in zsh.stdout and fish.stdout.split() == ["budget"]


def test_completion_imports_nothing_heavy() -> None:
    """The completion path loads the CLI and the stack's names (its configuration), nothing of the services,
    httpx or psutil."""
    result = _tooloo(env={"_TOOLOO_COMPLETE": "complete_bash", "COMP_WORDS": "tooloo up b", "COMP_CWORD": "2"},
                     flags=("-X", "importtime"))
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = {"httpx", "starlette", "uvicorn", "psutil", "tooloo_cli.services", "tooloo_cli.resilience", "sqlite3"}
    assert imported & heavy == set()
