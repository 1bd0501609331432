"""The everyday commands without typer: `status`, `up`, `down` and one-shot `observe` as typed most often.

    command = recognise(["--config", "ops/tooloo.toml", "status", "--json"])   # a callable, or None
    command()                                                                     # its exit code

Typer costs 60-85 ms in every command (its import and the building of the whole command
line), which is most of a `tooloo status` and a good part of every `up` and `down`. Yet
those commands are typed with a handful of arguments. This recognises exactly these, and
nothing else:

    [--config PATH | -c PATH | --config=PATH]  status | ps  [--json]
                                               up      [-d | --detach] [NAME ...]
                                               down    [NAME ...]
                                               observe [--json] [--service NAME | -s NAME | --service=NAME ...]

Anything else returns None and goes to typer, which owns the command line: any other
command or option (`--help`, `up -f`, `observe --watch`), a value or name that starts with
`-` or is empty, `--`, a repeated `--config`, shell completion (`_TOOLOO_COMPLETE`). A
name that is not a service is handed to typer too, before anything was done, so that the
usage error is typer's own. What runs is the same body typer's command runs (actions.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NoReturn

COMPLETION_VARIABLE = "_TOOLOO_COMPLETE"  # click's name for `tooloo`'s completion requests


class LeaveToTyper(BaseException):
    """These arguments are typer's to handle (raised before anything was done).

    A BaseException, as SystemExit is: it must pass through `actions.guarded`, which turns
    every Exception into an error line.
    """


def _leave(message: str, option: str) -> NoReturn:
    raise LeaveToTyper(f"{option}: {message}")


def _plain(value: str) -> bool:
    """A value or name the fast path takes as it is (typer would read `-x` as an option)."""
    return bool(value) and not value.startswith("-")


def _split_config(argv: list[str]) -> tuple[Path | None, list[str]] | None:
    """(the --config path, the rest), or None when the global options are not the plain ones."""
    config: Path | None = None
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if config is not None:
            return None  # a second --config (or anything else before the command): typer's
        if option in ("--config", "-c") and rest and _plain(rest[0]):
            config = Path(rest.pop(0))
        elif option.startswith("--config=") and _plain(option[len("--config="):]):
            config = Path(option[len("--config="):])
        else:
            return None
    return config, rest


def recognise(argv: list[str], environ: dict[str, str] | None = None) -> Callable[[], int] | None:
    """The command `argv` asks for, ready to run, or None when it is typer's (see the module's grammar)."""
    import os

    if COMPLETION_VARIABLE in (os.environ if environ is None else environ):
        return None
    split = _split_config(argv)
    if split is None or not split[1]:
        return None
    config, (command, *arguments) = split
    from tooloo_cli import actions

    if command in ("status", "ps"):
        if any(argument != "--json" for argument in arguments):
            return None
        return partial(actions.status, config, as_json=bool(arguments))
    if command in ("up", "down"):
        if command == "up":  # -d is what up does anyway (cli.py)
            arguments = [argument for argument in arguments if argument not in ("-d", "--detach")]
        if not all(_plain(argument) for argument in arguments):
            return None
        run = actions.up if command == "up" else actions.down
        return partial(run, config, actions.distinct(arguments), _leave)
    if command == "observe":
        as_json, services = False, []
        pending = list(arguments)
        while pending:
            argument = pending.pop(0)
            if argument == "--json":
                as_json = True
            elif argument in ("--service", "-s") and pending and _plain(pending[0]):
                services.append(pending.pop(0))
            elif argument.startswith("--service=") and _plain(argument[len("--service="):]):
                services.append(argument[len("--service="):])
            else:
                return None
        return partial(actions.observe, config, actions.distinct(services), _leave, as_json=as_json)
    return None


def run(argv: list[str]) -> bool:
    """Runs `argv` if it is one of the fast path's invocations (and exits); False when it is typer's."""
    command = recognise(argv)
    if command is None:
        return False
    from tooloo_cli.actions import guarded

    try:
        # A LeaveToTyper is raised before the command did anything: typer then takes it from the start.
        guarded(command)
    except LeaveToTyper:
        return False
    except SystemExit as exit_:  # how guarded ends, always
        _exit_now(exit_.code)
    return True  # not reached: guarded exits with the command's code


def _exit_now(code: object) -> None:
    """Exits with `code` once the output is out, without the interpreter's teardown (~10 ms of a
    70 ms `status`: every module and object freed one by one, for a process about to vanish).

    These commands leave nothing that needs it: their files are closed where they were written,
    their threads joined, and what they print is flushed here; logging, if anything imported it,
    is shut down as at a normal exit.
    """
    import os

    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # already reported by guarded (a full disk, a closed pipe)
            pass
    if code is None:
        os._exit(0)
    if isinstance(code, int):
        os._exit(code)
    print(code, file=sys.stderr)  # what sys.exit does with a message
    sys.stderr.flush()
    os._exit(1)
