"""`tooloo serve NAME`: one service in the foreground on uvicorn (uvloop, httptools).

    serve("budget", load_config(), port=3103)

The socket is bound here, before anything else: a taken port is reported with the pid
and program that hold it (exit 1), and "listening" is printed only once it is true.
Connections go through the guard of `protocol.py` (header size, read timeout, connection
cap). `X-Forwarded-For` is left to the services, which believe it only from
`stack.trusted_proxies`: uvicorn's own proxy-header handling is off, since it trusts
127.0.0.1 by default and would let any local client choose its address.

A service that cannot start for a reason a restart will not cure (a corrupt ledger, say)
exits 2 with one line saying what to do; the supervisor then marks it failed at once.
The access log is written in batches (access_log.py: every 4 KB or 50 ms), flushed at
shutdown. SIGTERM or Ctrl-C drains in-flight requests, runs the service's shutdown (optimizer
flushed, pool and cache closed) and exits 0: uvicorn re-raises the signal it caught once
it has shut down, so a handler of ours must be in place for that re-raise to land on.
"""

from __future__ import annotations

import gc
import logging
import resource
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from tooloo_cli.config import LoadedConfig
from tooloo_cli.errors import ToolooError
from tooloo_cli.ports import listen

if TYPE_CHECKING:
    from starlette.types import ASGIApp

# Descriptors kept free beyond the connection cap and the sibling pools: log files, databases.
DESCRIPTOR_HEADROOM = 64
# How services log (the supervisor recognises these lines as warnings to show in `status`).
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def descriptor_room(connections: int, outbound: int = 0) -> int:
    """How many connections the descriptor limit allows, raising the soft limit if it must.

    `outbound` is what the service may hold open to its siblings, kept free beside the headroom.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    headroom = DESCRIPTOR_HEADROOM + outbound
    needed = connections + headroom
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY:
        return connections
    return max(min(connections, soft - headroom), 1)


def serve(name: str, loaded: LoadedConfig, port: int | None = None,
          served: Callable[[ASGIApp], ASGIApp] | None = None) -> int:
    """Serves service `name` until SIGTERM; `served` picks what of its app is served (the bench's
    bare router: `tooloo_cli.bench.bare`), the whole app by default."""
    import uvicorn

    from tooloo_cli.services import create_app
    from tooloo_cli.services.access_log import BatchedLog
    from tooloo_cli.services.protocol import ConnectionLimits, guarded_protocol
    from tooloo_cli.services.wire import MAX_CONNECTIONS
    from tooloo_cli.stack import stack_of

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    settings = loaded.services[name]
    port = settings.port if port is None else port  # a replica is told its port
    stack = loaded.config.stack
    host = settings.bind or stack.host
    listener = listen(host, port)  # first: a taken port is refused before any file is touched
    app = create_app(name, loaded, BatchedLog(sys.stdout), port=port)
    if served is not None:
        app = served(app)
    topology = stack_of(loaded)
    sibling_replicas = len(topology.replicas(list(topology.specs[name].calls)))
    connections = descriptor_room(stack.max_connections, outbound=MAX_CONNECTIONS * sibling_replicas)
    if connections < stack.max_connections:
        logging.getLogger(f"tooloo.services.{name}").warning(
            "the descriptor limit allows %d connections, not stack.max_connections = %d",
            connections, stack.max_connections)
    limits = ConnectionLimits(stack.max_header_bytes, stack.read_timeout, connections)
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http=guarded_protocol(limits), ws="none", lifespan="on",
        proxy_headers=False, access_log=False, log_level="warning", server_header=False,
        timeout_graceful_shutdown=max(loaded.config.supervisor.grace_period - 0.5, 0.5),
    )
    server = uvicorn.Server(config)

    def stop_soon(*_: object) -> None:
        # Before uvicorn takes over the signals, a SIGTERM must still stop the server; after
        # it has shut down, this is where its re-raised signal lands (so the exit code is 0).
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_soon)
    # What the imports and the app made lives as long as the process: out of the collector's sight,
    # its full collections (which what requests keep a while, sampled traces say, brings about)
    # look at what requests made, not at the ~100k objects of Starlette, uvicorn and the modules.
    gc.freeze()
    print(f"{name} listening on http://{host}:{port}", flush=True)
    server.run(sockets=[listener])
    if not server.started and not server.should_exit:
        raise ToolooError(f"{name} did not start on {host}:{port} (see the lines above)")
    return 0
