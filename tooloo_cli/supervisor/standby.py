"""A supervisor started before `tooloo up` has read its configuration, waiting to be told what to run.

    standby = Standby.start(Path("ops/tooloo.toml"))   # at once, before the configuration is imported
    ...                                                 # the command reads tooloo.toml, checks ports
    process = standby.go(document)                      # this is what to run: it runs it
    standby.cancel()                                    # or nothing to run: ended, having done nothing

Why: `up` is two interpreters in a row, the command's and the detached supervisor's, and
each spends most of its first ~70 ms importing (the configuration, asyncio). Started
first, the supervisor's interpreter starts while the command reads the configuration, and
its orders name what to spawn at once (early.py): the services are spawned the moment the
command has checked their ports, ~0.12 s after `up` began rather than ~0.3 s, and the
supervisor imports what it runs on while they start.

A standby knows nothing yet, so it is started with what a process needs to run and what
the supervisor passes on to its services, and nothing else (`supervisor_environment`):
no TOOLOO_* setting and no secret can be in it, whatever the configuration names as one.
Its output goes nowhere until it is told its log. It reads its orders from stdin, a JSON
document (see supervisor/__main__.py), and only then imports what it runs on; until then
it has touched nothing, so a command with nothing for it to run ends it (`cancel`), and a
command that dies first closes the pipe: nothing to run, and it exits 0.

Kept free of the configuration's imports: it would defeat the purpose.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SUPERVISOR_MODULE = "tooloo_cli.supervisor"

# What every service's process finds of the supervisor's environment (and LC_* besides).
PASSED_ON = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
                       "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"})
# What a service that calls a remote API also gets: how to reach it from here, and whom to trust.
NETWORK = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                     "all_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"})
# What the supervisor's own interpreter may need to start and behave as the user's would, and where it
# signs in for `tooloo ls` (registry.py).
RUNTIME = frozenset({"LD_LIBRARY_PATH", "XDG_STATE_HOME"})


def supervisor_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The detached supervisor's own environment: what it passes on to its services (PASSED_ON, LC_*,
    NETWORK), what its interpreter reads (PYTHON*, LD_LIBRARY_PATH), and nothing else."""
    return {key: value for key, value in environ.items()
            if key in PASSED_ON or key in NETWORK or key in RUNTIME or key.startswith(("LC_", "PYTHON"))}


class Standby:
    def __init__(self, process: Any) -> None:  # a subprocess.Popen
        self.process = process
        self.pending = True  # neither told what to run nor ended yet

    @classmethod
    def start(cls, config: Path | None) -> Standby | None:
        """A supervisor importing itself in the background, or None if one cannot be started now (the
        command then launches one the ordinary way). `config` only names it for `ps`."""
        import subprocess

        command = [sys.executable, "-m", SUPERVISOR_MODULE, "--standby"]
        if config is not None:
            command += ["--config", str(config)]
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True,
                                       env=supervisor_environment(os.environ))
        except OSError:
            return None
        return cls(process)

    def go(self, document: dict[str, Any]) -> Any | None:
        """Hands it what to run; its process, or None when it has died meanwhile (launch another)."""
        self.pending = False
        stdin = self.process.stdin
        try:
            if self.process.poll() is not None or stdin is None:
                return None
            stdin.write(json.dumps(document).encode())
            stdin.close()
        except (BrokenPipeError, OSError):
            return None
        return self.process

    def cancel(self) -> None:
        """Nothing to run: it is ended (SIGKILL, by its pid) and reaped. It has done nothing yet, not even
        read its input: no file, lock or socket of its can be left."""
        if not self.pending:
            return
        self.pending = False
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
