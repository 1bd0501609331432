"""Shell completion: the committed scripts match the CLI, candidates come back fast, the shell named is
the one installed (whatever shell runs tooloo), and zsh completes at the first Tab of a new shell (a real
zsh in a pseudo-terminal; skipped without zsh, failed under CI=true)."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import unavailable

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"bash": "tooloo.bash", "zsh": "_tooloo", "fish": "tooloo.fish"}
SERVICES = ["web", "training", "meta", "budget", "coach", "segmentation", "reports", "capabilities"]


def _clean() -> dict[str, str]:
    """This environment without tooloo's settings or a completion request's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("TOOLOO_", "_TOOLOO", "COMP_", "_TYPER"))}


def _tooloo(*args: str, env: dict[str, str], flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *flags, "-m", "tooloo_cli", *args], capture_output=True, text=True,
                          env=_clean() | env, timeout=60)


def _from_shell(shell: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tooloo ARGS` run by `shell` (its parent: `; exit` keeps the shell from exec'ing it), with
    SHELL=/bin/bash whatever the shell, HOME and the working directory `home`."""
    return subprocess.run([shell, "-c", '"$@"; exit $?', shell, sys.executable, "-m", "tooloo_cli", *args],
                          capture_output=True, text=True, env=_clean() | {"HOME": str(home), "SHELL": "/bin/bash"},
                          cwd=home, timeout=60)


def _from_bash(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _from_shell("bash", home, *args)


def _files(home: Path) -> dict[str, str]:
    """Every file under `home`, by its path relative to it: its text."""
    return {str(path.relative_to(home)): path.read_text() for path in sorted(home.rglob("*")) if path.is_file()}


def _committed(shell: str) -> str:
    return (ROOT / "completions" / SCRIPTS[shell]).read_text()


@pytest.mark.parametrize("shell", sorted(SCRIPTS))
def test_the_committed_script_is_what_the_cli_generates(shell: str, tmp_path: Path) -> None:
    # From bash: the shell named wins over the one running tooloo.
    generated = _from_bash(tmp_path, "--show-completion", shell)
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout == _committed(shell), "completions/ drifted: run scripts/update-completions"
    assert _files(tmp_path) == {}


def _bash(words: str) -> list[str]:
    result = _tooloo(env={"_TOOLOO_COMPLETE": "complete_bash", "COMP_WORDS": words,
                          "COMP_CWORD": str(len(words.split(" ")) - 1)})
    return result.stdout.split()


@pytest.mark.parametrize("command", ["up", "down", "start", "stop", "restart", "status", "kill", "logs", "top", "serve"])
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


# -- --install-completion [SHELL] ------------------------------------------------------------------

ZSHRC_LINE = "fpath+=~/.zfunc; autoload -Uz compinit; compinit"


def test_install_completion_zsh_from_bash_installs_zsh_and_nothing_of_bash(tmp_path: Path) -> None:
    (tmp_path / ".zshrc").write_text("export EDITOR=vi\n")  # a user's own .zshrc is kept
    for _ in range(2):  # a second install changes nothing
        installed = _from_bash(tmp_path, "--install-completion", "zsh")
        assert installed.returncode == 0, installed.stderr
        assert f"zsh completion installed in {tmp_path / '.zfunc' / '_tooloo'}" in installed.stdout
        files = _files(tmp_path)
        assert sorted(files) == [".zfunc/_tooloo", ".zshrc"]  # no ~/.bashrc, no ~/.bash_completions
        assert files[".zfunc/_tooloo"] == _committed("zsh")
        assert files[".zshrc"].startswith("export EDITOR=vi\n") and files[".zshrc"].count(ZSHRC_LINE) == 1


@pytest.mark.parametrize(("shell", "expected"), [
    ("bash", {".bash_completions/tooloo.sh", ".bashrc"}),
    ("fish", {".config/fish/completions/tooloo.fish"}),
])
def test_install_completion_installs_the_shell_named(shell: str, expected: set[str], tmp_path: Path) -> None:
    installed = _from_bash(tmp_path, f"--install-completion={shell}")
    assert installed.returncode == 0, installed.stderr
    files = _files(tmp_path)
    assert set(files) == expected
    script = next(text for name, text in files.items() if "tooloo" in name)
    assert script.rstrip("\n") == _committed(shell).rstrip("\n")  # typer's installation, as before
    if shell == "bash":
        assert f"source '{tmp_path / '.bash_completions' / 'tooloo.sh'}'" in files[".bashrc"]


def test_without_a_shell_name_the_running_shell_is_detected(tmp_path: Path) -> None:
    """The bash parent of the tests above is what detection sees: so there, the name did win."""
    shown = _from_bash(tmp_path, "--show-completion")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == _committed("bash")
    installed = _from_bash(tmp_path, "--install-completion")
    assert installed.returncode == 0, installed.stderr
    assert "bash completion installed in" in installed.stdout
    assert set(_files(tmp_path)) == {".bash_completions/tooloo.sh", ".bashrc"}


def test_without_a_shell_name_zsh_is_detected_in_zsh(tmp_path: Path) -> None:
    installed = _from_shell(_zsh(), tmp_path, "--install-completion")  # SHELL=/bin/bash: the process counts
    assert installed.returncode == 0, installed.stderr
    assert "zsh completion installed in" in installed.stdout
    assert sorted(_files(tmp_path)) == [".zfunc/_tooloo", ".zshrc"]


@pytest.mark.parametrize("option", ["--install-completion", "--show-completion"])
def test_without_a_shell_name_another_shell_is_a_usage_error(option: str, tmp_path: Path) -> None:
    result = _from_shell("sh", tmp_path, option)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"tooloo: {option}: this runs in sh, and tooloo completes in bash, zsh and fish only: "
                             "name one of them\n")
    assert _files(tmp_path) == {}


@pytest.mark.parametrize("option", ["--install-completion", "--show-completion"])
def test_an_unknown_shell_is_a_usage_error(option: str, tmp_path: Path) -> None:
    result = _from_bash(tmp_path, option, "tcsh")
    assert result.returncode == 2
    assert result.stdout == ""
    said = " ".join(result.stderr.replace("│", " ").split())  # typer's box, wrapped at the terminal's width
    assert "Invalid value for '--" in said and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in said
    assert _files(tmp_path) == {}


def test_a_completion_request_installs_nothing_and_completes_the_shell_names(tmp_path: Path) -> None:
    def complete(words: str) -> list[str]:
        result = subprocess.run([sys.executable, "-m", "tooloo_cli"], capture_output=True, text=True, cwd=tmp_path,
                                timeout=60, env=_clean() | {"HOME": str(tmp_path), "_TOOLOO_COMPLETE": "complete_bash",
                                                         "COMP_WORDS": words,
                                                         "COMP_CWORD": str(len(words.split(" ")) - 1)})
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert complete("tooloo --install-completion ") == ["bash", "zsh", "fish"]
    assert complete("tooloo --install-completion zsh --show-completion bash up b") == ["budget"]
    assert _files(tmp_path) == {}


# -- zsh, for real: the first Tab of a new shell completes -----------------------------------------


def _zsh() -> str:
    zsh = shutil.which("zsh")
    if zsh is None:
        unavailable("the zsh completion tests need zsh on PATH: run scripts/setup as root (it installs "
                    "Debian's zsh with apt-get), or install it yourself")
    return zsh


class Terminal:
    """An interactive `zsh -f` in a pseudo-terminal, HOME and the working directory `home`, `tooloo` on PATH.

    `setup(line)` runs a command line first; `buffer(keys)` then types `keys`, then a key bound to a widget
    that writes zsh's command line to a file, and returns that line: what the keys (a Tab among them) left.
    """

    def __init__(self, zsh: str, home: Path) -> None:
        self.home = home
        bin_dir = home / "bin"
        bin_dir.mkdir(exist_ok=True)
        tooloo = bin_dir / "tooloo"  # the completion scripts call `tooloo`: this one, whatever is installed
        tooloo.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tooloo_cli \"$@\"\n")
        tooloo.chmod(0o755)
        clean = {k: v for k, v in _clean().items() if k not in ("ZDOTDIR", "FPATH", "EDITOR", "VISUAL")}
        env = clean | {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin", "TERM": "dumb", "SHELL": zsh}
        self.master, slave = pty.openpty()
        self.output = b""
        try:
            self.process = subprocess.Popen([zsh, "-f", "-i"], stdin=slave, stdout=slave, stderr=slave, cwd=home,
                                            env=env, start_new_session=True)
        finally:
            os.close(slave)

    def setup(self, line: str) -> None:
        # The prompt the line sets is `<tooloo-#> ` (`%` if not root): zsh's echo of the line shows `%#`, so
        # that only the prompt drawn after the line ran matches.
        self._type(f"{line}; dump() {{ print -r -- \"$BUFFER\" > ~/buffer }}; zle -N dump; bindkey -e; "
                   f"bindkey '^X^B' dump; PS1='<tooloo-%#> '\r")
        self._read_until(lambda: re.search(rb"<tooloo-[%#]> ", self.output) is not None, "prompt after the setup")

    def buffer(self, keys: str) -> str:
        dumped = self.home / "buffer"
        dumped.unlink(missing_ok=True)
        # ^X^B: dump, after the keys before it (zsh reads them in order). No key the terminal itself
        # acts on (^D, ^C, ^U...) until zle reads it: zsh may not have switched the terminal to raw yet.
        self._type(keys + "\x18\x02")
        self._read_until(lambda: dumped.exists() and dumped.read_text().endswith("\n"), f"the line after {keys!r}")
        line = dumped.read_text()[:-1]
        self._type("\x15")  # ^U: an empty line for the next keys (zle is reading: it just ran dump)
        return line

    def _type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def _read_until(self, done: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Reads the terminal (so that zsh never blocks writing to it) until `done`, for `timeout` s at most."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise AssertionError(f"no {what} within {timeout} s; the terminal showed: {self.output[-2000:]!r}")
            if select.select([self.master], [], [], min(left, 0.1))[0]:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # EIO: zsh is gone (the poll above says so next)
                    pass

    def end(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        finally:
            os.close(self.master)


@pytest.fixture
def zsh_terminal(tmp_path: Path) -> Iterator[Callable[[str], Terminal]]:
    zsh = _zsh()
    started: list[Terminal] = []

    def start(setup: str) -> Terminal:
        started.append(Terminal(zsh, tmp_path))  # ended below whatever happens next
        started[-1].setup(setup)
        return started[-1]

    yield start
    for terminal in started:
        terminal.end()


# Typed one after the other in one shell: the first Tab of the shell, then later ones (a script that
# completed only when first loaded, or only from the third Tab, fails one of them).
TABS = [("tooloo stat\t", "tooloo status "), ("tooloo up bu\t", "tooloo up budget "),
        ("tooloo logs coa\t", "tooloo logs coach "),
        ("tooloo --install-completion z\t", "tooloo --install-completion zsh ")]


def test_zsh_completes_at_the_first_tab_once_installed(tmp_path: Path, zsh_terminal) -> None:
    """`tooloo --install-completion zsh` typed in bash, then a new zsh reading the ~/.zshrc it wrote:
    _tooloo is autoloaded from ~/.zfunc at the first Tab, which must complete too."""
    installed = _from_bash(tmp_path, "--install-completion", "zsh")
    assert installed.returncode == 0, installed.stderr
    terminal = zsh_terminal("source ~/.zshrc")
    for keys, line in TABS:
        assert terminal.buffer(keys) == line, f"{keys!r} in a new zsh"


def test_zsh_completes_at_the_first_tab_when_the_script_is_evaluated(zsh_terminal) -> None:
    """The other way to use the script: eval'd after compinit (it then only registers the function)."""
    terminal = zsh_terminal('autoload -Uz compinit; compinit; eval "$(tooloo --show-completion zsh)"')
    for keys, line in TABS:
        assert terminal.buffer(keys) == line, f"{keys!r} in a new zsh"
