"""One service without the CLI: `python -m tooloo_cli.services [--config PATH] [--port P] NAME`.

The same `serve()` as `tooloo serve NAME`; the supervisor launches services this way
because typer and rich cost ~40 ms of CPU per process, eight times over, at every `up`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from tooloo_cli.config import BUILTIN_SERVICES, load_config
from tooloo_cli.errors import ToolooError
from tooloo_cli.parent import armed_from_environment
from tooloo_cli.services.serve import serve

if TYPE_CHECKING:
    from starlette.types import ASGIApp


def main(served: Callable[[ASGIApp], ASGIApp] | None = None) -> int:
    """The command line's service, served whole (or as much of it as `served` picks)."""
    armed_from_environment()  # dies with the supervisor that spawned it, if one did (tooloo_cli/parent.py)
    parser = argparse.ArgumentParser(prog="python -m tooloo_cli.services")
    parser.add_argument("--config")
    parser.add_argument("--port", type=int)
    parser.add_argument("name", choices=BUILTIN_SERVICES)
    arguments = parser.parse_args()
    try:
        return serve(arguments.name, load_config(arguments.config), arguments.port, served)
    except ToolooError as exc:
        print(f"tooloo serve: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
