"""Shell completion scripts and their installation: `tooloo --install-completion [SHELL]`, `--show-completion [SHELL]`.

    $ tooloo --install-completion zsh     # in any shell: ~/.zfunc/_tooloo, and the fpath/compinit line in ~/.zshrc
    $ zsh
    % tooloo up bu<Tab>                   # -> tooloo up budget, at the very first Tab of the new shell

    from tooloo_cli.completion import Shell, script
    print(script(Shell.zsh), end="")      # what `tooloo --show-completion zsh` prints

Contract:

- A shell named on the command line always wins: `--install-completion zsh` typed in bash
  installs zsh's files (~/.zfunc/_tooloo, and the fpath/compinit line in ~/.zshrc), never
  bash's. Only without a name is the shell detected (shellingham: the shell this runs in;
  else the basename of $SHELL).
- The shells are bash, zsh and fish. Another name, or an undetectable or other shell when
  none is named, is a usage error: one message on stderr, exit 2, nothing written.
- bash and fish get typer's scripts and typer's installation, unchanged. zsh gets typer's
  completion function in a script that also works when compinit autoloads it from fpath
  (see ZSH_SCRIPT); `_TOOLOO_COMPLETE=source_zsh tooloo` prints the same script.
- Completion requests (`_TOOLOO_COMPLETE=complete_zsh` etc.) stay typer's; `register()`
  makes them work with the app built with `add_completion=False`.

Why tooloo does this itself: typer's `--install-completion` is a plain flag wherever
shellingham is installed (it always is, typer depends on it), so the `zsh` after it is never
read and the running shell is installed instead; and typer's zsh script only defines the
function and calls `compdef` when autoloaded, so the first Tab in every new shell completes
nothing. Typer's options cannot take an optional value, hence `bare_option` for the form
without a name, ahead of typer.

Only the standard library is imported here at module level: cli.py imports this module for
every command, and `tooloo --help` must stay fast. typer (already loaded whenever these
functions run) and shellingham are imported where they are needed.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path

from tooloo_cli.fastpath import COMPLETION_VARIABLE  # click's name for tooloo's completion requests

PROG_NAME = "tooloo"
FUNCTION = "_tooloo_completion"  # the name typer gives the shell function (the committed scripts use it)


class Shell(str, enum.Enum):
    """The shells tooloo completes in (the values typer's options accept, and complete)."""

    bash = "bash"
    zsh = "zsh"
    fish = "fish"


NAMES = "bash, zsh and fish"  # the members of Shell, for messages

# Typer's zsh function, unchanged, in the `#compdef` file idiom. compinit reads the first line and
# registers `_tooloo` (this file, autoloaded from fpath) for `tooloo`; at the first Tab zsh runs the
# file as the body of `_tooloo`, so the body must complete, not only set things up for later (typer's
# ends at `compdef`, which is why its first Tab completes nothing). `compdef` comes first in both
# cases: later Tabs then call the function directly, instead of running this body again (which would
# take the `source` branch and complete nothing on the second Tab, as click's own template does).
# Sourced or eval'd after compinit (`eval "$(tooloo --show-completion zsh)"`), it only registers.
ZSH_SCRIPT = """\
#compdef %(prog_name)s

%(complete_func)s() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" %(autocomplete_var)s=complete_zsh %(prog_name)s)
}

# Autoloaded from fpath as _%(prog_name)s, this runs at the first Tab: register the function for
# the Tabs to come and complete this one too. Sourced or eval'd, it only registers.
compdef %(complete_func)s %(prog_name)s
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  %(complete_func)s "$@"
fi
"""

# What typer's zsh installation adds to ~/.zshrc, to the letter, so that installing over a typer
# installation (or twice) adds nothing.
ZSHRC_LINE = "fpath+=~/.zfunc; autoload -Uz compinit; compinit"
ZSHRC_STYLE = "zstyle ':completion:*' menu select"


class UnknownShell(Exception):
    """No shell tooloo completes in: the message says which and what to type (a usage error, exit 2)."""


def detected() -> Shell:
    """The shell this process runs in (shellingham walks the parent processes), else $SHELL's.

    UnknownShell when neither is one of ours: the user then names it.
    """
    import shellingham  # typer's dependency; only the form without a shell name needs it

    try:
        name = shellingham.detect_shell()[0]
    except shellingham.ShellDetectionFailure:
        name = Path(os.environ.get("SHELL", "")).name
    if not name:
        raise UnknownShell(f"cannot tell which shell this runs in: name it, one of {NAMES}")
    try:
        return Shell(name.lower())
    except ValueError:
        raise UnknownShell(f"this runs in {name}, and tooloo completes in {NAMES} only: name one of them") from None


def script(shell: Shell) -> str:
    """The completion script for `shell`, ending with one newline (as `--show-completion` prints it)."""
    variables = {"complete_func": FUNCTION, "prog_name": PROG_NAME, "autocomplete_var": COMPLETION_VARIABLE}
    if shell is Shell.zsh:
        return ZSH_SCRIPT % variables
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETION_VARIABLE, shell=shell.value) + "\n"


def install(shell: Shell) -> Path:
    """Installs completion for `shell` under the user's home ($HOME) and returns the script's path.

    bash: ~/.bash_completions/tooloo.sh, sourced from ~/.bashrc; fish: ~/.config/fish/completions/tooloo.fish
    (both typer's own installation, unchanged); zsh: ~/.zfunc/_tooloo, with ZSHRC_LINE in ~/.zshrc.
    """
    if shell is Shell.zsh:
        return _install_zsh(Path.home())
    from typer import _completion_shared

    installer = _completion_shared.install_bash if shell is Shell.bash else _completion_shared.install_fish
    return installer(prog_name=PROG_NAME, complete_var=COMPLETION_VARIABLE, shell=shell.value)


def _install_zsh(home: Path) -> Path:
    """As typer's zsh installation (same files, same lines), with ZSH_SCRIPT as the script."""
    zshrc = home / ".zshrc"
    content = zshrc.read_text() if zshrc.is_file() else ""
    if ZSHRC_LINE not in content:
        content += f"\n{ZSHRC_LINE}\n"
    if "zstyle" not in content:  # a user's own completion styles are left alone
        content += f"\n{ZSHRC_STYLE}\n"
    home.mkdir(parents=True, exist_ok=True)
    zshrc.write_text(f"{content.strip()}\n")
    path = home / ".zfunc" / f"_{PROG_NAME}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script(Shell.zsh))
    return path


def _act(action: str, shell: Shell) -> None:
    """Prints the script for `shell` (action "show"), or installs it and says where ("install")."""
    if action == "show":
        sys.stdout.write(script(shell))
        return
    path = install(shell)
    print(f"{shell.value} completion installed in {path}")
    print("It takes effect in shells started from now on.")


OPTIONS = {"--install-completion": "install", "--show-completion": "show"}


def bare_option(argv: list[str]) -> int | None:
    """The exit code of `tooloo --install-completion` or `tooloo --show-completion` alone (the shell
    detected, see `detected`), after doing it; None for any other arguments, which are typer's.

    With a shell name the options are typer's (cli.py declares them; `install_callback` and
    `show_callback` act), so that they show in `--help` and a wrong name is typer's usage error. Typer
    cannot declare an option whose value is optional: hence this, ahead of typer, for the one form it
    would refuse ("requires an argument").
    """
    if len(argv) != 1 or argv[0] not in OPTIONS:
        return None
    try:
        shell = detected()
    except UnknownShell as exc:
        print(f"tooloo: {argv[0]}: {exc}", file=sys.stderr)
        return 2
    _act(OPTIONS[argv[0]], shell)
    return 0


# The callbacks of cli.py's eager `--install-completion SHELL` and `--show-completion SHELL`: they act
# and exit 0. ctx is left unannotated, so that typer passes it by position (click's callback style)
# without this module importing typer for every command.


def install_callback(ctx, value: Shell | None) -> None:  # ctx: typer.Context
    _callback(ctx, "install", value)


def show_callback(ctx, value: Shell | None) -> None:  # ctx: typer.Context
    _callback(ctx, "show", value)


def _callback(ctx, action: str, value: Shell | None) -> None:
    if value is None or ctx.resilient_parsing:  # not given, or a completion request parsing the line
        return
    import typer

    _act(action, Shell(value))
    raise typer.Exit(0)


def register() -> None:
    """Registers typer's completion classes for the completion requests (`_TOOLOO_COMPLETE=complete_bash`
    and the like), with ZSH_SCRIPT as zsh's `source` script.

    Typer registers them only while it adds its own completion options (add_completion=True), which
    cli.py turns off to declare tooloo's. Cheap: typer imports these modules in any case.
    """
    from typer._click.shell_completion import add_completion_class
    from typer._completion_classes import ZshComplete, completion_init

    completion_init()

    class ToolooZshComplete(ZshComplete):
        source_template = ZSH_SCRIPT

    add_completion_class(ToolooZshComplete, Shell.zsh.value)
