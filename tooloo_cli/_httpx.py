"""httpx, without the command-line interface it never needs here.

    from tooloo_cli._httpx import httpx

The httpx package imports its own CLI (click, pygments, rich.syntax and more) whenever
those happen to be installed, and here they are: rich brings pygments, uvicorn brings
click. That costs ~55 ms at every start of `tooloo observe` and of each service that
calls its siblings, for a module tooloo never uses. A `None` in sys.modules makes that one
import fail, and httpx falls back to the stub it keeps for installs without the CLI.
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402  (after the line above, by design)

__all__ = ["httpx"]
