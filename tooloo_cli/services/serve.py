"""`tooloo serve NAME`: one service in the foreground on uvicorn (uvloop, httptools).

    serve("budget", load_config(), port=3103)

SIGTERM or Ctrl-C drains in-flight requests, runs the service's shutdown (optimizer
flushed, pool and cache closed) and exits 0: uvicorn re-raises the signal it caught once
it has shut down, so a handler of ours must be in place for that re-raise to land on.
"""

from __future__ import annotations

import signal
import sys

from tooloo_cli.config import LoadedConfig
from tooloo_cli.errors import ToolooError


def serve(name: str, loaded: LoadedConfig, port: int | None = None) -> int:
    import uvicorn

    from tooloo_cli.services import create_app

    settings = loaded.services[name]
    port = settings.port if port is None else port
    settings.port = port  # siblings and /health see the port actually served
    host = loaded.config.stack.host
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # one access-log line at a time
    app = create_app(name, loaded)
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        access_log=False, log_level="warning", server_header=False,
        timeout_graceful_shutdown=max(loaded.config.supervisor.grace_period - 0.5, 0.5),
    )
    server = uvicorn.Server(config)

    def stop_soon(*_: object) -> None:
        # Before uvicorn takes over the signals, a SIGTERM must still stop the server; after
        # it has shut down, this is where its re-raised signal lands (so the exit code is 0).
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_soon)
    print(f"{name} listening on http://{host}:{port}", flush=True)
    try:
        server.run()
    except OSError as exc:
        raise ToolooError(f"{name} cannot listen on {host}:{port}: {exc.strerror}") from None
    if not server.started:
        raise ToolooError(f"{name} did not start on {host}:{port} (see the lines above)")
    return 0
