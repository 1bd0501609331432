"""The README's first lines stay true: CI runs exactly its test command."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    """The commands of the README's first code block, without their comments."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash") + 1
    end = lines.index("```", start)
    return [line.split("#", 1)[0].strip() for line in lines[start:end] if line.strip()]


def test_the_readme_opens_with_a_start_command_and_a_test_command() -> None:
    start, test = _setup_commands()
    assert start.startswith("scripts/setup && ") and "tooloo" in start
    assert test.startswith("scripts/setup && ") and "pytest" in test


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1].strip() == _setup_commands()[1]
