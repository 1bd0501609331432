"""The `tooloo` command line: parses arguments and delegates to the package's modules.

Heavy imports (rich, the resilience modules, pytest) happen inside the commands, so that
`tooloo --help` and shell completion stay fast. Exit codes: 0 ok, 1 failure, 2 usage or
configuration error.

The bodies of `up`, `down`, `status` and `observe` live in actions.py, shared with the
fast path (fastpath.py) that runs their common invocations without typer; so does the
handling of failures (`actions.guarded`). This module stays the one definition of the
command line: its options, help and errors.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from tooloo_cli import __version__, actions, completion
from tooloo_cli.errors import ToolooError

app = typer.Typer(
    name="tooloo",
    help="Run, observe and benchmark the TooLoo stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,  # tooloo declares its own --install-completion and --show-completion (completion.py)
)
completion.register()  # what add_completion=False leaves out: typer's answers to completion requests
config_app = typer.Typer(help="Show, create and check tooloo.toml.", no_args_is_help=True)
app.add_typer(config_app, name="config", rich_help_panel="Configuration")


MAX_LOG_LINES = 1_000_000


class Suite(str, enum.Enum):
    modules = "modules"
    http = "http"
    startup = "startup"


def _version(value: bool) -> None:
    if value:
        print(f"tooloo {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="Path of tooloo.toml (default: $TOOLOO_CONFIG, else the nearest tooloo.toml)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    # Without a shell name, these are completion.bare_option's (run() below): the shell is detected.
    install_completion: Annotated[Optional[completion.Shell], typer.Option(
        "--install-completion", metavar="[bash|zsh|fish]", callback=completion.install_callback, is_eager=True,
        expose_value=False, show_default=False,
        help="Install completion for the shell named, else for the shell this runs in.")] = None,
    show_completion: Annotated[Optional[completion.Shell], typer.Option(
        "--show-completion", metavar="[bash|zsh|fish]", callback=completion.show_callback, is_eager=True,
        expose_value=False, show_default=False,
        help="Print the completion script for the shell named, else for the shell this runs in (to copy it "
             "or customize the installation).")] = None,
) -> None:
    """Run, observe and benchmark the TooLoo stack."""
    ctx.obj = config


def _load(ctx: typer.Context):  # -> LoadedConfig, imported lazily
    return actions.load(ctx.obj)


def _invalid(message: str, option: str) -> NoReturn:
    """A usage error (exit 2) naming the option: how typer's commands refuse a name (see actions.py)."""
    raise typer.BadParameter(message, param_hint=option)


def _checked_if_possible(loaded, names: list[str]) -> list[str]:  # loaded: LoadedConfig
    return actions.checked_if_possible(loaded, names, _invalid)


def _load_to_reach_the_stack(ctx: typer.Context):  # -> LoadedConfig
    return actions.load_to_reach_the_stack(ctx.obj)


# -- config ---------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of TOML.")] = False,
) -> None:
    """Print the effective configuration (file, then TOOLOO_* overrides).

    Example: [bold]TOOLOO_SERVICES__WEB__PORT=8000 tooloo config show --json[/]
    """
    from tooloo_cli.config import config_to_json, config_to_toml
    from tooloo_cli.config.loader import shown

    loaded = _load(ctx)
    config = shown(loaded.config)  # a password in redis_url is never printed
    if as_json:
        print(config_to_json(config))
        return
    origin = str(loaded.source) if loaded.source else "built-in defaults (no tooloo.toml found)"
    print(f"# source: {origin}")
    if loaded.overrides:
        print(f"# overridden by: {', '.join(loaded.overrides)}")
    print(config_to_toml(config), end="")


@config_app.command("init")
def config_init(
    path: Annotated[Path, typer.Argument(help="Where to write.")] = Path("tooloo.toml"),
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing file.")] = False,
) -> None:
    """Write the default configuration.

    Example: [bold]tooloo config init ops/tooloo.toml[/]
    """
    from tooloo_cli.config import Config, config_to_toml

    if path.exists() and not force:
        print(f"tooloo: {path} already exists; use --force to overwrite it", file=sys.stderr)
        raise typer.Exit(1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_to_toml(Config.defaults()), encoding="utf-8")
    except OSError as exc:
        raise ToolooError(f"cannot write {path}: {exc.strerror}") from None
    print(f"wrote {path}")


@config_app.command("validate")
def config_validate(ctx: typer.Context) -> None:
    """Check the configuration; exit 2 naming the file, line and key of the first problem.

    Example: [bold]tooloo --config ops/tooloo.toml config validate[/]
    """
    loaded = _load(ctx)
    origin = loaded.source or "built-in defaults"
    extra = f" with {', '.join(loaded.overrides)}" if loaded.overrides else ""
    from tooloo_cli.stack import stack_of

    stack = stack_of(loaded)  # what the file alone cannot say: replicas, env_file
    for spec in stack.specs.values():
        spec.environment()
    replicas = len(stack.replicas())
    more = f", {replicas} processes" if replicas != len(stack.specs) else ""
    print(f"{origin}{extra}: valid ({len(stack.specs)} services{more})")


# -- export -----------------------------------------------------------------------------


def _complete_format(incomplete: str) -> list[str]:
    """The registered export formats (tooloo_cli/export/), for shell completion."""
    try:
        from tooloo_cli.export import formats

        known = formats()
    except Exception:  # completion must never fail at the prompt
        known = []
    return [name for name in known if name.startswith(incomplete)]


@app.command("export", rich_help_panel="Configuration")
def export(
    ctx: typer.Context,
    format_name: Annotated[str, typer.Argument(metavar="FORMAT", show_default=False,
                                               help="What to write: k8s, compose, systemd or prometheus (completion lists every installed "
                                                    "format).", autocompletion=_complete_format)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write here (a file, or a directory to write "
                                                                    "into) instead of to stdout.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite files that exist.")] = False,
    image: Annotated[Optional[str], typer.Option("--image", help="k8s, compose: the container image the services "
                                                                 "run in (built from the exported Dockerfile).",
                                                 show_default=False)] = None,
    namespace: Annotated[Optional[str], typer.Option("--namespace", help="k8s: the namespace of every object.",
                                                     show_default=False)] = None,
) -> None:
    """Write the stack as tooloo.toml declares it, replicas included, for another tool to run.

    [bold]k8s[/]: Deployments, Services, a ConfigMap, claims and a Secret reference per service.
    [bold]compose[/]: a compose.yaml, the tooloo.toml of its containers and the Dockerfile of their image.
    [bold]systemd[/]: a unit per service and a target grouping them.
    [bold]prometheus[/]: a whole prometheus.yml; a job per tooloo service, a target per replica.
    Prints to stdout without [bold]--out[/]; refuses to overwrite a file without [bold]--force[/].

    Example: [bold]tooloo export k8s --out deploy/ && kubectl apply -f deploy/[/]
    """
    from tooloo_cli.export import Declaration, OutputRefused, UnknownFormat, exporter, write

    # Only what was given: a format refuses an option it does not take (exit 2, naming it).
    options = {name: value for name, value in (("image", image), ("namespace", namespace)) if value is not None}
    try:
        chosen = exporter(format_name, **options)
    except UnknownFormat as exc:
        raise typer.BadParameter(str(exc), param_hint="FORMAT") from None
    files = chosen.render(Declaration.of(_load(ctx)))
    if out is None:
        sys.stdout.write(chosen.to_stdout(files))
        return
    try:
        written = write(files, out, force=force)
    except OutputRefused as exc:
        raise typer.BadParameter(str(exc), param_hint="--out") from None
    for path in written:
        print(f"wrote {path}")


# -- service names ----------------------------------------------------------------------


def _names(values: Optional[list[str]]) -> list[str]:
    return actions.distinct(values)


def _check_names(loaded, names: list[str], option: str = "NAMES") -> list[str]:  # loaded: LoadedConfig
    """`names` when each is a service or a replica of this stack; a usage error (exit 2) with a suggestion if not."""
    return actions.check_names(loaded, names, _invalid, option)


def _complete_service(incomplete: str) -> list[str]:
    """Service and replica names for shell completion: the nearest tooloo.toml's, else tooloo's own."""
    try:
        from tooloo_cli.config import load_config
        from tooloo_cli.stack import stack_of

        known = stack_of(load_config()).names()
    except Exception:  # completion must never fail at the prompt
        from tooloo_cli.config.schema import BUILTIN_SERVICES

        known = list(BUILTIN_SERVICES)
    return [name for name in known if name.startswith(incomplete)]


def _builtin_name(value: str) -> str:
    from tooloo_cli.config.schema import BUILTIN_SERVICES

    if value not in BUILTIN_SERVICES:
        raise typer.BadParameter(f"{value!r} is not one of tooloo's services; choose from {', '.join(BUILTIN_SERVICES)}")
    return value


def _seconds(value: float | None) -> float | None:
    """`value` when it is a positive, finite number of seconds."""
    if value is not None and not 0 < value < float("inf"):  # false for NaN too
        raise typer.BadParameter(f"must be a positive number of seconds, got {value}")
    return value


def _observe_interval(value: float | None) -> float | None:
    """`value` when observe.interval could be set to it (its bounds are declared once, in the schema).

    Not click's min/max: a range check that compares lets NaN through, and then --watch never wakes.
    """
    if value is None:
        return value
    from dataclasses import fields

    from tooloo_cli.config.schema import ObserveSettings

    limits = next(field.metadata for field in fields(ObserveSettings) if field.name == "interval")
    if not limits["ge"] <= value <= limits["le"]:  # false for NaN too
        raise typer.BadParameter(f"must be a number of seconds from {limits['ge']:g} to {limits['le']:g}, "
                                 f"got {value}")
    return value


ServiceNames = Annotated[Optional[list[str]], typer.Argument(help="Services or replicas (default: all).",
                                                             show_default=False, autocompletion=_complete_service)]


# -- the stack ---------------------------------------------------------------------------


def _console():  # -> rich's Console on a terminal, else a PlainConsole (supervisor/printer.py)
    return actions.console()


@app.command("up", rich_help_panel="The stack")
def up(
    ctx: typer.Context,
    names: ServiceNames = None,
    foreground: Annotated[bool, typer.Option("--foreground", "-f", help="Stay attached: coloured, prefixed logs; "
                                                                      "Ctrl-C stops everything.")] = False,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Leave the stack to its supervisor once healthy: "
                                                              "what up does unless --foreground (docker compose's "
                                                              "habit).")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until each is healthy and ready, or "
                                                               "return once the supervisor starts them.")] = True,
    timeout: Annotated[Optional[float], typer.Option("--timeout", "-t", callback=_seconds, show_default=False,
                                                     help="Give up this many seconds after the command "
                                                          "began (default: what the services' startup "
                                                          "timeouts allow); exit 1 then.")
                       ] = None,
) -> None:
    """Start the stack (or the named services) under a supervisor and wait until each is healthy.

    Starts only what is missing when the stack already runs; refuses when a port is taken,
    naming the process that holds it. Exit 0 when all are healthy, 1 when one failed.

    Example: [bold]tooloo up[/]   or   [bold]tooloo up web budget --foreground[/]   or   [bold]tooloo up --timeout 5[/]
    """
    if detach and foreground:
        _invalid("--detach and --foreground ask for opposite things: choose one", "--detach")
    if foreground and (not wait or timeout is not None):
        _invalid("--foreground stays until Ctrl-C: --no-wait and --timeout are for a detached up", "--foreground")
    if not wait and timeout is not None:
        _invalid("--no-wait does not wait: --timeout would do nothing", "--timeout")
    raise typer.Exit(actions.up(ctx.obj, _names(names), _invalid, foreground, wait, timeout))


@app.command("down", rich_help_panel="The stack")
def down(ctx: typer.Context, names: ServiceNames = None) -> None:
    """Stop the stack (or the named services): SIGTERM, a grace period, then SIGKILL; ports freed.

    Running it when nothing runs is fine (exit 0). The supervisor exits once nothing is left.

    Example: [bold]tooloo down[/]   or   [bold]tooloo down budget[/]
    """
    raise typer.Exit(actions.down(ctx.obj, _names(names), _invalid))


@app.command("start", rich_help_panel="The stack")
def start(ctx: typer.Context, names: Annotated[list[str], typer.Argument(
        help="Services or replicas to start.", autocompletion=_complete_service)]) -> None:
    """Start stopped services under the running supervisor and wait until they are healthy.

    As [bold]tooloo up NAME[/], but never starts a supervisor: it is for what [bold]tooloo stop[/] stopped.

    Example: [bold]tooloo start budget[/]
    """
    from tooloo_cli.supervisor.commands import up as begin

    loaded = _load(ctx)
    raise typer.Exit(begin(loaded, _check_names(loaded, _names(names)), _console(), launch_supervisor=False))


@app.command("stop", rich_help_panel="The stack")
def stop(ctx: typer.Context, names: Annotated[list[str], typer.Argument(
        help="Services or replicas to stop.", autocompletion=_complete_service)]) -> None:
    """Stop services, leaving the supervisor running (even with nothing left) for [bold]tooloo start[/].

    [bold]tooloo down[/] is the one that ends the supervisor.

    Example: [bold]tooloo stop budget reports[/]
    """
    from tooloo_cli.supervisor.commands import down as halt

    loaded = _load_to_reach_the_stack(ctx)
    raise typer.Exit(halt(loaded, _checked_if_possible(loaded, _names(names)), _console(), keep_supervisor=True))


@app.command("status", rich_help_panel="The stack")
def status(
    ctx: typer.Context,
    names: Annotated[Optional[list[str]], typer.Argument(
        help="Services or replicas to show in detail: command, pids, probes, past exits, log.",
        show_default=False, autocompletion=_complete_service)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show each service's state, health, pid, port, uptime, restarts, exit, CPU and memory, or the named ones in detail.

    [bold]tooloo ps[/] is the same command, for docker compose's and pm2's habit.

    Example: [bold]tooloo status --json[/]   or   [bold]tooloo status budget[/]
    """
    raise typer.Exit(actions.status(ctx.obj, as_json, _names(names), _invalid))


app.command("ps", rich_help_panel="The stack", hidden=True)(status)


@app.command("restart", rich_help_panel="The stack")
def restart(ctx: typer.Context, names: Annotated[list[str], typer.Argument(
        help="Services or replicas to restart.", autocompletion=_complete_service)]) -> None:
    """Restart services (stop, then start) and wait until they are healthy.

    Example: [bold]tooloo restart budget reports[/]
    """
    from tooloo_cli.supervisor.commands import restart as again

    loaded = _load(ctx)
    raise typer.Exit(again(loaded, _check_names(loaded, _names(names)), _console()))


def _signal(value: str) -> int:
    """A signal by name (`HUP`, `SIGHUP`, `sighup`) or number, as kill(1) takes it."""
    import signal

    name = value.strip().upper()
    if name.isdigit() and int(name) in signal.valid_signals() and int(name) != 0:
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        _invalid(f"{value!r} is not a signal; e.g. SIGTERM, HUP, USR1 or 9 (`kill -l` lists them)", "--signal")


@app.command("ls", rich_help_panel="The stack")
def ls(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """List the stacks running on this machine (yours): state directory, services running, supervisor, config.

    Example: [bold]tooloo ls[/]
    """
    from tooloo_cli.supervisor.commands import ls as list_stacks

    raise typer.Exit(list_stacks(_console(), as_json))


@app.command("kill", rich_help_panel="The stack")
def kill(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Services or replicas to signal.",
                                               autocompletion=_complete_service)],
    signum: Annotated[str, typer.Option("--signal", "-s", metavar="SIGNAL",
                                        help="The signal, by name or number.")] = "SIGKILL",
) -> None:
    """Send a signal to services' processes (their whole process group); their restart policy then applies.

    An exit by that signal is an exit as any other: [bold]tooloo stop[/] keeps a service stopped.

    Example: [bold]tooloo kill -s HUP budget[/]
    """
    from tooloo_cli.supervisor.commands import kill as send

    number = _signal(signum)
    loaded = _load(ctx)
    raise typer.Exit(send(loaded, _check_names(loaded, _names(names)), number, _console()))


@app.command("logs", rich_help_panel="The stack")
def logs(
    ctx: typer.Context,
    names: Annotated[Optional[list[str]], typer.Argument(help="Services or replicas (default: all), prefixed.",
                                                        show_default=False, autocompletion=_complete_service)] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    lines: Annotated[Optional[int], typer.Option("--lines", "-n", min=0, max=MAX_LOG_LINES, show_default=False,
                                                 help="How many past lines of each to show (20; with --since "
                                                      "or --until, every one).")] = None,
    since: Annotated[Optional[str], typer.Option(
        help="From this time on: a span back from now (90s, 10m, 1h30m, 2d), a date and time "
             "(2026-12-03T13:00, local unless it ends in Z or an offset) or a time of today (13:00).",
        show_default=False)] = None,
    until: Annotated[Optional[str], typer.Option(help="Up to this time (as --since).", show_default=False)] = None,
    grep: Annotated[Optional[str], typer.Option("--grep", "-g", metavar="PATTERN", show_default=False,
                                                help="Only lines matching this regular expression.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='One JSON object a line: {"ts", "service", "replica", '
                                                         '"stream", "line"}, ts in UTC.')] = False,
) -> None:
    """Show service logs interleaved by time, with the supervisor's events (started, exited, restarting, stopped).

    They are read from .tooloo/logs, where each is rotated at 10 MiB, 3 backups kept, by default.

    Example: [bold]tooloo logs web budget -f[/]   or   [bold]tooloo logs --since 10m --grep 'exited|restarting'[/]
    """
    import re
    import time

    from tooloo_cli.supervisor.commands import logs as show
    from tooloo_cli.supervisor.logs import moment

    now = time.time()
    moments = {}
    for option, value in (("--since", since), ("--until", until)):
        try:
            moments[option] = None if value is None else moment(value, now)
        except ValueError as exc:
            _invalid(str(exc), option)
    if None not in moments.values() and moments["--since"] > moments["--until"]:
        _invalid(f"{until!r} is before {since!r}: nothing could be shown", "--until")
    if follow and until is not None:
        _invalid("cannot follow up to a time; leave out --follow or --until", "--until")
    try:
        pattern = None if grep is None else re.compile(grep)
    except re.error as exc:
        _invalid(f"{grep!r} is not a regular expression: {exc}", "--grep")
    if lines is None and since is None and until is None:
        lines = 20
    loaded = _load_to_reach_the_stack(ctx)
    raise typer.Exit(show(loaded, _checked_if_possible(loaded, _names(names)), _console(), lines, follow,
                          moments["--since"], moments["--until"], pattern, as_json))


@app.command("observe", rich_help_panel="The stack")
def observe(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="A live dashboard, redrawn every interval "
                                                            "until q (or Ctrl-C).")] = False,
    interval: Annotated[Optional[float], typer.Option("--interval", "-i", callback=_observe_interval,
                                                      help="Seconds between polls (default: observe.interval, 1).")
                        ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the merged document for scripts.")] = False,
    services: Annotated[Optional[list[str]], typer.Option("--service", "-s", autocompletion=_complete_service,
                                                          help="Only this service (repeatable).")] = None,
) -> None:
    """Poll every service's observability endpoint and show traces, limits, caches and breakers.

    One shot by default: exit 1 when a polled service is down. [bold]--watch[/] keeps a live
    dashboard fitted to the terminal: a summary of every service (req/s now, p99, errors, what
    is open or failing), then the details, paged with [bold]tab[/] or [bold]1[/]-[bold]6[/]; [bold]q[/] quits.

    Example: [bold]tooloo observe --watch[/]   or   [bold]tooloo observe -s budget --json[/]
    """
    raise typer.Exit(actions.observe(ctx.obj, _names(services), _invalid, watch=watch, interval=interval,
                                     as_json=as_json))


@app.command("top", rich_help_panel="The stack")
def top(
    ctx: typer.Context,
    names: ServiceNames = None,
    interval: Annotated[Optional[float], typer.Option("--interval", "-i", callback=_observe_interval,
                                                      help="Seconds between refreshes (default: observe.interval, "
                                                           "1).")] = None,
) -> None:
    """Show CPU, memory, restarts and req/s of every service, sorted, refreshed in place until q.

    Busiest first; [bold]c[/] cpu, [bold]m[/] memory, [bold]r[/] restarts, [bold]t[/] req/s,
    [bold]n[/] name change the order. The figures are those of [bold]tooloo status[/]; req/s is
    over the last few seconds.

    Example: [bold]tooloo top[/]   or   [bold]tooloo top web budget --interval 2[/]
    """
    from tooloo_cli.observe.top import top as run_top

    loaded = _load_to_reach_the_stack(ctx)
    raise typer.Exit(run_top(loaded, _checked_if_possible(loaded, _names(names)), actions.rich_console(),
                             interval=interval))


@app.command("serve", rich_help_panel="The stack")
def serve(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The service: web, training, meta, budget, coach, segmentation, "
                                             "reports or capabilities.", callback=_builtin_name,
                                        autocompletion=_complete_service)],
    port: Annotated[Optional[int], typer.Option("--port", "-p", min=1, max=65535,
                                                help="Listen here instead of the configured port.")] = None,
) -> None:
    """Run one service in the foreground (what the supervisor launches); Ctrl-C or SIGTERM stops it.

    Example: [bold]tooloo serve budget --port 3103[/]
    """
    from tooloo_cli.services.serve import serve as run_service

    raise typer.Exit(run_service(name, _load(ctx), port))


# -- test and bench -------------------------------------------------------------------


@app.command("test", rich_help_panel="Quality")
def test(
    ctx: typer.Context,
    keyword: Annotated[Optional[str], typer.Option("-k", help="Only checks matching this pytest expression.")] = None,
    exitfirst: Annotated[bool, typer.Option("--exitfirst", "-x", help="Stop at the first failure.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every check.")] = False,
    live: Annotated[bool, typer.Option("--live", help="Also check the running stack: health, every "
                                                     "observability document, one traced request.")] = False,
) -> None:
    """Run the Phase 6 suite: the seed's eight groups, with a grouped summary.

    Ends with the line `N passed, N failed`; exits 1 when any check fails. [bold]--live[/] adds
    contract checks against the stack that `tooloo up` started.

    Example: [bold]tooloo test -k rate_limiter[/]   or   [bold]tooloo test --live[/]
    """
    from tooloo_cli.phase6.runner import run_suite

    raise typer.Exit(run_suite(keyword=keyword, exitfirst=exitfirst, verbose=verbose,
                               live=_load(ctx) if live else None))


@app.command("bench", rich_help_panel="Quality")
def bench(
    suite: Annotated[Optional[Suite], typer.Argument(help="One suite; without it, all three and a summary.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer, shorter runs (a smoke test, not a measurement).")] = False,
    save: Annotated[Optional[Path], typer.Option("--save", help="Write the figures to this JSON file.")] = None,
    compare: Annotated[Optional[Path], typer.Option("--compare", help="Compare with a saved file; exit 1 on a "
                                                                      "regression.")] = None,
    threshold: Annotated[float, typer.Option("--threshold", min=0, help="How many % worse counts as a "
                                                                         "regression.")] = 15.0,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when a figure misses its target.")] = False,
) -> None:
    """Benchmark the stack: one suite, or all three with a summary against the targets.

    [bold]modules[/]: µs/op of the resilience modules beside the seed's Node figures.
    [bold]http[/]: load against a private stack on free ports (gateway, middleware, burst cache, sampling, memory).
    [bold]startup[/]: tooloo up to healthy, down, orphans, supervisor memory, command latency.

    Example: [bold]tooloo bench --save base.json[/], later [bold]tooloo bench --compare base.json --threshold 20[/];
    in CI on the machine the targets are for, [bold]tooloo bench --strict[/]
    """
    from tooloo_cli.bench import run_benchmarks

    if save is not None:
        _check_writable(save, "--save")  # now, not after minutes of measuring
    suites = [suite.value] if suite else [s.value for s in Suite]
    raise typer.Exit(run_benchmarks(suites, as_json=as_json, quick=quick, summary_only=suite is None, save=save,
                                    compare_with=compare, threshold=threshold, strict=strict))


def _check_writable(path: Path, option: str) -> None:
    """A usage error (exit 2) unless `path` can be written: its directory exists and accepts files."""
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a directory", param_hint=option)
    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory", param_hint=option)
    if not os.access(directory, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise typer.BadParameter(f"{path} cannot be written", param_hint=option)


def run() -> None:
    """Runs the app, turning every failure into one line and its exit code, never a traceback."""
    def run_app() -> int | None:
        # `--install-completion` or `--show-completion` alone (no shell named) is completion.py's:
        # typer cannot declare an option whose value is optional.
        code = completion.bare_option(sys.argv[1:])
        # The same name (usage, completion) under `python -m tooloo_cli`.
        return app(prog_name="tooloo") if code is None else code

    actions.guarded(run_app)
