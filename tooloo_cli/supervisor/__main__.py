"""The detached supervisor's entry point: `python -m tooloo_cli.supervisor [--config PATH] [--handover] [NAME...]`.

`tooloo up` launches it with `--handover` and writes the handover (see environment.py:
the TOOLOO_* settings and secrets of the command) to its stdin, so that its own
environment holds none of them. Without `--handover`, its own environment is the handover.

It bypasses the CLI (typer, rich) because it lives as long as the stack does, and every
megabyte of its resident memory is paid for that whole time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from tooloo_cli.config import load_config
from tooloo_cli.errors import ToolooError
from tooloo_cli.supervisor.environment import handover
from tooloo_cli.supervisor.manager import Supervisor


def _read_handover() -> dict[str, str]:
    try:
        document = json.loads(sys.stdin.read() or "{}")
    except ValueError:
        raise ToolooError("the handover on stdin is not JSON") from None
    environment = document.get("environment", {}) if isinstance(document, dict) else None
    if not isinstance(environment, dict) or not all(isinstance(v, str) for v in environment.values()):
        raise ToolooError("the handover on stdin has no environment object of strings")
    return environment


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tooloo_cli.supervisor")
    parser.add_argument("--config")
    parser.add_argument("--handover", action="store_true", help="read the command's settings and secrets from stdin")
    parser.add_argument("services", nargs="*")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        handed = _read_handover() if arguments.handover else None
        if handed is None:
            loaded = load_config(arguments.config)
            handed = handover(loaded, os.environ)["environment"]
        else:  # the launcher scrubbed this process's environment: the handover completes it
            loaded = load_config(arguments.config, env={**os.environ, **handed})
        # Plain asyncio, not uvloop: the children are spawned with a preexec hook (PR_SET_PDEATHSIG).
        asyncio.run(Supervisor(loaded, detached=True, handed=handed).run(arguments.services))
    except ToolooError as exc:
        print(f"tooloo supervisor: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
