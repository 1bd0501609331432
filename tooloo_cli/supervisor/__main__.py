"""The detached supervisor's entry point: `python -m tooloo_cli.supervisor [--config PATH] [--handover] [NAME...]`.

`tooloo up` launches it with `--handover` and writes the handover (see environment.py:
the TOOLOO_* settings and secrets of the command) to its stdin, so that its own
environment holds none of them. Without `--handover`, its own environment is the handover.

Or `tooloo up` starts it as a standby (`--standby`, see standby.py) before it has read
its configuration, and writes its orders to stdin once it has:

    {"config": "/srv/tooloo.toml" | null, "cwd": "/srv", "log": "/srv/.tooloo/logs/supervisor.log",
     "services": ["web", ...], "environment": {...the handover's...}, "early": [...]}

It reads them with nothing imported but what reading takes, spawns the replicas of
`early` at once (early.py), and only then imports the event loop, the configuration and
the manager, while those replicas start; empty input means nothing to run (exit 0).

It bypasses the CLI (typer, rich) because it lives as long as the stack does, and every
megabyte of its resident memory is paid for that whole time.
"""

from __future__ import annotations

import sys

# asyncio imports ssl (~10 ms) for the TLS transports the supervisor never makes (its probes
# and control socket are plain): a None in sys.modules makes that import fail, and asyncio
# goes without, as it does on a Python built without ssl. The services are processes of
# their own, untouched by this.
sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import argparse  # noqa: E402  (after the line above, by design)
import json  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

from tooloo_cli.errors import ToolooError  # noqa: E402
from tooloo_cli.supervisor.early import EarlySpawn, end_unclaimed, spawn_early  # noqa: E402


def _read_handover() -> dict[str, str]:
    try:
        document = json.loads(sys.stdin.read() or "{}")
    except ValueError:
        raise ToolooError("the handover on stdin is not JSON") from None
    environment = document.get("environment", {}) if isinstance(document, dict) else None
    if not isinstance(environment, dict) or not all(isinstance(v, str) for v in environment.values()):
        raise ToolooError("the handover on stdin has no environment object of strings")
    return environment


def _read_orders() -> dict[str, Any] | None:
    """A standby's orders from stdin (None: nothing to run); ToolooError when they cannot be followed."""
    text = sys.stdin.read()
    if not text.strip():
        return None
    try:
        orders = json.loads(text)
    except ValueError:
        raise ToolooError("the orders on stdin are not JSON") from None
    if not isinstance(orders, dict) or not isinstance(orders.get("cwd"), str) \
            or not isinstance(orders.get("log"), str) or not isinstance(orders.get("services"), list) \
            or not isinstance(orders.get("environment"), dict) \
            or not isinstance(orders.get("config"), (str, type(None))) \
            or not all(isinstance(v, str) for v in orders["environment"].values()):
        raise ToolooError("the orders on stdin lack a cwd, a log, services or an environment of strings")
    return orders


def _log_to(path: str) -> None:
    """Standard output and error to the supervisor's log from now on (a standby's went nowhere)."""
    log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            os.dup2(log, stream.fileno())
    finally:
        os.close(log)


def main() -> int:
    # A help formatter of a set width: the default one imports shutil (and bz2, lzma: ~4 ms) to ask the
    # terminal's, for a process that has no terminal.
    parser = argparse.ArgumentParser(prog="python -m tooloo_cli.supervisor",
                                     formatter_class=lambda prog: argparse.HelpFormatter(prog, width=100))
    parser.add_argument("--config")
    parser.add_argument("--handover", action="store_true", help="read the command's settings and secrets from stdin")
    parser.add_argument("--standby", action="store_true", help="wait for orders on stdin (see standby.py)")
    parser.add_argument("services", nargs="*")
    arguments = parser.parse_args()
    orders: dict[str, Any] | None = None
    early: dict[str, EarlySpawn] = {}
    if arguments.standby:
        try:
            orders = _read_orders()
            if orders is None:
                return 0
            _log_to(orders["log"])
            os.chdir(orders["cwd"])
        except (ToolooError, OSError):  # nowhere to say it: the command sees it exit, and launches one that can
            return 1
        arguments.config, arguments.services = orders["config"], [str(name) for name in orders["services"]]
        early = spawn_early(orders.get("early"))
    try:
        return _supervise(arguments, orders, early)
    finally:
        end_unclaimed(early)  # whatever the supervisor did not adopt: it could not start, say


def _supervise(arguments: argparse.Namespace, orders: dict[str, Any] | None, early: dict[str, EarlySpawn]) -> int:
    import asyncio
    import logging

    from tooloo_cli.config import load_config
    from tooloo_cli.supervisor.environment import handover
    from tooloo_cli.supervisor.manager import Supervisor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        handed = orders["environment"] if orders is not None else _read_handover() if arguments.handover else None
        if handed is None:
            loaded = load_config(arguments.config)
            handed = handover(loaded, os.environ)["environment"]
        else:  # the launcher scrubbed this process's environment: the handover completes it
            loaded = load_config(arguments.config, env={**os.environ, **handed})
        # Plain asyncio, not uvloop: the children are spawned with a preexec hook (PR_SET_PDEATHSIG).
        asyncio.run(Supervisor(loaded, detached=True, handed=handed, early=early).run(arguments.services))
    except ToolooError as exc:
        print(f"tooloo supervisor: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    code = main()
    # Everything is stopped, closed and removed by now (Supervisor.run's finally): the interpreter's
    # teardown would only keep the process around, and `tooloo down` waits for it to be gone.
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
