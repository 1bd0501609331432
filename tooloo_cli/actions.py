"""What the everyday stack commands do, and how any command's failure reaches the user; free of typer.

    code = guarded(lambda: status(None, as_json=False))    # runs, then exits with the code
    loaded = load(Path("ops/tooloo.toml"))

Two front ends share these bodies: typer's commands in cli.py (the whole command line:
help, completion, every option) and fastpath.py (the common invocations of `status`,
`up`, `down` and `observe`, without typer's 60-85 ms). A body takes what its command
line said and returns the exit code; a service name it cannot accept is handed to
`invalid(message, option)`, which raises: typer's usage error in cli.py, a hand-over to
typer in the fast path (so that typer, which owns the command line, says what is wrong).

Exit codes: 0 ok, 1 failure, 2 usage or configuration error (see `guarded`).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from tooloo_cli.errors import ToolooError

if TYPE_CHECKING:
    from rich.console import Console

    from tooloo_cli.config import LoadedConfig
    from tooloo_cli.supervisor.printer import PlainConsole

Invalid = Callable[[str, str], NoReturn]  # (message, option) → raises


# -- the configuration and the names -----------------------------------------------------


def load(config: Path | None) -> LoadedConfig:
    from tooloo_cli.config import load_config

    return load_config(config)


def load_to_reach_the_stack(config: Path | None) -> LoadedConfig:
    """The configuration for status, logs and down: a broken tooloo.toml must not lock anyone out."""
    from tooloo_cli.config import load_config_leniently

    loaded, problem = load_config_leniently(config)
    if problem is not None:
        print(f"tooloo: warning: {problem}\ntooloo: warning: using the built-in defaults and the state directory "
              f"{loaded.state_path()} to reach the running stack", file=sys.stderr)
    return loaded


def distinct(values: list[str] | None) -> list[str]:
    """The names as given, each once, in their order."""
    return list(dict.fromkeys(values or []))


def check_names(loaded: LoadedConfig, names: list[str], invalid: Invalid, option: str = "NAMES") -> list[str]:
    """`names` when each is a service or a replica of this stack; `invalid` (with a suggestion) if not."""
    from tooloo_cli.stack import stack_of

    stack = stack_of(loaded)
    known = stack.names()
    for name in names:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the services are {', '.join(stack.specs)}"
            invalid(f"{name!r} is not a service of this stack{hint}", option)
    return names


def checked_if_possible(loaded: LoadedConfig, names: list[str], invalid: Invalid) -> list[str]:
    """`names` checked against the stack, unless the configuration is too broken to say: a lenient
    load knows only the built-in services, and the running stack may have others (the supervisor,
    which does know them, answers for an unknown one)."""
    from tooloo_cli.config import ConfigError

    if loaded.lenient:
        return names
    try:
        return check_names(loaded, names, invalid)
    except ConfigError:
        return names


def console() -> Console | PlainConsole:
    """Where the stack commands write: rich's Console on a terminal, plain text otherwise (printer.py)."""
    from tooloo_cli.supervisor.printer import console_for

    return console_for(sys.stdout)


def rich_console() -> Console:
    """For what only rich can draw (observe's tables)."""
    from rich.console import Console

    return Console()


# -- the everyday commands --------------------------------------------------------------


def up(config: Path | None, names: list[str], invalid: Invalid, foreground: bool = False, wait: bool = True,
       timeout: float | None = None) -> int:
    # The supervisor first, as a standby: it imports while this reads the configuration and
    # checks the ports, and is ended if nothing is to be launched (supervisor/standby.py).
    from tooloo_cli.supervisor.standby import Standby

    standby = None if foreground else Standby.start(config)
    try:
        from tooloo_cli.supervisor.commands import up as start

        loaded = load(config)
        return start(loaded, check_names(loaded, names, invalid), console(), foreground, standby, wait, timeout)
    finally:
        if standby is not None:
            standby.cancel()  # unless it was told what to run (a bad name, say, and it was not)


def down(config: Path | None, names: list[str], invalid: Invalid) -> int:
    from tooloo_cli.supervisor.commands import down as stop

    loaded = load_to_reach_the_stack(config)
    return stop(loaded, checked_if_possible(loaded, names, invalid), console())


def status(config: Path | None, as_json: bool = False, names: list[str] | None = None,
           invalid: Invalid | None = None) -> int:
    """`tooloo status [NAMES]`: the table, or with NAMES (checked by `invalid`) each of them in detail."""
    loaded = load_to_reach_the_stack(config)
    if names and invalid is not None:
        names = checked_if_possible(loaded, names, invalid)
    if as_json:
        import json

        from tooloo_cli.supervisor.daemon import status_document

        print(json.dumps(status_document(loaded, names), indent=2))
        return 0
    from tooloo_cli.supervisor.commands import status as show

    return show(loaded, console(), names)


def observe(config: Path | None, services: list[str], invalid: Invalid, watch: bool = False,
            interval: float | None = None, as_json: bool = False) -> int:
    from tooloo_cli.observe import observe as run_observe

    loaded = load(config)
    return run_observe(loaded, check_names(loaded, services, invalid, "--service"), rich_console(), watch=watch,
                       interval=interval, as_json=as_json)


# -- failures, as one line and an exit code ----------------------------------------------


def tolerant_streams() -> None:
    """Output that cannot encode a character (PYTHONIOENCODING=ascii, a C locale) replaces it."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


_OUTPUT_ERRORS = (errno.ENOSPC, errno.EIO, errno.EPIPE, errno.EBADF)


def output_failed(exc: OSError | None = None) -> bool:
    """Whether standard output can no longer be written (a full disk, a closed pipe).

    `exc` is the error a command raised, if any: one without a file name, of the kinds a
    write to a full or vanished output gives, was raised writing the output. If so,
    stdout is pointed at /dev/null, so the interpreter's own flush at exit stays silent.
    """
    failed = exc is not None and exc.filename is None and exc.errno in _OUTPUT_ERRORS
    try:
        sys.stdout.flush()
    except OSError:
        failed = True
    if failed:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (lives until exit)
    return failed


def guarded(command: Callable[[], int | None]) -> NoReturn:
    """Runs `command` and exits with its code, turning every failure into one line and its exit code,
    never a traceback (a SystemExit it raises, as typer does, is its code)."""
    tolerant_streams()
    try:
        code = command()
    except SystemExit as exit_:
        if output_failed():
            print("tooloo: cannot write the output", file=sys.stderr)
            sys.exit(1)
        raise exit_
    except ToolooError as exc:
        print(f"tooloo: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        output_failed()
        sys.exit(1)  # the reader went away (`tooloo logs | head`): nothing to say, nobody to say it to
    except OSError as exc:
        if output_failed(exc):
            print(f"tooloo: cannot write the output: {exc.strerror}", file=sys.stderr)
        else:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"tooloo: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("TOOLOO_DEBUG"):
            raise
        print(f"tooloo: internal error: {type(exc).__name__}: {exc} (set TOOLOO_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)
    if output_failed():
        print("tooloo: cannot write the output", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
