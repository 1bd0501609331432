"""`tooloo observe`: every service's observability document, polled concurrently, as tables.

    exit_code = observe(load_config(), ["web", "budget"], console)             # one shot
    observe(loaded, [], console, watch=True, interval=1.0)                      # live, until Ctrl-C

    poll.py        the concurrent poll (the loopback client, a thread a target, short timeouts); failure is data
    render.py      the tables: services, tracing, rate limiting, caches, circuit breakers, pools
    dashboard.py   --watch: redrawn in place, with throughput sparklines and recent errors

A one-shot observe exits 1 when any polled service is not up (for scripts and CI).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from tooloo_cli.config import LoadedConfig


def observe(loaded: LoadedConfig, names: list[str], console: Console, *, watch: bool = False,
            interval: float | None = None, timeout: float | None = None, as_json: bool = False) -> int:
    from tooloo_cli.observe.poll import poll, targets_of

    settings = loaded.config.observe
    interval = settings.interval if interval is None else interval
    timeout = settings.timeout if timeout is None else timeout
    targets = targets_of(loaded, names)
    if watch:
        from tooloo_cli.observe.dashboard import watch as run_dashboard

        try:
            run_dashboard(targets, interval, timeout, console)
        except KeyboardInterrupt:
            return 130  # Ctrl-C, as it ends every command (`q` ends the dashboard with 0)
        return 0

    observations = poll(targets, timeout)
    if as_json:
        print(json.dumps({"polledAt": time.time(), "up": sum(o.up for o in observations),
                          "total": sum(o.observable for o in observations),
                          "services": {o.name: o.to_dict() for o in observations}}, indent=2))
    else:
        from tooloo_cli.observe.render import tables

        console.print(*tables(observations))
    return 0 if all(o.up for o in observations if o.observable) else 1
