"""The detached supervisor's entry point: `python -m tooloo_cli.supervisor [--config PATH] [NAME...]`.

`tooloo up` launches it. It bypasses the CLI (typer, rich) because it lives as long as the
stack does, and every megabyte of its resident memory is paid for that whole time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from tooloo_cli.config import load_config
from tooloo_cli.errors import ToolooError
from tooloo_cli.supervisor.manager import Supervisor


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tooloo_cli.supervisor")
    parser.add_argument("--config")
    parser.add_argument("services", nargs="*")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        loaded = load_config(arguments.config)
    except ToolooError as exc:
        print(f"tooloo supervisor: {exc}", file=sys.stderr)
        return exc.exit_code
    # Plain asyncio, not uvloop: the children are spawned with a preexec hook (PR_SET_PDEATHSIG).
    try:
        asyncio.run(Supervisor(loaded, detached=True).run(arguments.services))
    except ToolooError as exc:
        print(f"tooloo supervisor: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
